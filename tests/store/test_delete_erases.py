"""Deleting through the service is erasure: once DeleteFaces, DeleteUser or DeleteCollection has
returned, no file of the data directory holds the removed templates or FaceIds (issue 15, item 8),
and the review leads about them are withdrawn: they can no longer be confirmed.

The attack: index faces, note their template bytes as stored (float32) and their FaceIds, delete
through the service, then read every file under the data directory while the store is still open
(no compact, no close: what a running server leaves on disk).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from regard.accountability.review import CLOSED, PENDING, Candidate, ReviewQueue
from regard.errors import ConflictError
from regard.face.engine import Engine
from regard.index.ann import AnnIndex
from regard.scoring.calibrate import Scorer
from regard.service import Service
from regard.store.base import FaceRecord, NewFace
from regard.store.sqlite import SqliteStore, wal_path
from regard.types import Box


def _files_holding(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def _index_files_holding(root: Path, template: np.ndarray) -> list[Path]:
    return [p for p in root.rglob("*.hnsw") if AnnIndex.file_holds(p, template)]


def _faces(service: Service, collection: str, n: int, seed: int, external: str = "x") -> list[FaceRecord]:
    vectors = (np.random.default_rng(seed).standard_normal((n, 128)) * 0.09).astype(np.float32)
    return service.add_templates(
        collection,
        [
            NewFace(str(uuid.uuid4()), str(uuid.uuid4()), f"{external}{i}", Box(0.1, 0.1, 0.5, 0.5), 99.0, v)
            for i, v in enumerate(vectors)
        ],
    )


def _lead(
    queue: ReviewQueue, collection: str, face: FaceRecord | None = None, user: str | None = None
) -> str:
    (lead_id,) = queue.add(
        request_id=str(uuid.uuid4()),
        requester_key="RGKINV00000000000001",
        requester_principal="investigator",
        collection_id=collection,
        operation="SearchFacesByImage" if user is None else "SearchUsersByImage",
        candidates=[
            Candidate(
                face.face_id if face else None, user, face.external_image_id if face else None, 99.0, 1e-6
            )
        ],
        purpose="p",
        case_reference="c",
    )
    return lead_id


def _cannot_be_confirmed(queue: ReviewQueue, lead_id: str) -> None:
    assert queue.get(lead_id).status == CLOSED
    with pytest.raises(ConflictError):
        queue.decide(
            lead_id,
            reviewer_key="RGKVER00000000000001",
            reviewer_principal="vera",
            reviewer_role="verifier",
            decision="confirm",
        )


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_delete_faces_leaves_no_template_or_face_id_in_any_file(
    data: Path, engine: Engine, scorer: Scorer
) -> None:
    service = Service(SqliteStore(data), engine, scorer=scorer)
    queue = ReviewQueue(data)
    service.create_collection("c")
    victims = _faces(service, "c", 3, seed=1, external="victim")
    others = _faces(service, "c", 20, seed=2)
    leads = [_lead(queue, "c", f) for f in victims]
    kept_lead = _lead(queue, "c", others[0])
    for f in victims + others[:1]:
        assert _files_holding(data, f.embedding.tobytes()), "the scan sees templates while they are held"
        assert _files_holding(data, f.face_id.encode())

    out = service.delete_faces("c", [f.face_id for f in victims])

    assert sorted(out.deleted_faces) == sorted(f.face_id for f in victims)
    assert wal_path(data).stat().st_size == 0  # checkpointed and truncated before the call returned
    for f in victims:
        assert _files_holding(data, f.embedding.tobytes()) == [], f"template of {f.face_id} still on disk"
        assert _files_holding(data, f.face_id.encode()) == [], f"FaceId {f.face_id} still on disk"
        assert _files_holding(data, f.external_image_id.encode()) == []  # type: ignore[union-attr]
    for lead_id in leads:
        _cannot_be_confirmed(queue, lead_id)
        assert queue.get(lead_id).face_id is None
    assert _files_holding(data, others[0].embedding.tobytes()), "other people's faces stay"
    assert queue.get(kept_lead).status == PENDING and queue.get(kept_lead).face_id == others[0].face_id
    hits = service.search_faces_by_vector("c", victims[0].embedding, face_match_threshold=0, max_faces=30)
    assert {m.face.face_id for m in hits}.isdisjoint(f.face_id for f in victims)
    service.close()


def test_delete_collection_and_delete_user_leave_nothing(data: Path, engine: Engine, scorer: Scorer) -> None:
    service = Service(SqliteStore(data), engine, scorer=scorer)
    queue = ReviewQueue(data)
    service.create_collection("gone")
    service.create_collection("stays")
    doomed = _faces(service, "gone", 4, seed=3)
    lead_gone = _lead(queue, "gone", doomed[0])
    service.create_user("stays", "user-7f3a9c")
    kept = _faces(service, "stays", 2, seed=4)
    service.associate_faces("stays", "user-7f3a9c", [kept[0].face_id])
    lead_user = _lead(queue, "stays", user="user-7f3a9c")

    service.delete_collection("gone")
    service.delete_user("stays", "user-7f3a9c")

    for f in doomed:
        assert _files_holding(data, f.embedding.tobytes()) == []
        assert _files_holding(data, f.face_id.encode()) == []
    assert _files_holding(data, b"user-7f3a9c") == []
    _cannot_be_confirmed(queue, lead_gone)
    _cannot_be_confirmed(queue, lead_user)
    assert _files_holding(data, kept[0].embedding.tobytes()), "the user's faces stay (DeleteUser)"
    service.close()


def test_delete_reaches_the_hnsw_index_file_of_a_running_store(
    data: Path, engine: Engine, scorer: Scorer
) -> None:
    first = Service(SqliteStore(data, ann_min_faces=10), engine, scorer=scorer)
    first.create_collection("big")
    faces = _faces(first, "big", 60, seed=5)
    assert first.search_faces_by_vector("big", faces[0].embedding, face_match_threshold=0, max_faces=3)
    first.close()  # saves the HNSW index file
    server = Service(SqliteStore(data, ann_min_faces=10), engine, scorer=scorer)
    assert server.search_faces_by_vector("big", faces[0].embedding, face_match_threshold=0, max_faces=3)
    assert _index_files_holding(data, faces[0].embedding), "the HNSW file holds the template"

    server.delete_faces("big", [faces[0].face_id])

    assert _index_files_holding(data, faces[0].embedding) == []
    assert _files_holding(data, faces[0].embedding.tobytes()) == []
    assert _files_holding(data, faces[0].face_id.encode()) == []
    hits = server.search_faces_by_vector("big", faces[0].embedding, face_match_threshold=0, max_faces=5)
    assert faces[0].face_id not in {m.face.face_id for m in hits}
    server.close()  # an index with removals is never written back
    assert _index_files_holding(data, faces[0].embedding) == []
    assert _files_holding(data, faces[0].embedding.tobytes()) == []


def test_leads_are_withdrawn_on_either_backend(open_service: Callable[[], Service], tmp_path: Path) -> None:
    """PostgreSQL has no data directory: the queues this process opened are told instead."""
    service = open_service()
    queue = ReviewQueue(tmp_path / "data")
    service.create_collection("c")
    face = _faces(service, "c", 2, seed=9)[0]
    lead_id = _lead(queue, "c", face)
    service.delete_faces("c", [face.face_id])
    _cannot_be_confirmed(queue, lead_id)
    assert queue.get(lead_id).face_id is None


def test_remembered_responses_do_not_keep_a_deleted_face_id(
    data: Path, engine: Engine, scorer: Scorer
) -> None:
    service = Service(SqliteStore(data), engine, scorer=scorer)
    service.create_collection("c")
    face, other = _faces(service, "c", 2, seed=11)
    service.create_user("c", "u1")
    service.associate_faces("c", "u1", [face.face_id, other.face_id], client_request_token="tok-associate")
    service.disassociate_faces("c", "u1", [face.face_id], client_request_token="tok-disassociate")
    assert _files_holding(data, face.face_id.encode())
    service.delete_faces("c", [face.face_id])
    assert _files_holding(data, face.face_id.encode()) == []
    assert _files_holding(data, face.embedding.tobytes()) == []
    service.close()
