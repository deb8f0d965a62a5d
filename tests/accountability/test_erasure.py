"""Erasure leaves no template bytes in any file; subject access lists metadata only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from regard.accountability.erasure import erase, subject_access
from regard.errors import InvalidParameter
from regard.face.engine import Engine
from regard.index.ann import AnnIndex

from .helpers import ADMIN, CASE, INVESTIGATOR, PROVENANCE, Endpoint, endpoint, open_gate


@pytest.fixture
def ep(tmp_path: Path, engine: Engine, fr_images: Path) -> Iterator[Endpoint]:
    e = endpoint(tmp_path, engine)
    open_gate(tmp_path, ["*"], fr_images)  # identification needs an approved assessment
    yield e
    e.service.close()


def _files_holding(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def _index_files_holding(root: Path, template: Any) -> list[Path]:
    """HNSW index files holding ``template`` in the form they store it (maybe projected)."""
    return [p for p in root.rglob("*.hnsw") if AnnIndex.file_holds(p, template)]


def test_erasure_removes_every_template_byte_and_search_finds_nothing(ep: Endpoint, fr_images: Path) -> None:
    photo = {p.stem: p.read_bytes() for p in fr_images.glob("*.jpg")}
    ep.call("CreateCollection", CollectionId="watch")
    subject: list[str] = []
    for name in ("obama", "obama2"):
        r = ep.call(
            "IndexFaces",
            INVESTIGATOR,
            CollectionId="watch",
            Image={"Bytes": photo[name]},
            ExternalImageId="subject-42",
            **PROVENANCE,
            **CASE,
        )
        subject.append(r.result["FaceRecords"][0]["Face"]["FaceId"])
    other = ep.call(
        "IndexFaces", ADMIN, CollectionId="watch", Image={"Bytes": photo["biden"]}, ExternalImageId="other"
    ).result["FaceRecords"][0]["Face"]["FaceId"]
    ep.call("CreateUser", CollectionId="watch", UserId="u42")
    ep.call("AssociateFaces", CollectionId="watch", UserId="u42", FaceIds=subject)
    found = ep.call(
        "SearchFacesByImage", INVESTIGATOR, CollectionId="watch", Image={"Bytes": photo["obama3"]}, **CASE
    )
    assert {m["Face"]["FaceId"] for m in found.result["FaceMatches"]} == set(subject)
    templates = {f.face_id: f.embedding.tobytes() for f in ep.service.list_faces("watch").faces}
    ep.service.compact()
    for fid in subject:
        assert _files_holding(ep.data_dir, templates[fid]), "the scan must see templates while they are held"

    held = subject_access(
        ep.service, ep.guard.audit, actor="dpo", external_image_id="subject-42", review=ep.guard.review
    )
    (coll,) = held["Collections"]
    assert {f["FaceId"] for f in coll["Faces"]} == set(subject)
    assert all(f["LegalBasis"] == PROVENANCE["legal_basis"] for f in coll["Faces"])
    assert all(f["UserId"] == "u42" for f in coll["Faces"])
    assert len(held["ReviewLeads"]) == 2 and held["AuditRecords"]
    text = json.dumps(held)
    assert "embedding" not in text.lower() and "template" not in text.lower().replace(
        "templates are held", ""
    )

    report = erase(
        ep.service,
        ep.guard.audit,
        actor="dpo",
        external_image_id="subject-42",
        review=ep.guard.review,
        reason="art. 17 request 7",
    )
    assert sorted(report.face_ids) == sorted(subject) and report.collections == ["watch"]
    assert report.leads_deleted == 2

    after = ep.call(
        "SearchFacesByImage", INVESTIGATOR, CollectionId="watch", Image={"Bytes": photo["obama3"]}, **CASE
    )
    assert after.result["FaceMatches"] == []
    assert [f.face_id for f in ep.service.list_faces("watch").faces] == [other]
    for fid in subject:
        assert _files_holding(ep.data_dir, templates[fid]) == [], f"template of {fid} still on disk"
    assert _files_holding(ep.data_dir, templates[other]), "faces of other people stay"
    assert ep.guard.review.list(status=None) == []
    erasure = [r for r in ep.guard.audit.records() if r["operation"] == "Erase"]
    assert len(erasure) == 1 and sorted(erasure[0]["results"]["DeletedFaces"]) == sorted(subject)
    assert ep.guard.audit.verify().ok
    empty = subject_access(ep.service, ep.guard.audit, actor="dpo", external_image_id="subject-42")
    assert empty["Collections"] == []


def test_erase_by_user_id_deletes_the_user_and_its_faces(ep: Endpoint, fr_images: Path) -> None:
    ep.call("CreateCollection", CollectionId="staff")
    ids = [
        ep.call("IndexFaces", CollectionId="staff", Image={"Bytes": (fr_images / n).read_bytes()}).result[
            "FaceRecords"
        ][0]["Face"]["FaceId"]
        for n in ("obama.jpg", "obama2.jpg")
    ]
    ep.call("CreateUser", CollectionId="staff", UserId="barack")
    ep.call("AssociateFaces", CollectionId="staff", UserId="barack", FaceIds=ids)
    report = erase(ep.service, ep.guard.audit, actor="dpo", collection_id="staff", user_id="barack")
    assert sorted(report.face_ids) == sorted(ids) and report.users_deleted == ["barack"]
    assert ep.service.describe_collection("staff").face_count == 0
    assert ep.service.list_users("staff").users == []
    with pytest.raises(InvalidParameter):
        erase(ep.service, ep.guard.audit, actor="dpo", user_id="x", face_id=ids[0])


def test_erasure_reaches_hnsw_index_files_of_a_running_store(tmp_path: Path, engine: Engine) -> None:
    """The ANN (HNSW) path: a long-lived store (the server's) holds a saved index file;
    another process-like store erases; after the server syncs and closes, no file keeps the bytes."""
    import uuid

    import numpy as np

    from regard.accountability.audit import AuditLog
    from regard.service import Service
    from regard.store.base import NewFace
    from regard.store.sqlite import SqliteStore
    from regard.types import Box

    server = Service(SqliteStore(tmp_path, ann_min_faces=10), engine)
    server.create_collection("big")
    vectors = (np.random.default_rng(1).standard_normal((200, 128)) * 0.09).astype(np.float32)
    server.add_templates(
        "big",
        [
            NewFace(
                str(uuid.uuid4()),
                str(uuid.uuid4()),
                "victim" if i < 3 else f"p{i}",
                Box(0.1, 0.1, 0.5, 0.5),
                99.0,
                v,
            )
            for i, v in enumerate(vectors)
        ],
    )
    assert server.search_faces_by_vector("big", vectors[0], face_match_threshold=0, max_faces=3)
    server.close()  # saves the HNSW index file
    server = Service(SqliteStore(tmp_path, ann_min_faces=10), engine)
    assert server.search_faces_by_vector("big", vectors[0], face_match_threshold=0, max_faces=3)
    assert list(tmp_path.rglob("*.hnsw")), "the HNSW path is in use"
    assert _files_holding(tmp_path, vectors[0].tobytes()), "the scan sees the template in the database"
    assert _index_files_holding(tmp_path, vectors[0]), "... and in the index file"

    cli = Service(SqliteStore(tmp_path, ann_min_faces=10), engine)
    report = erase(cli, AuditLog(tmp_path), actor="dpo", external_image_id="victim")
    cli.close()
    assert len(report.face_ids) == 3
    hits = server.search_faces_by_vector("big", vectors[0], face_match_threshold=0, max_faces=5)
    assert all(m.face.external_image_id != "victim" for m in hits)
    server.close()
    for v in vectors[:3]:
        assert _files_holding(tmp_path, v.tobytes()) == []
        assert _index_files_holding(tmp_path, v) == []
    assert _files_holding(tmp_path, vectors[5].tobytes())
    # The next store to open rebuilds the graph from the database and saves it: without them.
    rebuilt = Service(SqliteStore(tmp_path, ann_min_faces=10), engine)
    assert rebuilt.search_faces_by_vector("big", vectors[5], face_match_threshold=0, max_faces=1)
    rebuilt.close()
    assert _index_files_holding(tmp_path, vectors[5])
    for v in vectors[:3]:
        assert _index_files_holding(tmp_path, v) == []
