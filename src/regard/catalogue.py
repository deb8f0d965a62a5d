"""The catalogue of operations: what each operation regard performs is, said once.

One :class:`Operation` per Rekognition operation the API serves, plus regard's own operations
that the API does not serve (``AddTemplates``, ``SearchFacesByVector``: imports, tests, tools).
Each says its kind, whether it is biometric (a purpose and case reference may be required, the
audit record is ``biometric``), whether it is a 1:N identification and over which gallery, the
request parameter holding its similarity threshold and that parameter's default, which request
parameters an audit record keeps, whether it carries the images' provenance, and the
:class:`regard.service.Service` method that performs it (the command line records its use).

Policy (:mod:`regard.accountability.policy`) and the guard around every operation, from the API
or the command line (:mod:`regard.accountability.guard`), read from here;
``tests/unit/test_catalogue.py`` holds the catalogue against the API's operation table,
botocore's model, the Service and docs/accountability.md. This module imports nothing of regard,
so any layer may import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Literal


class Kind(StrEnum):
    """What an operation does, in the words the profile table of docs/accountability.md uses."""

    DETECTION = "detection"  # faces of one image
    COMPARISON = "comparison"  # 1:1, two images
    COLLECTION = "collection"  # create or delete a collection
    LISTING = "listing"  # describe or list a collection, its faces, users or tags
    INDEXING = "indexing"  # add faces to a collection or delete them
    USERS = "users"  # create or delete users, (dis)associate faces with them
    SEARCH = "search"  # 1:N against a collection
    TAGS = "tags"  # tag or untag a collection


#: Kinds that change nothing stored.
READ_ONLY_KINDS = frozenset({Kind.DETECTION, Kind.COMPARISON, Kind.LISTING, Kind.SEARCH})

#: What a 1:N operation searches: its gallery size (for the FPIR floor) counts faces or users.
Gallery = Literal["faces", "users"]


@dataclass(frozen=True, slots=True)
class Threshold:
    """The request parameter holding a similarity threshold, and its default when absent."""

    parameter: str
    default: float


@dataclass(frozen=True, slots=True)
class Operation:
    """One operation: the facts about it that policy, guard and audit need.

    ``recorded`` are the request parameters an audit record keeps as given; ``images`` those kept
    as the sha256 of their bytes (or their S3 location); with ``tag_keys_of_tags`` the ``Tags``
    map is kept as its sorted keys (``TagKeys``), never its values. With ``provenance`` the request
    carries the images' provenance (a source note and a legal basis: IndexFaces), which a profile
    may require and the record keeps. ``local_method`` is the Service method that performs the
    operation: every change and every search (None for the listings, which the command line
    reads directly and does not record); the command line runs the served ones it offers through
    the guard, as the API does. ``served`` is False for regard's own operations that the API does
    not serve (and the guard refuses).
    """

    name: str
    kind: Kind
    biometric: bool
    gallery: Gallery | None = None
    threshold: Threshold | None = None
    recorded: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    tag_keys_of_tags: bool = False
    provenance: bool = False
    local_method: str | None = None
    served: bool = True

    @property
    def read_only(self) -> bool:
        """Changes nothing stored (detection, comparison, listing, search)."""
        return self.kind in READ_ONLY_KINDS

    @property
    def identification(self) -> bool:
        """A 1:N search: its threshold floor comes from the FPIR and the gallery's size."""
        return self.gallery is not None


_SIMILARITY = Threshold("SimilarityThreshold", 80.0)
_FACE_MATCH = Threshold("FaceMatchThreshold", 80.0)
_USER_MATCH = Threshold("UserMatchThreshold", 80.0)

_CATALOGUE = (
    Operation("DetectFaces", Kind.DETECTION, biometric=True, recorded=("Attributes",), images=("Image",)),
    Operation(
        "CompareFaces",
        Kind.COMPARISON,
        biometric=True,
        threshold=_SIMILARITY,
        recorded=("SimilarityThreshold", "QualityFilter"),
        images=("SourceImage", "TargetImage"),
    ),
    Operation(
        "CreateCollection",
        Kind.COLLECTION,
        biometric=False,
        tag_keys_of_tags=True,
        local_method="create_collection",
    ),
    Operation("DescribeCollection", Kind.LISTING, biometric=False),
    Operation("ListCollections", Kind.LISTING, biometric=False, recorded=("MaxResults",)),
    Operation("DeleteCollection", Kind.COLLECTION, biometric=False, local_method="delete_collection"),
    Operation(
        "IndexFaces",
        Kind.INDEXING,
        biometric=True,
        recorded=("MaxFaces", "QualityFilter", "DetectionAttributes", "ExternalImageId"),
        images=("Image",),
        provenance=True,
        local_method="index_faces",
    ),
    Operation("ListFaces", Kind.LISTING, biometric=False, recorded=("MaxResults", "FaceIds", "UserId")),
    Operation(
        "DeleteFaces", Kind.INDEXING, biometric=False, recorded=("FaceIds",), local_method="delete_faces"
    ),
    Operation(
        "SearchFaces",
        Kind.SEARCH,
        biometric=True,
        gallery="faces",
        threshold=_FACE_MATCH,
        recorded=("MaxFaces", "FaceMatchThreshold", "FaceId"),
        local_method="search_faces",
    ),
    Operation(
        "SearchFacesByImage",
        Kind.SEARCH,
        biometric=True,
        gallery="faces",
        threshold=_FACE_MATCH,
        recorded=("MaxFaces", "FaceMatchThreshold", "QualityFilter"),
        images=("Image",),
        local_method="search_faces_by_image",
    ),
    Operation(
        "CreateUser",
        Kind.USERS,
        biometric=False,
        recorded=("UserId", "ClientRequestToken"),
        local_method="create_user",
    ),
    Operation(
        "DeleteUser",
        Kind.USERS,
        biometric=False,
        recorded=("UserId", "ClientRequestToken"),
        local_method="delete_user",
    ),
    Operation("ListUsers", Kind.LISTING, biometric=False, recorded=("MaxResults",)),
    Operation(
        "AssociateFaces",
        Kind.USERS,
        biometric=True,
        # UserMatchThreshold (default 75) decides which faces join the user; no policy floor applies
        recorded=("UserMatchThreshold", "FaceIds", "UserId", "ClientRequestToken"),
        local_method="associate_faces",
    ),
    Operation(
        "DisassociateFaces",
        Kind.USERS,
        biometric=True,
        recorded=("FaceIds", "UserId", "ClientRequestToken"),
        local_method="disassociate_faces",
    ),
    Operation(
        "SearchUsers",
        Kind.SEARCH,
        biometric=True,
        gallery="users",
        threshold=_USER_MATCH,
        recorded=("MaxUsers", "UserMatchThreshold", "FaceId", "UserId"),
        local_method="search_users",
    ),
    Operation(
        "SearchUsersByImage",
        Kind.SEARCH,
        biometric=True,
        gallery="users",
        threshold=_USER_MATCH,
        recorded=("MaxUsers", "UserMatchThreshold", "QualityFilter"),
        images=("Image",),
        local_method="search_users_by_image",
    ),
    Operation(
        "TagResource",
        Kind.TAGS,
        biometric=False,
        recorded=("ResourceArn",),
        tag_keys_of_tags=True,
        local_method="tag_resource",
    ),
    Operation(
        "UntagResource",
        Kind.TAGS,
        biometric=False,
        recorded=("ResourceArn", "TagKeys"),
        local_method="untag_resource",
    ),
    Operation("ListTagsForResource", Kind.LISTING, biometric=False, recorded=("ResourceArn",)),
    # stored video (regard.video.jobs): a Start is the operation (its record names the video by
    # sha256 and duration), its Get a read of the job's results
    Operation(
        "StartFaceDetection",
        Kind.DETECTION,
        biometric=True,
        recorded=("FaceAttributes", "JobTag", "ClientRequestToken"),
        images=("Video",),
    ),
    Operation(
        "GetFaceDetection",
        Kind.LISTING,
        biometric=False,
        recorded=("JobId", "MaxResults", "NextToken"),
    ),
    Operation(
        "StartFaceSearch",
        Kind.SEARCH,
        biometric=True,
        gallery="faces",
        threshold=_FACE_MATCH,
        recorded=("FaceMatchThreshold", "JobTag", "ClientRequestToken"),
        images=("Video",),
    ),
    Operation(
        "GetFaceSearch",
        Kind.LISTING,
        biometric=False,
        recorded=("JobId", "MaxResults", "NextToken", "SortBy"),
    ),
    # regard's own, from the command line only
    Operation("AddTemplates", Kind.INDEXING, biometric=True, local_method="add_templates", served=False),
    Operation(
        "SearchFacesByVector",
        Kind.SEARCH,
        biometric=True,
        gallery="faces",
        threshold=_FACE_MATCH,
        local_method="search_faces_by_vector",
        served=False,
    ),
)

#: Every operation by name: the ones the API serves first, then regard's local-only ones.
OPERATIONS_BY_NAME: Mapping[str, Operation] = MappingProxyType({op.name: op for op in _CATALOGUE})


def served_names() -> frozenset[str]:
    """The Rekognition operations the API serves (the names a policy profile may list)."""
    return frozenset(op.name for op in OPERATIONS_BY_NAME.values() if op.served)


def by_local_method(method: str) -> Operation | None:
    """The operation a Service method's local use is logged as, or None when it is not logged."""
    for op in OPERATIONS_BY_NAME.values():
        if op.local_method == method:
            return op
    return None
