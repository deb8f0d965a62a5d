"""The guard around every operation: complete audit records, threshold floors, review leads."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from regard.accountability.guard import HEADER_EFFECTIVE_THRESHOLD, HEADER_REVIEW
from regard.accountability.policy import PolicyStore
from regard.accountability.review import CONFIRMED, PENDING, ReviewRefused
from regard.errors import AccessDenied, ResourceNotFound
from regard.face.engine import Engine
from regard.scoring.versions import face_model_version
from regard.store.base import NewFace
from regard.types import Box

from .helpers import (
    ADMIN,
    CASE,
    CLERK,
    INVESTIGATOR,
    PROVENANCE,
    VERIFIER_1,
    VERIFIER_2,
    Endpoint,
    endpoint,
    open_gate,
)

REQUIRED = ("seq", "time", "request_id", "access_key_id", "principal", "operation", "outcome", "parameters")


@pytest.fixture
def ep(tmp_path: Path, engine: Engine, fr_images: Path) -> Iterator[Endpoint]:
    e = endpoint(tmp_path, engine)
    open_gate(tmp_path, ["*"], fr_images)  # identification needs an approved assessment
    yield e
    e.service.close()


def test_every_operation_produces_a_complete_record(ep: Endpoint, photos: dict[str, bytes]) -> None:
    c = "people"
    calls: list[tuple[str, dict[str, object]]] = []

    def call(op: str, **params: object) -> dict[str, object]:
        calls.append((op, params))
        return ep.call(op, **params).result

    arn = call("CreateCollection", CollectionId=c)["CollectionArn"]
    ids = {}
    for name in ("obama", "obama2", "biden"):
        r = call(
            "IndexFaces", CollectionId=c, Image={"Bytes": photos[name]}, ExternalImageId=name, **PROVENANCE
        )
        ids[name] = r["FaceRecords"][0]["Face"]["FaceId"]  # type: ignore[index]
    call("DescribeCollection", CollectionId=c)
    call("ListCollections")
    call("ListFaces", CollectionId=c)
    found = call("SearchFacesByImage", CollectionId=c, Image={"Bytes": photos["obama3"]}, **CASE)
    call("SearchFaces", CollectionId=c, FaceId=ids["obama"])
    call("DetectFaces", Image={"Bytes": photos["biden"]})
    call("CompareFaces", SourceImage={"Bytes": photos["obama"]}, TargetImage={"Bytes": photos["obama2"]})
    call("CreateUser", CollectionId=c, UserId="barack")
    call("AssociateFaces", CollectionId=c, UserId="barack", FaceIds=[ids["obama"], ids["obama2"]])
    call("SearchUsers", CollectionId=c, FaceId=ids["obama"])
    call("SearchUsersByImage", CollectionId=c, Image={"Bytes": photos["obama3"]})
    call("ListUsers", CollectionId=c)
    call("DisassociateFaces", CollectionId=c, UserId="barack", FaceIds=[ids["obama2"]])
    call("DeleteUser", CollectionId=c, UserId="barack")
    call("TagResource", ResourceArn=arn, Tags={"owner": "tests"})
    call("ListTagsForResource", ResourceArn=arn)
    call("UntagResource", ResourceArn=arn, TagKeys=["owner"])
    call("DeleteFaces", CollectionId=c, FaceIds=[ids["biden"]])
    with pytest.raises(ResourceNotFound):
        call("SearchFaces", CollectionId=c, FaceId=str(uuid.uuid4()))
    call("DeleteCollection", CollectionId=c)

    # state-changing operations also write an intent record before they run (test_audit_intent.py)
    records = [r for r in ep.guard.audit.records() if r["kind"] != "intent"]
    assert [r["operation"] for r in records] == [op for op, _ in calls]
    assert ep.guard.audit.verify().ok
    for rec, (op, params) in zip(records, calls, strict=True):
        for key in REQUIRED:
            assert key in rec, (op, key)
        assert rec["access_key_id"] == ADMIN.access_key_id and rec["principal"] == ADMIN.principal
        if "CollectionId" in params or "ResourceArn" in params:
            assert rec["collection"] == c
            if op not in ("CreateCollection",) and rec["outcome"] == "success":
                assert {"content_version", "content_hash"} <= set(rec["collection_state"]["before"])
        image = params.get("Image") or params.get("SourceImage")
        if isinstance(image, dict):
            assert rec["probe_sha256"] == hashlib.sha256(image["Bytes"]).hexdigest()
    by_op = {r["operation"]: r for r in records}
    search = by_op["SearchFacesByImage"]
    assert search["purpose"] == CASE["purpose"] and search["case_reference"] == CASE["case_reference"]
    assert {m["face_id"] for m in search["results"]["matches"]} == {
        m["Face"]["FaceId"]  # type: ignore[index]
        for m in found["FaceMatches"]  # type: ignore[attr-defined]
    }
    assert all(0 < m["fmr"] < 1e-3 and m["similarity"] >= 80 for m in search["results"]["matches"])
    assert search["threshold"]["effective"] == 80.0
    assert by_op["IndexFaces"]["parameters"]["legal_basis"] == PROVENANCE["legal_basis"]
    assert (
        by_op["IndexFaces"]["collection_state"]["after"]["content_version"]
        > (by_op["IndexFaces"]["collection_state"]["before"]["content_version"])
    )
    assert by_op["DeleteFaces"]["results"]["deleted_face_ids"] == [ids["biden"]]
    # Every biometric record names the similarity scale: model, normalizer and table (hashes).
    scoring = ep.service.scorer.identity()
    for op in ("SearchFacesByImage", "CompareFaces", "SearchUsers", "IndexFaces"):
        assert by_op[op]["scoring"] == {"model": ep.service.face_model.key, **scoring}, op
    assert "scoring" not in by_op["ListUsers"] and "scoring" not in by_op["TagResource"]
    assert found["FaceModelVersion"] == face_model_version(ep.service.face_model, ep.service.scorer)
    failed = [r for r in records if r["outcome"] == "error"]
    assert len(failed) == 1 and failed[0]["error"]["code"] == "ResourceNotFoundException"
    # no template and no image bytes anywhere in the log
    log_bytes = ep.guard.audit.path.read_bytes()
    for name in ("obama", "obama2", "biden"):
        assert photos[name][:64] not in log_bytes


def _gallery(ep: Endpoint, collection: str, n: int) -> None:
    """A collection of ``n`` synthetic templates (far from any real face) plus obama.jpg."""
    ep.service.create_collection(collection)
    rng = np.random.default_rng(5)
    faces = [
        NewFace(str(uuid.uuid4()), str(uuid.uuid4()), f"synthetic-{i}", Box(0.1, 0.1, 0.5, 0.5), 99.0, v)
        for i, v in enumerate((rng.standard_normal((n, 128)) * 0.2).astype(np.float32))
    ]
    ep.service.add_templates(collection, faces)


def test_search_below_the_floor_is_refused_or_raised(ep: Endpoint, photos: dict[str, bytes]) -> None:
    _gallery(ep, "watchlist", 60)
    indexed = ep.call(
        "IndexFaces",
        INVESTIGATOR,
        CollectionId="watchlist",
        Image={"Bytes": photos["obama"]},
        **PROVENANCE,
        **CASE,
    )
    obama_id = indexed.result["FaceRecords"][0]["Face"]["FaceId"]
    probe = {"Bytes": photos["obama2"]}
    # purpose and case reference are required in the identification profile
    with pytest.raises(AccessDenied, match="purpose"):
        ep.call("SearchFacesByImage", INVESTIGATOR, CollectionId="watchlist", Image=probe)
    # 61 faces, FPIR 1e-3 -> at most 1.6e-5 per comparison -> similarity floor ~95.9 > 80: refused
    with pytest.raises(AccessDenied, match="FaceMatchThreshold"):
        ep.call(
            "SearchFacesByImage",
            INVESTIGATOR,
            CollectionId="watchlist",
            Image=probe,
            FaceMatchThreshold=80,
            **CASE,
        )
    denied = list(ep.guard.audit.records())[-1]
    assert denied["outcome"] == "error" and denied["error"]["code"] == "AccessDeniedException"
    assert denied["parameters"]["FaceMatchThreshold"] == 80
    # the same request in the verification profile is refused outright (no 1:N there)
    with pytest.raises(AccessDenied):
        ep.call("SearchFacesByImage", CLERK, CollectionId="watchlist", Image=probe, **CASE)

    # a profile limited to some collections sees only those
    PolicyStore(ep.data_dir).set("identification", "collections", "watch*")
    ep.service.create_collection("other")
    listed = ep.call("ListCollections", INVESTIGATOR).result
    assert listed["CollectionIds"] == ["watchlist"] and len(listed["FaceModelVersions"]) == 1
    with pytest.raises(AccessDenied, match="collection other"):
        ep.call("DescribeCollection", INVESTIGATOR, CollectionId="other")

    PolicyStore(ep.data_dir).set("identification", "on_low_threshold", "raise")
    out = ep.call(
        "SearchFacesByImage",
        INVESTIGATOR,
        CollectionId="watchlist",
        Image=probe,
        FaceMatchThreshold=80,
        **CASE,
    )
    floor = 1e-3 / 61
    effective = float(out.headers[HEADER_EFFECTIVE_THRESHOLD])
    assert effective > 95
    assert out.record["threshold"]["raised"] and out.record["threshold"]["effective"] == pytest.approx(
        effective
    )
    assert out.record["threshold"]["floor_fmr"] == pytest.approx(floor)
    matches = out.result["FaceMatches"]
    assert matches, "obama2 should find obama.jpg at the raised threshold"
    assert all(m["Similarity"] >= effective - 1e-6 and m["EstimatedFalseMatchRate"] <= floor for m in matches)
    assert [m["Face"]["FaceId"] for m in matches] == [obama_id]


def test_identification_candidates_are_leads_that_need_two_verifiers(
    ep: Endpoint, photos: dict[str, bytes]
) -> None:
    ep.call("CreateCollection", CollectionId="cases")
    ep.call(
        "IndexFaces",
        INVESTIGATOR,
        CollectionId="cases",
        Image={"Bytes": photos["obama"]},
        **PROVENANCE,
        **CASE,
    )
    with pytest.raises(AccessDenied, match="provenance"):
        ep.call("IndexFaces", INVESTIGATOR, CollectionId="cases", Image={"Bytes": photos["biden"]}, **CASE)
    out = ep.call(
        "SearchFacesByImage", INVESTIGATOR, CollectionId="cases", Image={"Bytes": photos["obama2"]}, **CASE
    )
    assert out.headers[HEADER_REVIEW] == PENDING
    (match,) = out.result["FaceMatches"]
    assert match["RegardReviewStatus"] == PENDING
    lead = match["RegardLeadId"]
    assert out.record["results"]["matches"][0]["lead_id"] == lead
    info = out.record["request_id"]
    from regard.accountability.guard import RequestInfo
    from regard.accountability.reviewing import ReviewDesk

    def decide(caller: object, decision: str = "confirm") -> dict[str, object]:
        desk = ReviewDesk(ep.guard.audit, ep.guard.review)
        return desk.decide(lead, decision, caller, RequestInfo(request_id=f"{info}-r"))  # type: ignore[arg-type]

    with pytest.raises(ReviewRefused):
        decide(INVESTIGATOR)  # the requester
    assert decide(VERIFIER_1)["Status"] == PENDING  # one verifier is not enough
    with pytest.raises(ReviewRefused):
        decide(VERIFIER_1)  # nor is the same one twice
    assert decide(VERIFIER_2)["Status"] == CONFIRMED
    reviews = [r for r in ep.guard.audit.records() if r["kind"] == "review"]
    assert [(r["principal"], r["outcome"]) for r in reviews] == [
        ("investigator", "error"),
        ("vera", "success"),
        ("vera", "error"),
        ("victor", "success"),
    ]
    assert reviews[-1]["results"]["lead_status"] == CONFIRMED
    assert reviews[-1]["case_reference"] == CASE["case_reference"]


def _at_fmr(ep: Endpoint, probe: np.ndarray, fmr: float) -> np.ndarray:
    """A template whose normalized score against ``probe`` has exactly the estimated FMR ``fmr``."""
    scorer = ep.service.scorer
    direction = np.random.default_rng(7).standard_normal(probe.shape[0])
    direction /= np.linalg.norm(direction)
    lo, hi = 0.0, 1.0  # distance along the direction; the estimated FMR grows with it
    for _ in range(60):
        mid = (lo + hi) / 2
        if scorer.compare(probe, probe + mid * direction).fmr < fmr:
            lo = mid
        else:
            hi = mid
    return (probe + lo * direction).astype(np.float32)


def test_floor_drops_matches_where_the_similarity_scale_saturates(ep: Endpoint) -> None:
    """With a large gallery the identification floor is an FMR below similarity 100's (1e-5): the
    threshold cannot be raised far enough, so the guard must drop matches by their estimated FMR."""
    scorer = ep.service.scorer
    assert scorer.normalizer is not None
    # A probe at the centre of the cluster with the largest offset: its pairs can reach low FMRs.
    probe = scorer.normalizer.centroids[int(np.argmax(scorer.normalizer.offsets))].astype(np.float32)
    _gallery(ep, "crowd", 400)
    n = 403
    floor = 1e-3 / n  # 2.5e-6 per comparison, under similarity 100's 1e-5
    near, too_far = _at_fmr(ep, probe, floor / 3), _at_fmr(ep, probe, 4 * floor)
    assert scorer.compare(probe, near).similarity == scorer.compare(probe, too_far).similarity == 100.0
    made = ep.service.add_templates(
        "crowd",
        [
            NewFace(str(uuid.uuid4()), str(uuid.uuid4()), name, Box(0.1, 0.1, 0.5, 0.5), 99.0, v)
            for name, v in (("probe", probe), ("near", near), ("too-far", too_far))
        ],
    )
    ids = {r.external_image_id: r.face_id for r in made}
    PolicyStore(ep.data_dir).set("identification", "on_low_threshold", "raise")
    out = ep.call(
        "SearchFaces", INVESTIGATOR, CollectionId="crowd", FaceId=ids["probe"], FaceMatchThreshold=80, **CASE
    )
    assert out.record["threshold"]["floor_fmr"] == pytest.approx(floor)
    assert float(out.headers[HEADER_EFFECTIVE_THRESHOLD]) == pytest.approx(100.0)
    # Both match at similarity 100; only the one under the floor's FMR is kept.
    assert [m["Face"]["FaceId"] for m in out.result["FaceMatches"]] == [ids["near"]]
    assert out.record["threshold"]["dropped_above_floor"] == 1
    assert [m["face_id"] for m in out.record["results"]["matches"]] == [ids["near"]]
