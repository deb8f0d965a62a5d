"""Guarantees the mutation check (scripts/mutation_check.py) found no test for.

Each test names the mutant(s) it kills. Guard floors, audit verification and erasure,
with real files in tmp_path (and the real service where a collection is needed).
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from regard.accountability.audit import GENESIS, AuditLog, canonical, record_hash
from regard.accountability.erasure import erase
from regard.accountability.guard import HEADER_THRESHOLD_FMR, Guard, Guarded, RequestInfo
from regard.accountability.policy import PolicyStore
from regard.errors import AccessDenied
from regard.face.engine import Engine
from regard.scoring.calibrate import fmr_from_similarity, similarity_from_fmr
from regard.service import CompareFacesResult, FaceDetail, SearchUsersResult, Service
from regard.store.base import MAX_FACES_PER_USER, NewFace
from regard.types import Box, Flag, Pose, Quality

from .helpers import CASE, CLERK, INVESTIGATOR, open_gate

#: A CompareFaces result without matches (the guard reads only its matches).
_DETAIL = FaceDetail(
    Box(0.1, 0.1, 0.5, 0.5), 99.0, {}, Pose(0, 0, 0), Quality(50, 50), Flag(True, 99), Flag(False, 99)
)
NO_COMPARE_MATCHES = CompareFacesResult(_DETAIL, [], [])
NO_USER_MATCHES = SearchUsersResult([], "model")


def _run(
    guard: Guard,
    operation: str,
    params: dict[str, Any],
    caller: Any,
    result: object = None,
    info: dict[str, str] | None = None,
) -> tuple[Guarded[Any], list[dict[str, Any]]]:
    """Run ``operation`` through the guard with a typed call that answers ``result``; returns its
    outcome and the parameters the operation saw."""
    seen: list[dict[str, Any]] = []

    def call(p: dict[str, Any]) -> object:
        seen.append(dict(p))
        return result

    out = guard.run(
        operation, params, caller, RequestInfo(request_id=str(uuid.uuid4()), **(info or {})), call
    )
    return out, seen


# -- guard: threshold floors ----------------------------------------------------------------------


def test_raised_threshold_is_what_the_operation_receives(tmp_path: Path) -> None:
    """Kills guard-raise-not-applied: in a 'raise' profile the operation runs at the floor, not
    merely the record and the header saying so."""
    PolicyStore(tmp_path).set("verification", "on_low_threshold", "raise")
    guard = Guard(tmp_path)
    out, seen = _run(guard, "CompareFaces", {"SimilarityThreshold": 50.0}, CLERK, NO_COMPARE_MATCHES)
    floor = similarity_from_fmr(1e-4)  # the verification profile's max_fmr: similarity 80
    assert out.record["threshold"]["raised"] and out.record["threshold"]["effective"] == pytest.approx(floor)
    assert [p["SimilarityThreshold"] for p in seen] == [pytest.approx(floor)]


def test_threshold_fmr_header_is_the_stricter_of_floor_and_request(tmp_path: Path) -> None:
    """Kills guard-threshold-fmr-max: a threshold above the floor is reported at its own FMR."""
    guard = Guard(tmp_path)
    out, _ = _run(guard, "CompareFaces", {"SimilarityThreshold": 90.0}, CLERK, NO_COMPARE_MATCHES)
    own = fmr_from_similarity(90.0)  # 3.2e-5, stricter than the floor's 1e-4
    assert float(out.headers[HEADER_THRESHOLD_FMR]) == pytest.approx(own, rel=1e-5)
    assert out.record["threshold"]["effective_fmr"] == pytest.approx(own)
    assert out.record["threshold"]["floor_fmr"] == pytest.approx(1e-4)


def test_compare_faces_floor_ignores_the_fpir(tmp_path: Path) -> None:
    """Kills policy-fpir-for-compare: max_fpir bounds 1:N searches; a 1:1 comparison sees max_fmr
    alone, even in a profile whose FPIR is stricter than its FMR."""
    policies = PolicyStore(tmp_path)
    policies.set("identification", "max_fpir", "1e-5")
    profile = policies.load().profile("identification")
    assert profile.floor_fmr("CompareFaces", None) == profile.max_fmr == 1e-4
    assert profile.floor_fmr("SearchFacesByImage", 1) == pytest.approx(1e-5)
    out, seen = _run(
        Guard(tmp_path),
        "CompareFaces",
        {"SimilarityThreshold": 85.0},
        INVESTIGATOR,
        NO_COMPARE_MATCHES,
        info=CASE,
    )
    assert out.record["threshold"]["floor_fmr"] == 1e-4 and seen[0]["SimilarityThreshold"] == 85.0


def _synthetic(n: int, external_image_id: Callable[[int], str | None], seed: int = 3) -> list[NewFace]:
    rng = np.random.default_rng(seed)
    vectors = (rng.standard_normal((n, 128)) * 0.2).astype(np.float32)
    return [
        NewFace(str(uuid.uuid4()), str(uuid.uuid4()), external_image_id(i), Box(0.1, 0.1, 0.5, 0.5), 99.0, v)
        for i, v in enumerate(vectors)
    ]


@pytest.fixture
def service(tmp_path: Path, engine: Engine) -> Iterator[Service]:
    s = Service.open(tmp_path, engine=engine)
    yield s
    s.close()


def test_search_users_floor_counts_users_not_faces(tmp_path: Path, service: Service, fr_images: Path) -> None:
    """Kills guard-gallery-faces-for-users: a user search's gallery is the collection's users.

    40 faces, 12 users: the per-comparison floor is FPIR 1e-3 / 12 (similarity 81.6), not
    1e-3 / 40 (similarity 92): a UserMatchThreshold of 85 is allowed."""
    service.create_collection("crowd")
    faces = service.add_templates("crowd", _synthetic(40, lambda i: f"p{i}"))
    for i in range(12):
        service.create_user("crowd", f"user-{i}")
    guard = Guard(tmp_path, service_factory=lambda: service)
    open_gate(tmp_path, ["crowd"], fr_images)
    params = {"CollectionId": "crowd", "FaceId": faces[0].face_id, "UserMatchThreshold": 85.0}
    out, seen = _run(guard, "SearchUsers", params, INVESTIGATOR, NO_USER_MATCHES, info=CASE)
    assert out.record["threshold"]["gallery_size"] == 12
    assert out.record["threshold"]["floor_fmr"] == pytest.approx(1e-3 / 12)
    assert seen[0]["UserMatchThreshold"] == 85.0
    # the same threshold for a face search over the 40 faces is below that floor
    with pytest.raises(AccessDenied, match="FaceMatchThreshold"):
        _run(
            guard,
            "SearchFaces",
            {"CollectionId": "crowd", "FaceId": faces[0].face_id, "FaceMatchThreshold": 85.0},
            INVESTIGATOR,
            info=CASE,
        )


# -- audit log: durability and verification -------------------------------------------------------


def _event(i: int) -> dict[str, Any]:
    return {"kind": "admin", "operation": "CreateCollection", "principal": "alice", "request_id": f"r{i}"}


def _lines(log: AuditLog) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.path.read_text(encoding="utf-8").splitlines()]


def _write(log: AuditLog, records: list[dict[str, Any]]) -> None:
    log.path.write_text("".join(canonical(r) + "\n" for r in records), encoding="utf-8")


def _rehash(rec: dict[str, Any]) -> None:
    rec["hash"] = record_hash(rec)


def test_rehashed_edit_is_caught_at_the_next_record(tmp_path: Path) -> None:
    """Kills audit-verify-no-link and audit-hash-skips-prev.

    Whoever edits a record can recompute its hash; the next record still names the old hash
    (caught by the link check), and re-linking that record changes its content, which its hash
    covers (caught by the hash check). Only rewriting every record up to the head goes through,
    and that changes the head hash that ``regard audit head`` hands out to be kept elsewhere."""
    log = AuditLog(tmp_path)
    for i in range(4):
        log.append(_event(i))
    original = _lines(log)
    head = log.verify().head_hash

    edited = [dict(r) for r in original]
    edited[1]["principal"] = "mallory"
    _rehash(edited[1])
    _write(log, edited)
    result = log.verify()
    assert not result.ok and result.broken_seq == 3 and "prev_hash" in (result.reason or "")

    edited[2]["prev_hash"] = edited[1]["hash"]  # re-linked, not re-hashed
    _write(log, edited)
    result = log.verify()
    assert not result.ok and result.broken_seq == 3 and "hash does not match" in (result.reason or "")

    for prev, rec in itertools.pairwise(edited[1:]):  # the whole suffix rewritten
        rec["prev_hash"] = prev["hash"]
        _rehash(rec)
    _write(log, edited)
    result = log.verify()
    assert result.ok and result.head_hash != head


def test_a_gap_in_seq_fails_verification_even_when_the_links_hold(tmp_path: Path) -> None:
    """Kills audit-verify-no-seq: seq runs 1, 2, 3... without gaps or repeats, checked on its own."""
    log = AuditLog(tmp_path)
    records: list[dict[str, Any]] = []
    prev = GENESIS
    for seq in (1, 2, 4):
        rec = {**_event(seq), "seq": seq, "time": "2026-01-01T00:00:00.000000Z", "prev_hash": prev}
        _rehash(rec)
        records.append(rec)
        prev = rec["hash"]
    _write(log, records)
    result = log.verify()
    assert not result.ok and result.broken_seq == 3 and result.reason == "seq is 4, expected 3"
    records[2]["seq"] = 2
    _rehash(records[2])
    _write(log, records)
    assert log.verify().reason == "seq is 2, expected 3"
    records[2]["seq"] = 3
    _rehash(records[2])
    _write(log, records)
    assert log.verify().ok


# -- erasure --------------------------------------------------------------------------------------


def test_erasure_without_a_collection_reaches_every_collection(tmp_path: Path, service: Service) -> None:
    """Kills erase-first-collection-only: no collection named means all of them."""
    names = ("alpha", "beta", "gamma")
    subject: dict[str, set[str]] = {}
    for n, name in enumerate(names):
        service.create_collection(name)
        made = service.add_templates(
            name, _synthetic(6, lambda i: "subject-9" if i < 2 else f"other-{i}", seed=n)
        )
        subject[name] = {f.face_id for f in made if f.external_image_id == "subject-9"}
    audit = AuditLog(tmp_path)
    report = erase(service, audit, actor="dpo", external_image_id="subject-9")
    assert report.collections == list(names)
    assert sorted(report.face_ids) == sorted(set().union(*subject.values()))
    for name in names:
        left = service.list_faces(name).faces
        assert len(left) == 4 and all(f.external_image_id != "subject-9" for f in left)


def test_erasing_a_user_with_more_faces_than_one_chunk(tmp_path: Path, service: Service) -> None:
    """Kills erase-chunk-off-by-one: a user holding the most faces a user may hold (100, one
    DisassociateFaces call's worth) loses every one of them, the last included."""
    service.create_collection("staff")
    base = np.random.default_rng(8).standard_normal(128).astype(np.float32) * 0.05
    faces = [
        NewFace(str(uuid.uuid4()), str(uuid.uuid4()), "subject-5", Box(0.1, 0.1, 0.5, 0.5), 99.0, base)
        for _ in range(MAX_FACES_PER_USER)
    ]
    ids = [f.face_id for f in service.add_templates("staff", faces)]
    service.create_user("staff", "u5")
    done = service.associate_faces("staff", "u5", ids, user_match_threshold=0)
    assert len(done.associated_faces) == MAX_FACES_PER_USER
    report = erase(service, AuditLog(tmp_path), actor="dpo", external_image_id="subject-5")
    assert sorted(report.face_ids) == sorted(ids)
    assert service.list_faces("staff").faces == []
