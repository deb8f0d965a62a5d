"""Rekognition's parameter rules: identifier patterns, limits, defaults and the checks that apply them.

Each check raises :class:`regard.errors.InvalidParameter` with the message Rekognition's own
validation gives, so a bad parameter fails the same way whichever operation received it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from regard.errors import InvalidParameter

COLLECTION_ID_RE = re.compile(r"^[a-zA-Z0-9_.\-]{1,255}$")
EXTERNAL_IMAGE_ID_RE = re.compile(r"^[a-zA-Z0-9_.\-:]{1,255}$")
USER_ID_RE = re.compile(r"^[a-zA-Z0-9_.\-:]{1,128}$")
FACE_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
CLIENT_TOKEN_RE = re.compile(r"^[a-zA-Z0-9\-_]{1,64}$")
TAG_KEY_RE = re.compile(r"^(?!aws:)[\w\s+=,.@:/\-]{1,128}$", re.UNICODE)
MAX_TAG_VALUE = 256
MAX_TAGS = 200
COLLECTION_ARN_RE = re.compile(r"^arn:aws:rekognition:[^:]*:[^:]*:collection/(?P<id>[a-zA-Z0-9_.\-]{1,255})$")

DEFAULT_FACE_MATCH_THRESHOLD = 80.0
DEFAULT_SIMILARITY_THRESHOLD = 80.0  # CompareFaces
DEFAULT_USER_MATCH_THRESHOLD_ASSOCIATE = 75.0
DEFAULT_USER_MATCH_THRESHOLD_SEARCH = 80.0
MAX_SEARCH_FACES = 4096
#: The most faces IndexFaces stores from one image. A larger MaxFaces is accepted (the API model sets
#: no maximum) and means the same as 100, as in Rekognition.
MAX_INDEX_FACES = 100


def check(pattern: re.Pattern[str], value: object, name: str) -> str:
    """``value`` when it is a string matching ``pattern``; InvalidParameter naming ``name`` otherwise."""
    if not isinstance(value, str) or not pattern.match(value):
        raise InvalidParameter(f"{name} {value!r} does not satisfy the constraint {pattern.pattern}")
    return value


def check_range(value: float, low: float, high: float, name: str) -> None:
    """InvalidParameter unless ``low <= value <= high``."""
    if not (low <= value <= high):
        raise InvalidParameter(f"{name} must be between {low:g} and {high:g}, got {value!r}")


def check_face_ids(face_ids: Sequence[str], low: int, high: int) -> list[str]:
    """Between ``low`` and ``high`` well-formed FaceIds, duplicates dropped (first kept)."""
    ids = list(face_ids)
    if not (low <= len(ids) <= high):
        raise InvalidParameter(f"FaceIds must hold between {low} and {high} ids, got {len(ids)}")
    for f in ids:
        check(FACE_ID_RE, f, "FaceId")
    return list(dict.fromkeys(ids))


def check_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """At most 200 tags, keys matching Rekognition's pattern, values of at most 256 characters."""
    if len(tags) > MAX_TAGS:
        raise InvalidParameter(f"at most {MAX_TAGS} tags")
    for k, v in tags.items():
        check(TAG_KEY_RE, k, "tag key")
        if not isinstance(v, str) or len(v) > MAX_TAG_VALUE:
            raise InvalidParameter(
                f"tag value for {k!r} must be a string of at most {MAX_TAG_VALUE} characters"
            )
    return dict(tags)


def page_size(value: int | None, high: int, default: int, *, allow_zero: bool) -> int:
    """A MaxResults value: ``default`` when absent (or 0 where 0 means "the default")."""
    if value is None or (allow_zero and value == 0):
        return default
    check_range(value, 0 if allow_zero else 1, high, "MaxResults")
    return int(value)


def check_search_params(max_faces: int | None, threshold: float | None) -> None:
    """MaxFaces (1-4096) and FaceMatchThreshold (0-100) of a face search, when given."""
    if max_faces is not None:
        check_range(max_faces, 1, MAX_SEARCH_FACES, "MaxFaces")
    if threshold is not None:
        check_range(threshold, 0, 100, "FaceMatchThreshold")


def user_search_params(threshold: float | None, max_users: int | None) -> tuple[float, int]:
    """UserMatchThreshold (0-100, default 80) and MaxUsers (1-500, default 500) of a user search."""
    t = DEFAULT_USER_MATCH_THRESHOLD_SEARCH if threshold is None else threshold
    check_range(t, 0, 100, "UserMatchThreshold")
    limit = 500 if max_users is None else max_users
    check_range(limit, 1, 500, "MaxUsers")
    return t, int(limit)
