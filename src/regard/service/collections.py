"""Collections: CreateCollection, DescribeCollection, ListCollections, DeleteCollection."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from regard.service.base import Removal, ServiceBase
from regard.service.rules import COLLECTION_ID_RE, check, check_tags, page_size
from regard.types import ModelIdentity


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
    #: What FaceModelVersion stands for: model, preprocessing, scoring (DescribeCollection's
    #: ``RegardFaceModel``, which botocore and the AWS SDKs ignore as an unknown field).
    face_model_identity: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ListCollectionsResult:
    """ListCollections: CollectionIds, FaceModelVersions (same order), NextToken."""

    collection_ids: list[str]
    face_model_versions: list[str]
    next_token: str | None


@dataclass(frozen=True, slots=True)
class DeleteCollectionResult:
    """DeleteCollection: StatusCode (:meth:`CollectionOperations.delete_collection` answers the
    bare code; the API's typed call wraps it, so every operation has a result type)."""

    status_code: int = 200


class CollectionOperations(ServiceBase):
    """Rekognition's collection operations."""

    def create_collection(
        self, collection_id: str, tags: Mapping[str, str] | None = None
    ) -> CreateCollectionResult:
        """CreateCollection. ResourceAlreadyExists if the id is taken."""
        check(COLLECTION_ID_RE, collection_id, "CollectionId")
        clean_tags = check_tags(tags or {})
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
            face_model_identity=self.model_description(c),
        )

    def list_collections(
        self, max_results: int | None = None, next_token: str | None = None
    ) -> ListCollectionsResult:
        """ListCollections (MaxResults 0-4096; 0 or None means up to 1000)."""
        limit = page_size(max_results, 4096, 1000, allow_zero=True)
        page = self.store.list_collections(limit, next_token)
        return ListCollectionsResult(
            collection_ids=[c.collection_id for c in page.items],
            face_model_versions=[self.model_version(c) for c in page.items],
            next_token=page.next_token,
        )

    def delete_collection(self, collection_id: str) -> int:
        """DeleteCollection: every face, template, user and tag goes; returns the StatusCode (200)."""
        check(COLLECTION_ID_RE, collection_id, "CollectionId")
        self.store.delete_collection(collection_id)
        self._removed(Removal(collection_id, whole_collection=True))
        return 200
