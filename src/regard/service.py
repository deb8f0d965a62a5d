"""Face collections, users and 1:N search with Amazon Rekognition's semantics.

:class:`Service` is the use-case layer behind Rekognition's collection operations. It
validates parameters the way Rekognition documents them, runs the face engine on
images, turns template distances into calibrated similarities (``regard.calibrate``:
``similarity = -20 * log10(FMR)``, so 80 means an estimated false-match rate of 1e-4)
and keeps everything in a :class:`regard.store.base.Store`: SQLite plus a vector index
under the data directory by default, PostgreSQL + pgvector when ``database_url`` says so.

It knows no HTTP: methods take plain Python values and return the frozen dataclasses
below, which ``regard.api`` renders as Rekognition's JSON. Errors are
:mod:`regard.errors` classes whose ``code`` is the Rekognition exception name.

A service is thread-safe, and several processes may open the same data directory.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from regard.calibrate import Scorer
from regard.engine import Engine
from regard.errors import (
    IdempotentParameterMismatch,
    InvalidParameter,
    ResourceNotFound,
    ServiceQuotaExceeded,
)
from regard.store.base import (
    MAX_FACES_PER_USER,
    Collection,
    FaceRecord,
    Neighbor,
    NewFace,
    Store,
    StoredResponse,
    User,
    as_vector,
)
from regard.types import Box, Detection, Embeddings, FaceAnalysis, ModelIdentity, RGBImage

# -- Rekognition's parameter rules ------------------------------------------------------------
COLLECTION_ID_RE = re.compile(r"^[a-zA-Z0-9_.\-]{1,255}$")
EXTERNAL_IMAGE_ID_RE = re.compile(r"^[a-zA-Z0-9_.\-:]{1,255}$")
USER_ID_RE = re.compile(r"^[a-zA-Z0-9_.\-:]{1,128}$")
FACE_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
CLIENT_TOKEN_RE = re.compile(r"^[a-zA-Z0-9\-_]{1,64}$")
TAG_KEY_RE = re.compile(r"^(?!aws:)[\w\s+=,.@:/\-]{1,128}$", re.UNICODE)
MAX_TAG_VALUE = 256
MAX_TAGS = 200
COLLECTION_ARN_RE = re.compile(r"^arn:aws:rekognition:[^:]*:[^:]*:collection/(?P<id>[a-zA-Z0-9_.\-]{1,255})$")

QUALITY_FILTERS = ("NONE", "AUTO", "LOW", "MEDIUM", "HIGH")
DEFAULT_FACE_MATCH_THRESHOLD = 80.0
DEFAULT_USER_MATCH_THRESHOLD_ASSOCIATE = 75.0
DEFAULT_USER_MATCH_THRESHOLD_SEARCH = 80.0
MAX_SEARCH_FACES = 4096
MAX_INDEX_FACES = 100


@dataclass(frozen=True, slots=True)
class QualityBar:
    """The least a face must show to be indexed at one QualityFilter level."""

    min_brightness: float  # 0-100, mean luma of the face box
    min_sharpness: float  # 0-100, regard.analyze's Laplacian measure
    min_confidence: float  # detection confidence, 0-100
    min_side_px: float  # shorter side of the face box, in image pixels
    max_yaw: float  # degrees
    max_pitch: float  # degrees


#: QualityFilter -> bar. AUTO is LOW: only clearly unusable faces are left out.
QUALITY_BARS: dict[str, QualityBar] = {
    "LOW": QualityBar(10.0, 5.0, 50.0, 20.0, 70.0, 60.0),
    "MEDIUM": QualityBar(20.0, 15.0, 70.0, 40.0, 50.0, 45.0),
    "HIGH": QualityBar(30.0, 30.0, 90.0, 64.0, 35.0, 30.0),
}
QUALITY_BARS["AUTO"] = QUALITY_BARS["LOW"]


# -- results ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CreateCollectionResult:
    """CreateCollection: CollectionArn, FaceModelVersion, StatusCode."""

    collection_arn: str
    face_model_version: str
    status_code: int = 200


@dataclass(frozen=True, slots=True)
class CollectionDescription:
    """DescribeCollection: FaceCount, UserCount, FaceModelVersion, CollectionARN, CreationTimestamp.

    ``content_version``/``content_hash`` are regard's audit hooks (not in Rekognition's response).
    """

    collection_id: str
    collection_arn: str
    face_count: int
    user_count: int
    face_model_version: str
    face_model: ModelIdentity
    created_at: float  # seconds since the epoch
    content_version: int
    content_hash: str


@dataclass(frozen=True, slots=True)
class ListCollectionsResult:
    """ListCollections: CollectionIds, FaceModelVersions (same order), NextToken."""

    collection_ids: list[str]
    face_model_versions: list[str]
    next_token: str | None


@dataclass(frozen=True, slots=True)
class IndexedFace:
    """One of IndexFaces' FaceRecords: the stored Face plus its FaceDetail (pixels of the image)."""

    face: FaceRecord
    analysis: FaceAnalysis


@dataclass(frozen=True, slots=True)
class UnindexedFace:
    """One of IndexFaces' UnindexedFaces: Reasons plus the FaceDetail."""

    reasons: list[str]
    analysis: FaceAnalysis


@dataclass(frozen=True, slots=True)
class IndexFacesResult:
    """IndexFaces: FaceRecords, UnindexedFaces, FaceModelVersion.

    ``image_width``/``image_height`` let the caller turn the analyses' pixel coordinates into
    Rekognition's ratios; each ``face.bounding_box`` already holds ratios.
    """

    face_records: list[IndexedFace]
    unindexed_faces: list[UnindexedFace]
    face_model_version: str
    image_width: int
    image_height: int


@dataclass(frozen=True, slots=True)
class ListFacesResult:
    """ListFaces: Faces, NextToken, FaceModelVersion."""

    faces: list[FaceRecord]
    next_token: str | None
    face_model_version: str


@dataclass(frozen=True, slots=True)
class UnsuccessfulFaceDeletion:
    """DeleteFaces' UnsuccessfulFaceDeletions: FaceId, UserId, Reasons.

    Reasons: ASSOCIATED_TO_AN_EXISTING_USER, FACE_NOT_FOUND.
    """

    face_id: str
    user_id: str | None
    reasons: list[str]


@dataclass(frozen=True, slots=True)
class DeleteFacesResult:
    """DeleteFaces: DeletedFaces, UnsuccessfulFaceDeletions."""

    deleted_faces: list[str]
    unsuccessful: list[UnsuccessfulFaceDeletion]


@dataclass(frozen=True, slots=True)
class FaceMatch:
    """A FaceMatches entry: Similarity (0-100), the Face, plus regard's estimated FMR and distance."""

    similarity: float
    fmr: float
    distance: float  # Euclidean distance between the templates
    face: FaceRecord
    score: float = 0.0  # the distance after fair score normalization (what similarity is read from)


@dataclass(frozen=True, slots=True)
class SearchFacesResult:
    """SearchFaces: SearchedFaceId, FaceMatches (most similar first), FaceModelVersion."""

    searched_face_id: str
    face_matches: list[FaceMatch]
    face_model_version: str


@dataclass(frozen=True, slots=True)
class SearchFacesByImageResult:
    """SearchFacesByImage: SearchedFaceBoundingBox (ratios), SearchedFaceConfidence, FaceMatches."""

    searched_face_bounding_box: Box
    searched_face_confidence: float
    face_matches: list[FaceMatch]
    face_model_version: str


@dataclass(frozen=True, slots=True)
class UnsuccessfulFaceAssociation:
    """AssociateFaces' UnsuccessfulFaceAssociations: FaceId, UserId, Confidence, Reasons.

    Reasons: FACE_NOT_FOUND, ASSOCIATED_TO_A_DIFFERENT_USER, LOW_MATCH_CONFIDENCE.
    """

    face_id: str
    user_id: str | None
    confidence: float | None
    reasons: list[str]


@dataclass(frozen=True, slots=True)
class AssociateFacesResult:
    """AssociateFaces: AssociatedFaces, UnsuccessfulFaceAssociations, UserStatus."""

    associated_faces: list[str]
    unsuccessful: list[UnsuccessfulFaceAssociation]
    user_status: str


@dataclass(frozen=True, slots=True)
class UnsuccessfulFaceDisassociation:
    """DisassociateFaces' UnsuccessfulFaceDisassociations. Reasons: FACE_NOT_FOUND,
    ASSOCIATED_TO_A_DIFFERENT_USER."""

    face_id: str
    user_id: str | None
    reasons: list[str]


@dataclass(frozen=True, slots=True)
class DisassociateFacesResult:
    """DisassociateFaces: DisassociatedFaces, UnsuccessfulFaceDisassociations, UserStatus."""

    disassociated_faces: list[str]
    unsuccessful: list[UnsuccessfulFaceDisassociation]
    user_status: str


@dataclass(frozen=True, slots=True)
class ListUsersResult:
    """ListUsers: Users (UserId, UserStatus), NextToken."""

    users: list[User]
    next_token: str | None


@dataclass(frozen=True, slots=True)
class UserMatch:
    """A UserMatches entry: Similarity and the User (UserId, UserStatus), plus the estimated FMR."""

    similarity: float
    fmr: float
    user: User


@dataclass(frozen=True, slots=True)
class SearchUsersResult:
    """SearchUsers: UserMatches, FaceModelVersion, SearchedFace (FaceId) or SearchedUser (UserId)."""

    user_matches: list[UserMatch]
    face_model_version: str
    searched_face_id: str | None = None
    searched_user_id: str | None = None


@dataclass(frozen=True, slots=True)
class UnsearchedFace:
    """SearchUsersByImage's UnsearchedFaces: Reasons (e.g. FACE_NOT_LARGEST) and the FaceDetail."""

    reasons: list[str]
    analysis: FaceAnalysis


@dataclass(frozen=True, slots=True)
class SearchUsersByImageResult:
    """SearchUsersByImage: UserMatches, FaceModelVersion, SearchedFace (FaceDetail), UnsearchedFaces."""

    user_matches: list[UserMatch]
    face_model_version: str
    searched_face: FaceAnalysis
    unsearched_faces: list[UnsearchedFace]
    image_width: int
    image_height: int


@dataclass(frozen=True, slots=True)
class _Probe:
    analysis: FaceAnalysis
    embedding: Embeddings
    others: list[FaceAnalysis] = field(default_factory=list)


# -- validation helpers -------------------------------------------------------------------------
def _check(pattern: re.Pattern[str], value: object, name: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise InvalidParameter(f"{name} {value!r} does not satisfy the constraint {pattern.pattern}")
    return value


def _check_range(value: float, low: float, high: float, name: str) -> None:
    if not (low <= value <= high):
        raise InvalidParameter(f"{name} must be between {low:g} and {high:g}, got {value!r}")


def _check_face_ids(face_ids: Sequence[str], low: int, high: int) -> list[str]:
    ids = list(face_ids)
    if not (low <= len(ids) <= high):
        raise InvalidParameter(f"FaceIds must hold between {low} and {high} ids, got {len(ids)}")
    for f in ids:
        _check(FACE_ID_RE, f, "FaceId")
    return list(dict.fromkeys(ids))


def _check_tags(tags: Mapping[str, str]) -> dict[str, str]:
    if len(tags) > MAX_TAGS:
        raise InvalidParameter(f"at most {MAX_TAGS} tags")
    for k, v in tags.items():
        _check(TAG_KEY_RE, k, "tag key")
        if not isinstance(v, str) or len(v) > MAX_TAG_VALUE:
            raise InvalidParameter(
                f"tag value for {k!r} must be a string of at most {MAX_TAG_VALUE} characters"
            )
    return dict(tags)


def _params_hash(params: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()


class Service:
    """Rekognition's collection, face, user and tag operations over a store and a face engine."""

    def __init__(
        self,
        store: Store,
        engine: Engine | None = None,
        *,
        region: str = "us-east-1",
        account_id: str = "000000000000",
        scorer: Scorer | None = None,
    ) -> None:
        self.store = store
        self._engine = engine
        self._scorer = scorer
        self.region = region
        self.account_id = account_id

    @classmethod
    def open(
        cls,
        data_dir: Path,
        *,
        engine: Engine | None = None,
        database_url: str | None = None,
        region: str = "us-east-1",
        account_id: str = "000000000000",
        scorer: Scorer | None = None,
    ) -> Service:
        """Open (creating if needed) the collections under ``data_dir``.

        ``database_url`` ``postgresql://...`` keeps everything in PostgreSQL + pgvector
        instead of the embedded SQLite database ``data_dir/regard.db`` and its index files.
        ``scorer`` overrides the engine's scoring (normalizer and calibration table; tests, re-calibration).
        """
        store: Store
        if database_url:
            if not database_url.startswith(("postgresql://", "postgres://")):
                raise InvalidParameter("database_url must start with postgresql://")
            from regard.store.postgres import PostgresStore

            store = PostgresStore(database_url)
        else:
            from regard.store.sqlite import SqliteStore

            store = SqliteStore(Path(data_dir))
        return cls(store, engine, region=region, account_id=account_id, scorer=scorer)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- engine-derived values --------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        if self._engine is None:
            from regard.engine import default_engine

            self._engine = default_engine()
        return self._engine

    @property
    def scorer(self) -> Scorer:
        """Templates -> normalized score -> similarity and FMR (the engine's, unless one was given)."""
        if self._scorer is None:
            self._scorer = self.engine.scorer
        return self._scorer

    @property
    def face_model(self) -> ModelIdentity:
        """The identity of the engine's embedding model (what new collections are bound to)."""
        return self.engine.model_identity

    def model_version(self, c: Collection) -> str:
        """FaceModelVersion: the templates' model identity joined by the scoring parameters' hash.

        Templates depend on the model alone; similarities also on the normalizer and calibration
        table, so a client (and the audit log) can tell which scale a similarity was read from.
        """
        return f"{c.face_model.key}+scoring-{self.scorer.key}"

    def collection_arn(self, collection_id: str) -> str:
        return f"arn:aws:rekognition:{self.region}:{self.account_id}:collection/{collection_id}"

    # -- collections ------------------------------------------------------------------------
    def create_collection(
        self, collection_id: str, tags: Mapping[str, str] | None = None
    ) -> CreateCollectionResult:
        """CreateCollection. ResourceAlreadyExists if the id is taken."""
        _check(COLLECTION_ID_RE, collection_id, "CollectionId")
        clean_tags = _check_tags(tags or {})
        c = self.store.create_collection(
            collection_id, self.collection_arn(collection_id), self.face_model, clean_tags
        )
        return CreateCollectionResult(collection_arn=c.arn, face_model_version=self.model_version(c))

    def describe_collection(self, collection_id: str) -> CollectionDescription:
        """DescribeCollection."""
        c = self._collection(collection_id)
        return CollectionDescription(
            collection_id=c.collection_id,
            collection_arn=c.arn,
            face_count=c.face_count,
            user_count=c.user_count,
            face_model_version=self.model_version(c),
            face_model=c.face_model,
            created_at=c.created_at,
            content_version=c.content_version,
            content_hash=c.content_hash,
        )

    def list_collections(
        self, max_results: int | None = None, next_token: str | None = None
    ) -> ListCollectionsResult:
        """ListCollections (MaxResults 0-4096; 0 or None means up to 1000)."""
        limit = self._page_size(max_results, 4096, 1000, allow_zero=True)
        page = self.store.list_collections(limit, next_token)
        return ListCollectionsResult(
            collection_ids=[c.collection_id for c in page.items],
            face_model_versions=[self.model_version(c) for c in page.items],
            next_token=page.next_token,
        )

    def delete_collection(self, collection_id: str) -> int:
        """DeleteCollection: every face, template, user and tag goes; returns the StatusCode (200)."""
        _check(COLLECTION_ID_RE, collection_id, "CollectionId")
        self.store.delete_collection(collection_id)
        return 200

    # -- faces ------------------------------------------------------------------------------
    def index_faces(
        self,
        collection_id: str,
        image: bytes | RGBImage,
        *,
        external_image_id: str | None = None,
        max_faces: int | None = None,
        quality_filter: str = "AUTO",
        source_note: str | None = None,
        legal_basis: str | None = None,
    ) -> IndexFacesResult:
        """IndexFaces: detect faces (largest first), leave out those under the QualityFilter bar or
        beyond MaxFaces (reported in UnindexedFaces with reasons), store the rest atomically.

        ``source_note`` and ``legal_basis`` are optional provenance kept with each face.
        """
        c = self._collection(collection_id)
        if external_image_id is not None:
            _check(EXTERNAL_IMAGE_ID_RE, external_image_id, "ExternalImageId")
        if max_faces is not None:
            _check_range(max_faces, 1, MAX_INDEX_FACES, "MaxFaces")
        if quality_filter not in QUALITY_FILTERS:
            raise InvalidParameter(f"QualityFilter must be one of {', '.join(QUALITY_FILTERS)}")
        self._check_model(c)
        rgb = self._image(image)
        height, width = rgb.shape[:2]
        engine = self.engine
        detections = engine.detect(rgb, max_faces=MAX_INDEX_FACES)
        analyses = [engine.analyze(rgb, d) for d in detections]
        kept: list[FaceAnalysis] = []
        unindexed: list[UnindexedFace] = []
        for a in analyses:
            reasons = quality_reasons(a, quality_filter)
            if reasons:
                unindexed.append(UnindexedFace(reasons=reasons, analysis=a))
            else:
                kept.append(a)
        if max_faces is not None and len(kept) > max_faces:
            kept.sort(key=lambda a: a.detection.box.area, reverse=True)
            unindexed.extend(UnindexedFace(["EXCEEDS_MAX_FACES"], a) for a in kept[max_faces:])
            kept = kept[:max_faces]
        records: list[IndexedFace] = []
        if kept:
            vectors = engine.embed(rgb, [a.detection for a in kept])
            image_id = str(uuid.uuid4())
            new = [
                NewFace(
                    face_id=str(uuid.uuid4()),
                    image_id=image_id,
                    external_image_id=external_image_id,
                    bounding_box=_ratios(a.detection.box, width, height),
                    confidence=float(a.detection.confidence),
                    embedding=as_vector(v),
                    brightness=float(a.quality.brightness),
                    sharpness=float(a.quality.sharpness),
                    source_note=source_note,
                    legal_basis=legal_basis,
                )
                for a, v in zip(kept, vectors, strict=True)
            ]
            stored = self.store.add_faces(collection_id, new)
            records = [IndexedFace(face=f, analysis=a) for f, a in zip(stored, kept, strict=True)]
        return IndexFacesResult(
            face_records=records,
            unindexed_faces=unindexed,
            face_model_version=self.model_version(c),
            image_width=int(width),
            image_height=int(height),
        )

    def add_templates(self, collection_id: str, faces: Sequence[NewFace]) -> list[FaceRecord]:
        """Store ready-made templates (not a Rekognition operation: imports, tests and benchmarks).

        The templates must come from the collection's face model.
        """
        self._collection(collection_id)
        for f in faces:
            _check(FACE_ID_RE, f.face_id, "FaceId")
            if f.external_image_id is not None:
                _check(EXTERNAL_IMAGE_ID_RE, f.external_image_id, "ExternalImageId")
        return self.store.add_faces(collection_id, list(faces))

    def list_faces(
        self,
        collection_id: str,
        *,
        max_results: int | None = None,
        next_token: str | None = None,
        user_id: str | None = None,
        face_ids: Sequence[str] | None = None,
    ) -> ListFacesResult:
        """ListFaces (MaxResults 0-4096, default 1000), optionally only a user's faces or given FaceIds."""
        c = self._collection(collection_id)
        limit = self._page_size(max_results, 4096, 1000, allow_zero=True)
        if user_id is not None:
            _check(USER_ID_RE, user_id, "UserId")
        ids = _check_face_ids(face_ids, 1, 4096) if face_ids is not None else None
        page = self.store.list_faces(
            collection_id, user_id=user_id, face_ids=ids, max_results=limit, token=next_token
        )
        return ListFacesResult(
            faces=page.items, next_token=page.next_token, face_model_version=self.model_version(c)
        )

    def delete_faces(self, collection_id: str, face_ids: Sequence[str]) -> DeleteFacesResult:
        """DeleteFaces (1-4096 ids). Faces associated with a user are not deleted (as in Rekognition)."""
        self._collection(collection_id)
        ids = _check_face_ids(face_ids, 1, 4096)
        found = self.store.get_faces(collection_id, ids)
        unsuccessful: list[UnsuccessfulFaceDeletion] = []
        deletable: list[str] = []
        for f in ids:
            rec = found.get(f)
            if rec is None:
                unsuccessful.append(UnsuccessfulFaceDeletion(f, None, ["FACE_NOT_FOUND"]))
            elif rec.user_id is not None:
                unsuccessful.append(
                    UnsuccessfulFaceDeletion(f, rec.user_id, ["ASSOCIATED_TO_AN_EXISTING_USER"])
                )
            else:
                deletable.append(f)
        gone = set(self.store.delete_faces(collection_id, deletable) if deletable else [])
        deleted = [f for f in deletable if f in gone]
        for f in deletable:
            if f not in gone:  # deleted or associated concurrently
                unsuccessful.append(UnsuccessfulFaceDeletion(f, None, ["FACE_NOT_FOUND"]))
        return DeleteFacesResult(deleted_faces=deleted, unsuccessful=unsuccessful)

    # -- face search ------------------------------------------------------------------------
    def search_faces(
        self,
        collection_id: str,
        face_id: str,
        *,
        max_faces: int | None = None,
        face_match_threshold: float | None = None,
    ) -> SearchFacesResult:
        """SearchFaces: faces like a stored face (the face itself is left out)."""
        c = self._collection(collection_id)
        _check(FACE_ID_RE, face_id, "FaceId")
        rec = self.store.get_faces(collection_id, [face_id]).get(face_id)
        if rec is None:
            raise ResourceNotFound(f"face {face_id} is not in collection {collection_id}")
        matches = self._match_faces(c, rec.embedding, max_faces, face_match_threshold, exclude={face_id})
        return SearchFacesResult(
            searched_face_id=face_id, face_matches=matches, face_model_version=self.model_version(c)
        )

    def search_faces_by_image(
        self,
        collection_id: str,
        image: bytes | RGBImage,
        *,
        max_faces: int | None = None,
        face_match_threshold: float | None = None,
        quality_filter: str = "NONE",
    ) -> SearchFacesByImageResult:
        """SearchFacesByImage: the image's largest face against the collection.

        InvalidParameter when the image holds no face (or none passes QualityFilter).
        """
        c = self._collection(collection_id)
        self._check_search_params(max_faces, face_match_threshold)
        self._check_model(c)
        rgb = self._image(image)
        probe = self._probe(rgb, quality_filter)
        matches = self._match_faces(c, probe.embedding, max_faces, face_match_threshold)
        h, w = rgb.shape[:2]
        return SearchFacesByImageResult(
            searched_face_bounding_box=_ratios(probe.analysis.detection.box, w, h),
            searched_face_confidence=float(probe.analysis.detection.confidence),
            face_matches=matches,
            face_model_version=self.model_version(c),
        )

    def search_faces_by_vector(
        self,
        collection_id: str,
        vector: Embeddings,
        *,
        max_faces: int | None = None,
        face_match_threshold: float | None = None,
    ) -> list[FaceMatch]:
        """Faces like a template (not a Rekognition operation: tests, benchmarks, tooling)."""
        c = self._collection(collection_id)
        return self._match_faces(c, as_vector(vector), max_faces, face_match_threshold)

    # -- users ------------------------------------------------------------------------------
    def create_user(
        self, collection_id: str, user_id: str, *, client_request_token: str | None = None
    ) -> None:
        """CreateUser. ResourceAlreadyExists unless a repeat of the same ClientRequestToken."""
        self._collection(collection_id)
        _check(USER_ID_RE, user_id, "UserId")
        self._idempotent(
            collection_id,
            "CreateUser",
            client_request_token,
            {"UserId": user_id},
            lambda: _done(self.store.create_user(collection_id, user_id)),
        )

    def delete_user(
        self, collection_id: str, user_id: str, *, client_request_token: str | None = None
    ) -> None:
        """DeleteUser: the user goes; its faces stay in the collection, unassociated."""
        self._collection(collection_id)
        _check(USER_ID_RE, user_id, "UserId")

        def run() -> dict[str, Any]:
            self.store.delete_user(collection_id, user_id)
            return {}

        self._idempotent(
            collection_id,
            "DeleteUser",
            client_request_token,
            {"UserId": user_id},
            run,
        )

    def list_users(
        self, collection_id: str, *, max_results: int | None = None, next_token: str | None = None
    ) -> ListUsersResult:
        """ListUsers (MaxResults 1-500, default 500)."""
        self._collection(collection_id)
        limit = self._page_size(max_results, 500, 500, allow_zero=False)
        page = self.store.list_users(collection_id, limit, next_token)
        return ListUsersResult(users=page.items, next_token=page.next_token)

    def associate_faces(
        self,
        collection_id: str,
        user_id: str,
        face_ids: Sequence[str],
        *,
        user_match_threshold: float | None = None,
        client_request_token: str | None = None,
    ) -> AssociateFacesResult:
        """AssociateFaces (1-100 FaceIds). A face joins the user only if it matches the user's faces
        (those already associated, else the first face accepted in this call) at UserMatchThreshold
        (default 75) or more; ServiceQuotaExceeded past 100 faces per user."""
        self._collection(collection_id)
        _check(USER_ID_RE, user_id, "UserId")
        ids = _check_face_ids(face_ids, 1, 100)
        threshold = (
            DEFAULT_USER_MATCH_THRESHOLD_ASSOCIATE if user_match_threshold is None else user_match_threshold
        )
        _check_range(threshold, 0, 100, "UserMatchThreshold")

        def run() -> dict[str, Any]:
            user = self.store.get_user(collection_id, user_id)
            found = self.store.get_faces(collection_id, ids)
            refs: list[Embeddings] = []
            if user.face_count:
                page = self.store.list_faces(
                    collection_id, user_id=user_id, face_ids=None, max_results=MAX_FACES_PER_USER, token=None
                )
                refs = [f.embedding for f in page.items]
            unsuccessful: list[dict[str, Any]] = []
            accept: list[str] = []
            already: list[str] = []
            for fid in ids:
                rec = found.get(fid)
                if rec is None:
                    unsuccessful.append({"FaceId": fid, "Reasons": ["FACE_NOT_FOUND"]})
                    continue
                if rec.user_id is not None and rec.user_id != user_id:
                    unsuccessful.append(
                        {"FaceId": fid, "UserId": rec.user_id, "Reasons": ["ASSOCIATED_TO_A_DIFFERENT_USER"]}
                    )
                    continue
                if rec.user_id == user_id:
                    already.append(fid)
                    continue
                if refs:
                    sim = max(self.scorer.compare(rec.embedding, r).similarity for r in refs)
                    if sim < threshold:
                        unsuccessful.append(
                            {
                                "FaceId": fid,
                                "UserId": user_id,
                                "Confidence": sim,
                                "Reasons": ["LOW_MATCH_CONFIDENCE"],
                            }
                        )
                        continue
                accept.append(fid)
                refs.append(rec.embedding)
            if user.face_count + len(accept) > MAX_FACES_PER_USER:
                raise ServiceQuotaExceeded(f"a user holds at most {MAX_FACES_PER_USER} faces")
            stored = set(self.store.associate_faces(collection_id, user_id, accept) if accept else [])
            done = [f for f in accept if f in stored]
            for fid in accept:
                if fid not in done:
                    unsuccessful.append({"FaceId": fid, "Reasons": ["ASSOCIATED_TO_A_DIFFERENT_USER"]})
            status = self.store.get_user(collection_id, user_id).status
            return {"Associated": done + already, "Unsuccessful": unsuccessful, "UserStatus": status}

        out = self._idempotent(
            collection_id,
            "AssociateFaces",
            client_request_token,
            {"UserId": user_id, "FaceIds": ids, "UserMatchThreshold": threshold},
            run,
        )
        return AssociateFacesResult(
            associated_faces=list(out["Associated"]),
            unsuccessful=[
                UnsuccessfulFaceAssociation(
                    u["FaceId"], u.get("UserId"), u.get("Confidence"), list(u["Reasons"])
                )
                for u in out["Unsuccessful"]
            ],
            user_status=str(out["UserStatus"]),
        )

    def disassociate_faces(
        self,
        collection_id: str,
        user_id: str,
        face_ids: Sequence[str],
        *,
        client_request_token: str | None = None,
    ) -> DisassociateFacesResult:
        """DisassociateFaces (1-100 FaceIds)."""
        self._collection(collection_id)
        _check(USER_ID_RE, user_id, "UserId")
        ids = _check_face_ids(face_ids, 1, 100)

        def run() -> dict[str, Any]:
            self.store.get_user(collection_id, user_id)
            found = self.store.get_faces(collection_id, ids)
            unsuccessful: list[dict[str, Any]] = []
            mine: list[str] = []
            for fid in ids:
                rec = found.get(fid)
                if rec is None:
                    unsuccessful.append({"FaceId": fid, "Reasons": ["FACE_NOT_FOUND"]})
                elif rec.user_id != user_id:
                    unsuccessful.append(
                        {"FaceId": fid, "UserId": rec.user_id, "Reasons": ["ASSOCIATED_TO_A_DIFFERENT_USER"]}
                    )
                else:
                    mine.append(fid)
            gone = set(self.store.disassociate_faces(collection_id, user_id, mine) if mine else [])
            done = [f for f in mine if f in gone]
            status = self.store.get_user(collection_id, user_id).status
            return {"Disassociated": done, "Unsuccessful": unsuccessful, "UserStatus": status}

        out = self._idempotent(
            collection_id, "DisassociateFaces", client_request_token, {"UserId": user_id, "FaceIds": ids}, run
        )
        return DisassociateFacesResult(
            disassociated_faces=list(out["Disassociated"]),
            unsuccessful=[
                UnsuccessfulFaceDisassociation(u["FaceId"], u.get("UserId"), list(u["Reasons"]))
                for u in out["Unsuccessful"]
            ],
            user_status=str(out["UserStatus"]),
        )

    def search_users(
        self,
        collection_id: str,
        *,
        user_id: str | None = None,
        face_id: str | None = None,
        user_match_threshold: float | None = None,
        max_users: int | None = None,
    ) -> SearchUsersResult:
        """SearchUsers by UserId or FaceId (exactly one). A user's similarity is the best over its faces;
        the searched user itself is left out."""
        c = self._collection(collection_id)
        if (user_id is None) == (face_id is None):
            raise InvalidParameter("give exactly one of UserId and FaceId")
        threshold, limit = self._user_search_params(user_match_threshold, max_users)
        probes: list[Embeddings]
        if user_id is not None:
            _check(USER_ID_RE, user_id, "UserId")
            self.store.get_user(collection_id, user_id)
            page = self.store.list_faces(
                collection_id, user_id=user_id, face_ids=None, max_results=MAX_FACES_PER_USER, token=None
            )
            probes = [f.embedding for f in page.items]
        else:
            assert face_id is not None
            _check(FACE_ID_RE, face_id, "FaceId")
            rec = self.store.get_faces(collection_id, [face_id]).get(face_id)
            if rec is None:
                raise ResourceNotFound(f"face {face_id} is not in collection {collection_id}")
            probes = [rec.embedding]
        matches = self._match_users(c, probes, threshold, limit, exclude_user=user_id, exclude_face=face_id)
        return SearchUsersResult(
            user_matches=matches,
            face_model_version=self.model_version(c),
            searched_face_id=face_id,
            searched_user_id=user_id,
        )

    def search_users_by_image(
        self,
        collection_id: str,
        image: bytes | RGBImage,
        *,
        user_match_threshold: float | None = None,
        max_users: int | None = None,
        quality_filter: str = "NONE",
    ) -> SearchUsersByImageResult:
        """SearchUsersByImage: the largest face against the collection's users; other faces are
        reported as UnsearchedFaces (FACE_NOT_LARGEST)."""
        c = self._collection(collection_id)
        threshold, limit = self._user_search_params(user_match_threshold, max_users)
        self._check_model(c)
        rgb = self._image(image)
        probe = self._probe(rgb, quality_filter)
        matches = self._match_users(c, [probe.embedding], threshold, limit, exclude_user=None)
        h, w = rgb.shape[:2]
        return SearchUsersByImageResult(
            user_matches=matches,
            face_model_version=self.model_version(c),
            searched_face=probe.analysis,
            unsearched_faces=[UnsearchedFace(["FACE_NOT_LARGEST"], a) for a in probe.others],
            image_width=int(w),
            image_height=int(h),
        )

    # -- tags -------------------------------------------------------------------------------
    def tag_resource(self, resource_arn: str, tags: Mapping[str, str]) -> None:
        """TagResource on a collection ARN (at most 200 tags in all)."""
        cid = self._collection_from_arn(resource_arn)
        clean = _check_tags(tags)
        if not clean:
            raise InvalidParameter("Tags must hold at least one tag")
        current = self.store.tags(cid)
        if len(set(current) | set(clean)) > MAX_TAGS:
            raise ServiceQuotaExceeded(f"a collection holds at most {MAX_TAGS} tags")
        self.store.tag(cid, clean)

    def untag_resource(self, resource_arn: str, tag_keys: Sequence[str]) -> None:
        """UntagResource."""
        cid = self._collection_from_arn(resource_arn)
        keys = list(tag_keys)
        if not (1 <= len(keys) <= MAX_TAGS):
            raise InvalidParameter(f"TagKeys must hold between 1 and {MAX_TAGS} keys")
        for k in keys:
            _check(TAG_KEY_RE, k, "tag key")
        self.store.untag(cid, keys)

    def list_tags_for_resource(self, resource_arn: str) -> dict[str, str]:
        """ListTagsForResource."""
        return self.store.tags(self._collection_from_arn(resource_arn))

    # -- maintenance ------------------------------------------------------------------------
    def compact(self) -> None:
        """Make erasure physical (checkpoint + VACUUM, index files rewritten without removed vectors)."""
        self.store.compact()

    # -- internals --------------------------------------------------------------------------
    def _collection(self, collection_id: str) -> Collection:
        _check(COLLECTION_ID_RE, collection_id, "CollectionId")
        return self.store.get_collection(collection_id)

    def _collection_from_arn(self, arn: str) -> str:
        m = COLLECTION_ARN_RE.match(arn or "")
        if m is None:
            raise InvalidParameter(f"ResourceArn {arn!r} is not a collection ARN")
        c = self.store.get_collection(m.group("id"))
        if c.arn != arn:
            raise ResourceNotFound(f"no collection has the ARN {arn}")
        return c.collection_id

    def _check_model(self, c: Collection) -> None:
        mine = self.face_model
        if (mine.name, mine.version, mine.weights_sha256) != (
            c.face_model.name,
            c.face_model.version,
            c.face_model.weights_sha256,
        ):
            raise InvalidParameter(
                f"collection {c.collection_id} holds templates of {c.face_model.key}; "
                f"this engine makes {mine.key}"
            )

    def _image(self, image: bytes | RGBImage) -> RGBImage:
        if isinstance(image, bytes | bytearray | memoryview):
            return self.engine.load_image(bytes(image))
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise InvalidParameter("image must be encoded bytes or an H x W x 3 uint8 RGB array")
        return arr

    def _probe(self, rgb: RGBImage, quality_filter: str) -> _Probe:
        if quality_filter not in QUALITY_FILTERS:
            raise InvalidParameter(f"QualityFilter must be one of {', '.join(QUALITY_FILTERS)}")
        engine = self.engine
        dets: list[Detection] = engine.detect(rgb, max_faces=MAX_INDEX_FACES)
        if not dets:
            raise InvalidParameter("There are no faces in the image. Should be at least 1.")
        largest = max(dets, key=lambda d: d.box.area)
        analysis = engine.analyze(rgb, largest)
        if quality_reasons(analysis, quality_filter):
            raise InvalidParameter("The largest face in the image does not meet the QualityFilter bar.")
        vector = engine.embed(rgb, [largest])[0]
        others = [engine.analyze(rgb, d) for d in dets if d is not largest]
        return _Probe(analysis=analysis, embedding=as_vector(vector), others=others)

    @staticmethod
    def _check_search_params(max_faces: int | None, threshold: float | None) -> None:
        if max_faces is not None:
            _check_range(max_faces, 1, MAX_SEARCH_FACES, "MaxFaces")
        if threshold is not None:
            _check_range(threshold, 0, 100, "FaceMatchThreshold")

    def _match_faces(
        self,
        c: Collection,
        probe: Embeddings,
        max_faces: int | None,
        threshold: float | None,
        exclude: set[str] | None = None,
    ) -> list[FaceMatch]:
        self._check_search_params(max_faces, threshold)
        limit = 80 if max_faces is None else max_faces
        sim_min = DEFAULT_FACE_MATCH_THRESHOLD if threshold is None else threshold
        hits = self._scored_neighbors(c, probe, limit, sim_min, exclude or set())
        scorer = self.scorer
        out: list[FaceMatch] = []
        for score, h in hits:
            sim = scorer.similarity(score)
            if sim < sim_min:
                continue
            out.append(
                FaceMatch(
                    similarity=sim, fmr=scorer.fmr_at(score), distance=h.distance, face=h.face, score=score
                )
            )
        return out[:limit]

    def _scored_neighbors(
        self, c: Collection, probe: Embeddings, limit: int, similarity: float, exclude: set[str]
    ) -> list[tuple[float, Neighbor]]:
        """The ``limit`` faces with the lowest normalized score at or under ``similarity``'s, best first.

        The index ranks by raw distance; a face's score is its distance minus the probe's and its
        own half offset. Any face whose score passes has a distance at most ``threshold + slack``
        (slack: the probe's half offset plus the largest one a face can have), so the search asks
        for faces within that radius, and for more of them until every face it did not fetch
        (all farther than the last fetched) provably scores worse than the ``limit``-th it kept.
        The result is what an exhaustive search under the normalized score returns (up to the
        index's own approximation).
        """
        scorer = self.scorer
        threshold = math.inf if similarity <= 0 else scorer.score_for_similarity(similarity) + 1e-9
        probe_half = scorer.half_offset(probe)
        slack = probe_half + scorer.max_half_offset
        total = max(1, c.face_count)
        k = min(total, limit + len(exclude) + 8)
        while True:
            hits = self.store.nearest(c.collection_id, probe, k, threshold + slack)
            kept = [h for h in hits if h.face.face_id not in exclude]
            halves = scorer.half_offsets(np.stack([h.face.embedding for h in kept])) if kept else np.zeros(0)
            scores = [
                (h.distance - probe_half - float(half), h) for h, half in zip(kept, halves, strict=True)
            ]
            scored = sorted((x for x in scores if x[0] <= threshold), key=lambda x: (x[0], x[1].face.face_id))
            if len(hits) < k or k >= total:
                break  # every face within the radius was fetched
            unseen_best = max(h.distance for h in hits) - slack
            if len(scored) >= limit and scored[limit - 1][0] < unseen_best:
                break  # nothing farther can beat (or tie with) the ones kept
            k = min(total, k * 4)
        return scored[:limit]

    @staticmethod
    def _user_search_params(threshold: float | None, max_users: int | None) -> tuple[float, int]:
        t = DEFAULT_USER_MATCH_THRESHOLD_SEARCH if threshold is None else threshold
        _check_range(t, 0, 100, "UserMatchThreshold")
        limit = 500 if max_users is None else max_users
        _check_range(limit, 1, 500, "MaxUsers")
        return t, int(limit)

    def _match_users(
        self,
        c: Collection,
        probes: Sequence[Embeddings],
        threshold: float,
        limit: int,
        exclude_user: str | None,
        exclude_face: str | None = None,
    ) -> list[UserMatch]:
        scorer = self.scorer
        k = min(MAX_SEARCH_FACES, max(c.face_count, 1))
        best: dict[str, float] = {}
        for p in probes:
            for score, h in self._scored_neighbors(
                c, p, k, threshold, {exclude_face} if exclude_face else set()
            ):
                uid = h.face.user_id
                if uid is None or uid == exclude_user:
                    continue
                if uid not in best or score < best[uid]:
                    best[uid] = score
        ranked = sorted(best.items(), key=lambda kv: (kv[1], kv[0]))
        out: list[UserMatch] = []
        for uid, score in ranked:
            sim = scorer.similarity(score)
            if sim < threshold:
                continue
            try:
                user = self.store.get_user(c.collection_id, uid)
            except ResourceNotFound:
                continue  # deleted meanwhile
            out.append(UserMatch(similarity=sim, fmr=scorer.fmr_at(score), user=user))
            if len(out) >= limit:
                break
        return out

    def _idempotent(
        self,
        collection_id: str,
        operation: str,
        token: str | None,
        params: Mapping[str, Any],
        run: Callable[[], dict[str, Any]],
    ) -> dict[str, Any]:
        if token is None:
            return run()
        _check(CLIENT_TOKEN_RE, token, "ClientRequestToken")
        digest = _params_hash(params)
        previous = self.store.recall_request(collection_id, operation, token)
        if previous is not None:
            if previous.params_hash != digest:
                raise IdempotentParameterMismatch(
                    f"ClientRequestToken {token!r} was used with different parameters"
                )
            return previous.response
        response = run()
        self.store.remember_request(collection_id, operation, token, StoredResponse(digest, response))
        return response

    @staticmethod
    def _page_size(value: int | None, high: int, default: int, *, allow_zero: bool) -> int:
        if value is None or (allow_zero and value == 0):
            return default
        _check_range(value, 0 if allow_zero else 1, high, "MaxResults")
        return int(value)


def quality_reasons(analysis: FaceAnalysis, quality_filter: str) -> list[str]:
    """Why a face falls short of a QualityFilter level (empty: it passes). NONE passes everything."""
    if quality_filter == "NONE":
        return []
    bar = QUALITY_BARS[quality_filter]
    d = analysis.detection
    reasons: list[str] = []
    if analysis.quality.brightness < bar.min_brightness:
        reasons.append("LOW_BRIGHTNESS")
    if analysis.quality.sharpness < bar.min_sharpness:
        reasons.append("LOW_SHARPNESS")
    if d.confidence < bar.min_confidence:
        reasons.append("LOW_CONFIDENCE")
    if min(d.box.width, d.box.height) < bar.min_side_px:
        reasons.append("SMALL_BOUNDING_BOX")
    if abs(analysis.pose.yaw) > bar.max_yaw or abs(analysis.pose.pitch) > bar.max_pitch:
        reasons.append("EXTREME_POSE")
    if len(reasons) >= 2:
        reasons.append("LOW_FACE_QUALITY")
    return reasons


def _ratios(box: Box, width: int, height: int) -> Box:
    """A pixel box as fractions of the image (Rekognition's BoundingBox)."""
    return Box(
        left=box.left / width, top=box.top / height, width=box.width / width, height=box.height / height
    )


def _done(_: object) -> dict[str, Any]:
    """An empty response to remember for an idempotent operation."""
    return {}
