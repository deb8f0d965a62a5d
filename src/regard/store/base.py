"""The storage contract behind face collections: plain records and the :class:`Store` protocol.

A store keeps collections, faces (templates included), users, tags and idempotency
tokens, and answers nearest-neighbour queries over one collection's templates. Two
implementations share one behavioural test suite: :mod:`regard.store.sqlite` (embedded,
the default) and :mod:`regard.store.postgres` (PostgreSQL + pgvector, to scale out).

Stores know nothing about images, engines, similarities or HTTP: distances in, records out.
Every mutating method is atomic (all of its rows or none) and bumps the collection's
``content_version`` and chains its ``content_hash``, so an auditor can tell that a
collection changed and prove which state a search ran against.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from regard.errors import InvalidPaginationToken
from regard.types import Box, Embeddings, ModelIdentity

T = TypeVar("T")

#: Rekognition's quota: faces associated with one user.
MAX_FACES_PER_USER = 100
#: Hash a new collection's chain starts from.
GENESIS_HASH = hashlib.sha256(b"regard collection").hexdigest()


@dataclass(frozen=True, slots=True)
class Collection:
    """A face collection. ``face_model`` is the embedding model every face in it was made with."""

    collection_id: str
    arn: str
    face_model: ModelIdentity
    created_at: float  # seconds since the epoch
    face_count: int
    user_count: int
    content_version: int  # bumps on every add/delete/associate/disassociate
    content_hash: str  # sha256 chain over every change, starting at GENESIS_HASH


@dataclass(frozen=True, slots=True)
class NewFace:
    """A face to add: everything but the identifiers and time the store assigns."""

    face_id: str
    image_id: str
    external_image_id: str | None
    bounding_box: Box  # ratios of the image width/height, as Rekognition reports them
    confidence: float
    embedding: Embeddings  # shape (128,), float32
    brightness: float | None = None
    sharpness: float | None = None
    source_note: str | None = None  # provenance: where the image came from (free text)
    legal_basis: str | None = None  # provenance: the legal basis for processing it
    image_sha256: str | None = None  # sha256 (hex) of the encoded image the face was indexed from


@dataclass(frozen=True, slots=True)
class FaceRecord:
    """A stored face. ``bounding_box`` holds ratios of the source image."""

    face_id: str
    image_id: str
    external_image_id: str | None
    bounding_box: Box
    confidence: float
    embedding: Embeddings
    user_id: str | None
    indexed_at: float
    brightness: float | None = None
    sharpness: float | None = None
    source_note: str | None = None
    legal_basis: str | None = None


@dataclass(frozen=True, slots=True)
class User:
    """A user: a named group of up to 100 faces of one person."""

    user_id: str
    status: str  # "CREATED" (no faces yet) or "ACTIVE"
    face_count: int
    created_at: float


@dataclass(frozen=True, slots=True)
class Neighbor:
    """One nearest-neighbour hit: a face and its Euclidean distance to the probe."""

    face: FaceRecord
    distance: float


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; ``next_token`` is None on the last page."""

    items: list[T]
    next_token: str | None = None


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A remembered response to a request that carried a ClientRequestToken."""

    params_hash: str
    response: dict[str, Any] = field(default_factory=dict)


class Store(Protocol):
    """What the service needs from a backend. Implementations are thread-safe."""

    # collections -------------------------------------------------------------------------
    def create_collection(
        self, collection_id: str, arn: str, face_model: ModelIdentity, tags: Mapping[str, str]
    ) -> Collection: ...
    def get_collection(self, collection_id: str) -> Collection: ...
    def list_collections(self, max_results: int, token: str | None) -> Page[Collection]: ...
    def delete_collection(self, collection_id: str) -> None: ...

    # faces -------------------------------------------------------------------------------
    def add_faces(
        self, collection_id: str, faces: Sequence[NewFace], *, once_per_image: bool = False
    ) -> list[FaceRecord]:
        """Store ``faces`` and return their records. With ``once_per_image``, when the faces all come
        from one image (same ExternalImageId and ``image_sha256``, both set) of which the collection
        already holds faces, nothing is stored and those faces are returned instead (IndexFaces'
        rule against duplicate face metadata)."""
        ...

    def get_faces(self, collection_id: str, face_ids: Sequence[str]) -> dict[str, FaceRecord]: ...
    def list_faces(
        self,
        collection_id: str,
        *,
        user_id: str | None,
        face_ids: Sequence[str] | None,
        max_results: int,
        token: str | None,
    ) -> Page[FaceRecord]: ...
    def delete_faces(self, collection_id: str, face_ids: Sequence[str]) -> list[str]: ...
    def indexed_images(self, collection_id: str, external_image_ids: Sequence[str]) -> dict[str, set[str]]:
        """ExternalImageId -> the sha256 of each image indexed under it that still has a face in the
        collection (faces without a recorded hash are left out); ids with none are absent."""
        ...

    def nearest(
        self, collection_id: str, probe: Embeddings, k: int, max_distance: float
    ) -> list[Neighbor]: ...

    # users -------------------------------------------------------------------------------
    def create_user(self, collection_id: str, user_id: str) -> User: ...
    def get_user(self, collection_id: str, user_id: str) -> User: ...
    def list_users(self, collection_id: str, max_results: int, token: str | None) -> Page[User]: ...
    def delete_user(self, collection_id: str, user_id: str) -> None: ...
    def associate_faces(self, collection_id: str, user_id: str, face_ids: Sequence[str]) -> list[str]: ...
    def disassociate_faces(self, collection_id: str, user_id: str, face_ids: Sequence[str]) -> list[str]: ...

    # tags --------------------------------------------------------------------------------
    def tag(self, collection_id: str, tags: Mapping[str, str]) -> None: ...
    def untag(self, collection_id: str, keys: Sequence[str]) -> None: ...
    def tags(self, collection_id: str) -> dict[str, str]: ...

    # idempotency -------------------------------------------------------------------------
    def recall_request(self, collection_id: str, operation: str, token: str) -> StoredResponse | None: ...
    def remember_request(
        self, collection_id: str, operation: str, token: str, stored: StoredResponse
    ) -> None: ...

    # maintenance -------------------------------------------------------------------------
    def compact(self) -> None:
        """Make erasure physical: checkpoint, vacuum, rewrite index files without removed vectors."""
        ...

    def close(self) -> None: ...


# -- helpers shared by the backends -----------------------------------------------------------
def chain_hash(previous: str, operation: str, ids: Sequence[str]) -> str:
    """The next link of a collection's content hash."""
    h = hashlib.sha256(previous.encode())
    h.update(b"\x00" + operation.encode())
    for i in ids:
        h.update(b"\x00" + i.encode())
    return h.hexdigest()


#: Bytes of HMAC-SHA256 a pagination token carries.
TOKEN_MAC_BYTES = 16


def _token_mac(secret: bytes, kind: str, scope: str, after: str) -> bytes:
    msg = b"\x00".join(x.encode() for x in ("regard-page-v2", kind, scope, after))
    return hmac.new(secret, msg, hashlib.sha256).digest()[:TOKEN_MAC_BYTES]


def encode_token(secret: bytes, kind: str, scope: str, after: str) -> str:
    """An opaque, authenticated pagination token: the position ``after``, MACed with its listing.

    The token carries only the position and an HMAC-SHA256 (keyed by the store's own secret) over
    the listing kind, its scope (the collection) and the position; the scope is not in it. The
    position is whatever the listing continues after (a collection's internal row number, a
    FaceId, a UserId), never a collection's name.
    """
    raw = _token_mac(secret, kind, scope, after) + after.encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(secret: bytes, token: str | None, kind: str, scope: str) -> str | None:
    """The position to continue after, or None to start; InvalidPaginationToken unless we issued it
    for this listing (a forged, tampered or foreign token)."""
    if token is None or token == "":
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        raw = base64.urlsafe_b64decode(padded.encode())
        after = raw[TOKEN_MAC_BYTES:].decode()
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidPaginationToken("the pagination token is malformed") from exc
    if base64.urlsafe_b64encode(raw).decode().rstrip("=") != token:  # one spelling per token
        raise InvalidPaginationToken("the pagination token is malformed")
    if len(raw) < TOKEN_MAC_BYTES or not hmac.compare_digest(
        raw[:TOKEN_MAC_BYTES], _token_mac(secret, kind, scope, after)
    ):
        raise InvalidPaginationToken("the pagination token was not issued for this listing")
    return after


def as_vector(value: Any, dim: int = 128) -> Embeddings:
    """A contiguous float32 vector of ``dim`` values."""
    v = np.ascontiguousarray(np.asarray(value, dtype=np.float32).reshape(-1))
    if v.shape[0] != dim:
        raise ValueError(f"expected a {dim}-d vector, got {v.shape[0]}")
    return v


def model_to_json(model: ModelIdentity) -> str:
    return json.dumps(
        {
            "name": model.name,
            "version": model.version,
            "weights_sha256": model.weights_sha256,
            "preprocessing": model.preprocessing,
        },
        sort_keys=True,
    )


def model_from_json(text: str) -> ModelIdentity:
    d = json.loads(text)
    return ModelIdentity(
        name=d["name"],
        version=d["version"],
        weights_sha256=d["weights_sha256"],
        preprocessing=d["preprocessing"],
    )
