"""Pagination tokens are opaque and authenticated (issue 15, item 12); API deletion is erasure on a
live server (item 8).

The attacks: base64-decode a ListCollections NextToken to read the name of the collection it
continues after (possibly one outside the caller's profile); tamper with a token, or replay one
issued for another listing, collection or data directory. And: delete a face with boto3, then
look for its template and FaceId in the files of the server's data directory while it runs.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from regard.errors import InvalidPaginationToken
from regard.face.engine import Engine
from regard.service import Service
from regard.store.base import NewFace
from regard.types import Box

if TYPE_CHECKING:
    from live_server import LiveServer


def _decoded(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def _tampered(token: str) -> list[str]:
    """Every one-character change of ``token`` that is still base64 of some bytes."""
    out = []
    for i, ch in enumerate(token):
        other = "A" if ch != "A" else "B"
        out.append(token[:i] + other + token[i + 1 :])
    return out


@pytest.fixture
def service(tmp_path: Path, engine: Engine) -> Iterator[Service]:
    s = Service.open(tmp_path / "data", engine=engine)
    yield s
    s.close()


def _all_collections(service: Service, size: int) -> tuple[list[str], list[str]]:
    seen: list[str] = []
    tokens: list[str] = []
    token: str | None = None
    while True:
        page = service.list_collections(max_results=size, next_token=token)
        seen += page.collection_ids
        if not page.next_token:
            return seen, tokens
        token = page.next_token
        tokens.append(token)


def test_collection_tokens_name_no_collection_and_refuse_tampering(service: Service, tmp_path: Path) -> None:
    names = [f"secret-{w}-{uuid.uuid4().hex[:6]}" for w in ("alpha", "beta", "gamma", "delta", "omega")]
    for n in names:
        service.create_collection(n)
    seen, tokens = _all_collections(service, 1)
    assert seen == sorted(names)  # every collection once, in order
    assert len(tokens) == len(names) - 1
    for t in tokens:
        raw = _decoded(t)
        assert b"secret" not in raw and "secret" not in t
        assert not any(n.encode() in raw or n in t for n in names)
    for t in tokens:
        for bad in _tampered(t):
            with pytest.raises(InvalidPaginationToken):
                service.list_collections(max_results=1, next_token=bad)
    # Another data directory has another secret: its tokens are refused here.
    with Service.open(tmp_path / "other", engine=service.engine) as other:
        for n in ("a1", "a2"):
            other.create_collection(n)
        foreign = other.list_collections(max_results=1).next_token
        assert foreign is not None
        with pytest.raises(InvalidPaginationToken):
            service.list_collections(max_results=1, next_token=foreign)
    # Forged: a token built as regard 0.2 built them, naming the collection to continue after.
    forged = base64.urlsafe_b64encode(b'{"k":"collections","s":"","a":"secret"}').decode().rstrip("=")
    with pytest.raises(InvalidPaginationToken):
        service.list_collections(max_results=1, next_token=forged)


def test_face_and_user_tokens_are_bound_to_their_listing_and_collection(service: Service) -> None:
    import numpy as np

    for cid in ("team-a", "team-b"):
        service.create_collection(cid)
        vectors = (np.random.default_rng(7).standard_normal((5, 128)) * 0.09).astype(np.float32)
        service.add_templates(
            cid,
            [
                NewFace(str(uuid.uuid4()), str(uuid.uuid4()), f"e{i}", Box(0.1, 0.1, 0.5, 0.5), 99.0, v)
                for i, v in enumerate(vectors)
            ],
        )
        for u in ("u1", "u2", "u3"):
            service.create_user(cid, u)
    ids: list[str] = []
    token: str | None = None
    while True:
        page = service.list_faces("team-a", max_results=2, next_token=token)
        ids += [f.face_id for f in page.faces]
        token = page.next_token
        if not token:
            break
        assert b"team-a" not in _decoded(token)
        face_token = token
    assert len(ids) == len(set(ids)) == 5
    user_token = service.list_users("team-a", max_results=1).next_token
    assert user_token is not None
    with pytest.raises(InvalidPaginationToken):
        service.list_faces("team-b", max_results=2, next_token=face_token)  # another collection
    with pytest.raises(InvalidPaginationToken):
        service.list_users("team-a", max_results=1, next_token=face_token)  # another listing
    with pytest.raises(InvalidPaginationToken):
        service.list_collections(max_results=1, next_token=user_token)
    for bad in _tampered(user_token):
        with pytest.raises(InvalidPaginationToken):
            service.list_users("team-a", max_results=1, next_token=bad)


@pytest.mark.slow
def test_live_tokens_are_opaque(rek: Any) -> None:
    names = [f"tok-hidden-{uuid.uuid4().hex[:8]}-{i}" for i in range(3)]
    for n in names:
        rek.create_collection(CollectionId=n)
    try:
        seen: list[str] = []
        kwargs: dict[str, Any] = {"MaxResults": 1}
        while True:
            page = rek.list_collections(**kwargs)
            seen += page["CollectionIds"]
            token = page.get("NextToken")
            if not token:
                break
            assert b"tok-hidden" not in _decoded(token) and "tok-hidden" not in token
            kwargs["NextToken"] = token
        assert set(names) <= set(seen) and len(seen) == len(set(seen))
        first = rek.list_collections(MaxResults=1)["NextToken"]
        with pytest.raises(ClientError) as info:
            rek.list_collections(MaxResults=1, NextToken=_tampered(first)[0])
        assert info.value.response["Error"]["Code"] == "InvalidPaginationTokenException"
    finally:
        for n in names:
            rek.delete_collection(CollectionId=n)


def _files_holding(root: Path, needle: bytes) -> list[Path]:
    """Files of the data directory holding ``needle``; the audit log keeps FaceIds by design."""
    return [
        p
        for p in root.rglob("*")
        if p.is_file() and "audit" not in p.relative_to(root).parts and needle in p.read_bytes()
    ]


@pytest.mark.slow
def test_live_delete_faces_erases_before_it_returns(
    api: LiveServer, rek: Any, photos: dict[str, bytes]
) -> None:
    from regard.store.sqlite import SqliteStore

    cid = f"erase-{uuid.uuid4().hex[:8]}"
    rek.create_collection(CollectionId=cid)
    try:
        face_id = rek.index_faces(CollectionId=cid, Image={"Bytes": photos["obama"]}, ExternalImageId="e1")[
            "FaceRecords"
        ][0]["Face"]["FaceId"]
        store = SqliteStore(api.data_dir)
        try:
            template = store.get_faces(cid, [face_id])[face_id].embedding.tobytes()
        finally:
            store.close()
        assert _files_holding(api.data_dir, template) and _files_holding(api.data_dir, face_id.encode())
        assert rek.delete_faces(CollectionId=cid, FaceIds=[face_id])["DeletedFaces"] == [face_id]
        assert _files_holding(api.data_dir, template) == []
        assert _files_holding(api.data_dir, face_id.encode()) == []
    finally:
        rek.delete_collection(CollectionId=cid)
