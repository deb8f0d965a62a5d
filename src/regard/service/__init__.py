"""Face collections, users, 1:N search and image comparison with Amazon Rekognition's semantics.

:class:`Service` is the use-case layer behind Rekognition's operations. It validates parameters
the way Rekognition documents them, runs the face engine on images, turns template distances
into calibrated similarities (``regard.scoring.calibrate``: ``similarity = -20 * log10(FMR)``, so 80
means an estimated false-match rate of 1e-4) and keeps everything in a
:class:`regard.store.base.Store`: SQLite plus a vector index under the data directory by
default, PostgreSQL + pgvector when ``database_url`` says so.

It knows no HTTP: methods take plain Python values and return frozen dataclasses, which
``regard.api`` renders as Rekognition's JSON. Every box and landmark in them is already a
fraction of the image (:class:`FaceDetail`). Errors are :mod:`regard.errors` classes whose
``code`` is the Rekognition exception name.

The package is drawn along Rekognition's resources, each result class beside its operations:

- :mod:`~regard.service.collections`, :mod:`~regard.service.faces`, :mod:`~regard.service.users`,
  :mod:`~regard.service.tags`: the operations on a collection and what it holds;
- :mod:`~regard.service.detection`, :mod:`~regard.service.compare`: DetectFaces and CompareFaces,
  which need an engine but no store;
- :mod:`~regard.service.search`: ranking faces and users under the normalized score;
- :mod:`~regard.service.images`: decoding, the largest-face probe, FaceDetail in ratios;
- :mod:`~regard.service.rules`, :mod:`~regard.service.quality`, :mod:`~regard.service.idempotency`:
  parameter rules, QualityFilter bars, ClientRequestToken;
- :mod:`~regard.service.front`: :class:`Service`, which joins the resources' operations.

A service is thread-safe, and several processes may open the same data directory.
"""

from __future__ import annotations

from regard.service.collections import (
    CollectionDescription,
    CreateCollectionResult,
    DeleteCollectionResult,
    ListCollectionsResult,
)
from regard.service.compare import CompareFacesMatch, CompareFacesResult, compare_faces
from regard.service.detection import DetectFacesResult, detect_faces
from regard.service.faces import (
    DeleteFacesResult,
    IndexedFace,
    IndexFacesResult,
    ListFacesResult,
    SearchFacesByImageResult,
    SearchFacesResult,
    UnindexedFace,
    UnsuccessfulFaceDeletion,
)
from regard.service.front import Service
from regard.service.images import NO_FACES, FaceDetail, ProbeFace, probe
from regard.service.quality import QUALITY_BARS, QUALITY_FILTERS, QualityBar, quality_reasons
from regard.service.rules import (
    CLIENT_TOKEN_RE,
    COLLECTION_ARN_RE,
    COLLECTION_ID_RE,
    DEFAULT_FACE_MATCH_THRESHOLD,
    DEFAULT_SIMILARITY_THRESHOLD,
    DEFAULT_USER_MATCH_THRESHOLD_ASSOCIATE,
    DEFAULT_USER_MATCH_THRESHOLD_SEARCH,
    EXTERNAL_IMAGE_ID_RE,
    FACE_ID_RE,
    MAX_INDEX_FACES,
    MAX_SEARCH_FACES,
    MAX_TAG_VALUE,
    MAX_TAGS,
    TAG_KEY_RE,
    USER_ID_RE,
)
from regard.service.search import FaceMatch, UserMatch
from regard.service.tags import ListTagsForResourceResult
from regard.service.users import (
    AssociateFacesResult,
    DisassociateFacesResult,
    ListUsersResult,
    SearchUsersByImageResult,
    SearchUsersResult,
    UnsearchedFace,
    UnsuccessfulFaceAssociation,
    UnsuccessfulFaceDisassociation,
)

__all__ = [
    "CLIENT_TOKEN_RE",
    "COLLECTION_ARN_RE",
    "COLLECTION_ID_RE",
    "DEFAULT_FACE_MATCH_THRESHOLD",
    "DEFAULT_SIMILARITY_THRESHOLD",
    "DEFAULT_USER_MATCH_THRESHOLD_ASSOCIATE",
    "DEFAULT_USER_MATCH_THRESHOLD_SEARCH",
    "EXTERNAL_IMAGE_ID_RE",
    "FACE_ID_RE",
    "MAX_INDEX_FACES",
    "MAX_SEARCH_FACES",
    "MAX_TAGS",
    "MAX_TAG_VALUE",
    "NO_FACES",
    "QUALITY_BARS",
    "QUALITY_FILTERS",
    "TAG_KEY_RE",
    "USER_ID_RE",
    "AssociateFacesResult",
    "CollectionDescription",
    "CompareFacesMatch",
    "CompareFacesResult",
    "CreateCollectionResult",
    "DeleteCollectionResult",
    "DeleteFacesResult",
    "DetectFacesResult",
    "DisassociateFacesResult",
    "FaceDetail",
    "FaceMatch",
    "IndexFacesResult",
    "IndexedFace",
    "ListCollectionsResult",
    "ListFacesResult",
    "ListTagsForResourceResult",
    "ListUsersResult",
    "ProbeFace",
    "QualityBar",
    "SearchFacesByImageResult",
    "SearchFacesResult",
    "SearchUsersByImageResult",
    "SearchUsersResult",
    "Service",
    "UnindexedFace",
    "UnsearchedFace",
    "UnsuccessfulFaceAssociation",
    "UnsuccessfulFaceDeletion",
    "UnsuccessfulFaceDisassociation",
    "UserMatch",
    "compare_faces",
    "detect_faces",
    "probe",
    "quality_reasons",
]
