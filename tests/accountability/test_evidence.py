"""Evidence for review: which face crops the guard keeps, for how long, and that deleting and
erasing take them out of every file (real engine, service, guard and encrypted SQLite store)."""

from __future__ import annotations

import hashlib
import io
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from PIL import Image

from regard.accountability.erasure import erase, subject_access
from regard.accountability.evidence import FILE_NAME, MAX_SIDE, EvidenceStore
from regard.accountability.guard import Guard, RequestInfo
from regard.accountability.policy import PolicyStore
from regard.api.accountability import review_desk
from regard.api.rekognition.operations import Context
from regard.api.rekognition.s3 import S3Images
from regard.config import Settings
from regard.face.engine import Engine
from regard.service import Service

from .helpers import ADMIN, CASE, INVESTIGATOR, PROVENANCE, VERIFIER_1, VERIFIER_2, Endpoint, open_gate


@pytest.fixture
def ep(tmp_path: Path, engine: Engine, fr_images: Path) -> Iterator[Endpoint]:
    service = Service.open(tmp_path, engine=engine)
    evidence = EvidenceStore(tmp_path, master_key=Fernet.generate_key())
    guard = Guard(tmp_path, service_factory=lambda: service, evidence=evidence)
    ctx = Context(
        engine=engine, s3=S3Images(Settings.from_env(data_dir=tmp_path)), service_factory=lambda: service
    )
    open_gate(tmp_path, ["*"], fr_images)  # identification needs an approved assessment
    yield Endpoint(tmp_path, service, guard, ctx)
    service.close()


def _jpeg_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "JPEG"
        return img.size


def _ciphertexts(data_dir: Path) -> list[bytes]:
    with sqlite3.connect(data_dir / FILE_NAME) as conn:
        rows = conn.execute("SELECT crop FROM enrolled_crops").fetchall()
        rows += conn.execute("SELECT probe_crop FROM lead_evidence").fetchall()
        rows += conn.execute("SELECT candidate_crop FROM lead_evidence").fetchall()
    return [bytes(r[0]) for r in rows if r[0] is not None]


def _markers(token: bytes) -> list[bytes]:
    """Eight 32-byte pieces of a Fernet token, spread over it past its version and time: the
    token of a 20 KB crop spans several SQLite pages, so the scan looks for pieces that fit in one
    (a piece may straddle a page's header; all eight never do)."""
    step = (len(token) - 24 - 32) // 7
    return [token[24 + i * step : 24 + i * step + 32] for i in range(8)]


def _held(token: bytes, files: bytes) -> bool:
    return any(m in files for m in _markers(token))


def _all_files(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in data_dir.rglob("*") if p.is_file())


def _index(ep: Endpoint, name: str, photos: dict[str, bytes], collection: str = "watch") -> tuple[str, dict]:  # type: ignore[type-arg]
    r = ep.call(
        "IndexFaces",
        CollectionId=collection,
        Image={"Bytes": photos[name]},
        ExternalImageId=name,
        **PROVENANCE,
    )
    return r.result["FaceRecords"][0]["Face"]["FaceId"], r.record


def test_a_lead_keeps_the_probe_and_the_candidate_crop_never_in_the_log(
    ep: Endpoint, photos: dict[str, bytes]
) -> None:
    ep.call("CreateCollection", CollectionId="watch")
    obama, rec = _index(ep, "obama", photos)
    assert rec["evidence"] == {"enrolled_crops": 1}
    _index(ep, "biden", photos)
    store = ep.guard.evidence
    assert store is not None
    enrolled = store.enrolled("watch", obama)
    assert enrolled is not None and max(_jpeg_size(enrolled)) <= MAX_SIDE

    found = ep.call(
        "SearchFacesByImage", INVESTIGATOR, CollectionId="watch", Image={"Bytes": photos["obama2"]}, **CASE
    )
    (match,) = found.result["FaceMatches"]
    assert match["Face"]["FaceId"] == obama
    lead = store.lead(match["RegardLeadId"])
    assert lead is not None and lead.probe is not None and lead.candidate == enrolled
    assert max(_jpeg_size(lead.probe)) <= MAX_SIDE
    assert found.record["evidence"] == {
        "lead_crops": 2,
        "probe_crop_sha256": hashlib.sha256(lead.probe).hexdigest(),
    }

    # SearchFaces by FaceId: the probe is the enrolled face's crop
    by_id = ep.call("SearchFaces", INVESTIGATOR, CollectionId="watch", FaceId=obama, **CASE)
    for m in by_id.result["FaceMatches"]:
        kept = store.lead(m["RegardLeadId"])
        assert kept is not None and kept.probe == enrolled

    # the crops are encrypted at rest and never reach the audit log
    files = _all_files(ep.data_dir)
    assert enrolled not in files and lead.probe not in files
    log = b"".join(p.read_bytes() for p in (ep.data_dir / "audit").rglob("*") if p.is_file())
    assert not any(_held(c, log) for c in _ciphertexts(ep.data_dir))


def test_collections_no_review_profile_covers_keep_no_crop(ep: Endpoint, photos: dict[str, bytes]) -> None:
    PolicyStore(ep.data_dir).set("identification", "collections", "watch-*")
    ep.call("CreateCollection", CollectionId="staff")
    _, rec = _index(ep, "obama", photos, collection="staff")
    assert "evidence" not in rec
    assert _ciphertexts(ep.data_dir) == []


def test_deleting_a_face_deletes_its_crops_from_every_file(ep: Endpoint, photos: dict[str, bytes]) -> None:
    ep.call("CreateCollection", CollectionId="watch")
    obama, _ = _index(ep, "obama", photos)
    biden, _ = _index(ep, "biden", photos)
    ep.call(
        "SearchFacesByImage", INVESTIGATOR, CollectionId="watch", Image={"Bytes": photos["obama2"]}, **CASE
    )
    store = ep.guard.evidence
    assert store is not None
    kept_biden = store.enrolled("watch", biden)
    before = _ciphertexts(ep.data_dir)
    assert len(before) == 4  # two enrolled crops, one lead's probe and candidate
    files = _all_files(ep.data_dir)
    assert all(_held(c, files) for c in before)  # the scan sees them while held

    rec = ep.call("DeleteFaces", ADMIN, CollectionId="watch", FaceIds=[obama]).record
    assert rec["evidence"] == {"rows_deleted": 2}  # its enrolled crop and the lead about it
    after = _all_files(ep.data_dir)
    remaining = _ciphertexts(ep.data_dir)
    assert len(remaining) == 1 and store.enrolled("watch", biden) == kept_biden
    assert not any(_held(c, after) for c in before if c not in remaining)


def test_erasure_deletes_the_crops_and_subject_access_says_they_were_kept(
    ep: Endpoint, photos: dict[str, bytes]
) -> None:
    ep.call("CreateCollection", CollectionId="watch")
    obama, _ = _index(ep, "obama", photos)
    store = ep.guard.evidence
    assert store is not None
    held = subject_access(ep.service, ep.guard.audit, actor="dpo", external_image_id="obama", evidence=store)
    assert held["Collections"][0]["Faces"][0]["ReviewCropKept"] is True
    before = _ciphertexts(ep.data_dir)
    assert before and all(_held(c, _all_files(ep.data_dir)) for c in before)
    report = erase(ep.service, ep.guard.audit, actor="dpo", face_id=obama, evidence=store, reason="art. 17")
    assert report.crops_deleted == 1 and report.to_json()["DeletedEvidenceCrops"] == 1
    files = _all_files(ep.data_dir)
    assert not any(_held(c, files) for c in before)


def test_a_decided_leads_crops_expire_after_the_retention(ep: Endpoint, photos: dict[str, bytes]) -> None:
    ep.call("CreateCollection", CollectionId="watch")
    _index(ep, "obama", photos)
    found = ep.call(
        "SearchFacesByImage", INVESTIGATOR, CollectionId="watch", Image={"Bytes": photos["obama2"]}, **CASE
    )
    lead_id = found.result["FaceMatches"][0]["RegardLeadId"]
    store = ep.guard.evidence
    assert store is not None
    decided = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    now = datetime.now(UTC)
    assert store.expire([(lead_id, None)], retention_days=0, now=now) == 0  # pending: kept
    assert store.expire([(lead_id, decided)], retention_days=7, now=now) == 0  # decided 3 days ago
    assert store.lead(lead_id) is not None
    assert store.expire([(lead_id, decided)], retention_days=2, now=now) == 1
    assert store.lead(lead_id) is None


@pytest.mark.parametrize("retention_days", [0, 7])
def test_the_review_desk_sweeps_a_decided_leads_crops_after_the_retention(
    ep: Endpoint, photos: dict[str, bytes], retention_days: int
) -> None:
    ep.call("CreateCollection", CollectionId="watch")
    _index(ep, "obama", photos)
    probe = {"Bytes": photos["obama2"]}
    found = ep.call("SearchFacesByImage", INVESTIGATOR, CollectionId="watch", Image=probe, **CASE)
    lead_id = found.result["FaceMatches"][0]["RegardLeadId"]
    store = ep.guard.evidence
    assert store is not None
    desk = review_desk(ep.guard, retention_days)
    desk.decide(lead_id, "confirm", VERIFIER_1, RequestInfo("r1"), "same person")
    assert store.lead(lead_id) is not None  # still pending: one confirmation of two
    desk.decide(lead_id, "confirm", VERIFIER_2, RequestInfo("r2"), "same person")
    assert ep.guard.review.get(lead_id).status == "CONFIRMED"
    assert (store.lead(lead_id) is None) == (retention_days == 0)
