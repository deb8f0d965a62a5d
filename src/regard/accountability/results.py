"""What the guard reads from, and amends in, an operation's typed result.

The guard never looks at Rekognition's JSON: it gets the service's result objects and

- reads their *matches* (:data:`Match`: a FaceMatch, UserMatch or CompareFaces match, each with
  its similarity and estimated false-match rate), which the threshold floor filters
  (:func:`drop_matches`) and two-person review turns into leads (:func:`candidate`);
- narrows ListCollections to the collections a profile may use (:func:`only_collections`);
- keeps what the audit record needs of each result type (:func:`summarize`: ids,
  similarities, FMRs and counts, never templates), one small function per type.

The API renders the (possibly amended) result only after the guard returns it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import singledispatch
from typing import Any, TypeVar, cast

from regard.accountability.review import Candidate
from regard.service import (
    AssociateFacesResult,
    CollectionDescription,
    CompareFacesMatch,
    CompareFacesResult,
    CreateCollectionResult,
    DeleteCollectionResult,
    DeleteFacesResult,
    DetectFacesResult,
    DisassociateFacesResult,
    FaceMatch,
    IndexFacesResult,
    ListCollectionsResult,
    ListFacesResult,
    ListTagsForResourceResult,
    ListUsersResult,
    SearchFacesByImageResult,
    SearchFacesResult,
    SearchUsersByImageResult,
    SearchUsersResult,
    UserMatch,
)
from regard.video.outcomes import GetJobResult, StartJobResult

R = TypeVar("R")

#: One match of a comparison or search: what floors and leads read.
Match = FaceMatch | UserMatch | CompareFacesMatch

Summary = dict[str, Any]


# -- matches --------------------------------------------------------------------------------------
def matches(result: object) -> Sequence[Match] | None:
    """The matches of a comparison or search result, best first; None for any other result."""
    if isinstance(result, CompareFacesResult | SearchFacesResult | SearchFacesByImageResult):
        return result.face_matches
    if isinstance(result, SearchUsersResult | SearchUsersByImageResult):
        return result.user_matches
    return None


def drop_matches(result: R, drop: Callable[[Match], bool]) -> tuple[R, int]:
    """``result`` without the matches ``drop`` picks, and how many went. CompareFaces reports the
    faces of dropped matches among its UnmatchedFaces, as it does any face under the threshold."""
    found = matches(result)
    if not found:
        return result, 0
    dropped = [m for m in found if drop(m)]
    if not dropped:
        return result, 0
    amended: object
    if isinstance(result, CompareFacesResult):
        kept = [m for m in result.face_matches if not drop(m)]
        unmatched = [*result.unmatched_faces, *(m.face for m in result.face_matches if drop(m))]
        amended = replace(result, face_matches=kept, unmatched_faces=unmatched)
    elif isinstance(result, SearchFacesResult | SearchFacesByImageResult):
        amended = replace(result, face_matches=[m for m in result.face_matches if not drop(m)])
    elif isinstance(result, SearchUsersResult | SearchUsersByImageResult):
        amended = replace(result, user_matches=[m for m in result.user_matches if not drop(m)])
    else:  # pragma: no cover - matches() answers only for the types above
        raise TypeError(type(result).__name__)
    return cast(R, amended), len(dropped)


def candidate(m: Match) -> Candidate:
    """A search match as a review lead's candidate (the face or user it names, and its scores)."""
    if isinstance(m, FaceMatch):
        return Candidate(m.face.face_id, m.face.user_id, m.face.external_image_id, m.similarity, m.fmr)
    if isinstance(m, UserMatch):
        return Candidate(None, m.user.user_id, None, m.similarity, m.fmr)
    return Candidate(None, None, None, m.similarity, m.fmr)


# -- collections ----------------------------------------------------------------------------------
def only_collections(result: R, allowed: Callable[[str], bool]) -> R:
    """ListCollections' result with only the collections ``allowed`` accepts (ids and versions)."""
    if not isinstance(result, ListCollectionsResult):
        return result
    kept = [
        (c, v) for c, v in zip(result.collection_ids, result.face_model_versions, strict=False) if allowed(c)
    ]
    amended = replace(result, collection_ids=[c for c, _ in kept], face_model_versions=[v for _, v in kept])
    return cast(R, amended)


# -- what the record keeps ------------------------------------------------------------------------
def _match(m: Match, lead: str | None) -> Summary:
    out: Summary = {"similarity": m.similarity, "fmr": m.fmr}
    if isinstance(m, FaceMatch):
        out["face_id"] = m.face.face_id
        if m.face.external_image_id is not None:
            out["external_image_id"] = m.face.external_image_id
        if m.face.user_id is not None:
            out["user_id"] = m.face.user_id
    elif isinstance(m, UserMatch):
        out["user_id"] = m.user.user_id
    if lead is not None:
        out["lead_id"] = lead
    return out


def _matches(found: Sequence[Match], leads: Sequence[str]) -> Summary:
    """Each match (with its lead id, when review made it one) and their count."""
    ids: Sequence[str | None] = leads if leads else [None] * len(found)
    return {
        "matches": [_match(m, lead) for m, lead in zip(found, ids, strict=True)],
        "match_count": len(found),
    }


@singledispatch
def summarize(result: object, leads: Sequence[str] = ()) -> Summary:
    """What the audit record keeps of an operation's result (``leads``: the lead id of each
    match, in order, when two-person review made them leads)."""
    raise TypeError(f"no audit summary for a {type(result).__name__}")


@summarize.register(type(None))
def _no_content(result: None, leads: Sequence[str] = ()) -> Summary:
    return {}  # CreateUser, DeleteUser, TagResource, UntagResource


@summarize.register
def _detect(result: DetectFacesResult, leads: Sequence[str] = ()) -> Summary:
    return {"face_count": len(result.face_details)}


@summarize.register
def _compare(result: CompareFacesResult, leads: Sequence[str] = ()) -> Summary:
    return {**_matches(result.face_matches, leads), "unmatched_count": len(result.unmatched_faces)}


@summarize.register
def _create_collection(result: CreateCollectionResult, leads: Sequence[str] = ()) -> Summary:
    return {"status_code": result.status_code}


@summarize.register
def _describe_collection(result: CollectionDescription, leads: Sequence[str] = ()) -> Summary:
    return {}  # its state is the record's collection_state


@summarize.register
def _list_collections(result: ListCollectionsResult, leads: Sequence[str] = ()) -> Summary:
    return {"listed_collections": len(result.collection_ids)}


@summarize.register
def _delete_collection(result: DeleteCollectionResult, leads: Sequence[str] = ()) -> Summary:
    return {"status_code": result.status_code}


@summarize.register
def _index_faces(result: IndexFacesResult, leads: Sequence[str] = ()) -> Summary:
    return {
        "indexed_face_ids": [r.face.face_id for r in result.face_records],
        "unindexed_count": len(result.unindexed_faces),
    }


@summarize.register
def _list_faces(result: ListFacesResult, leads: Sequence[str] = ()) -> Summary:
    return {"listed_faces": len(result.faces)}


@summarize.register
def _delete_faces(result: DeleteFacesResult, leads: Sequence[str] = ()) -> Summary:
    return {"unsuccessful_count": len(result.unsuccessful), "deleted_face_ids": list(result.deleted_faces)}


@summarize.register
def _search_faces(result: SearchFacesResult, leads: Sequence[str] = ()) -> Summary:
    return {**_matches(result.face_matches, leads), "searched_face_id": result.searched_face_id}


@summarize.register
def _search_faces_by_image(result: SearchFacesByImageResult, leads: Sequence[str] = ()) -> Summary:
    return {
        **_matches(result.face_matches, leads),
        "searched_face_confidence": result.searched_face_confidence,
    }


@summarize.register
def _list_users(result: ListUsersResult, leads: Sequence[str] = ()) -> Summary:
    return {"listed_users": len(result.users)}


@summarize.register
def _associate(result: AssociateFacesResult, leads: Sequence[str] = ()) -> Summary:
    return {
        "unsuccessful_count": len(result.unsuccessful),
        "associated_face_ids": list(result.associated_faces),
        "user_status": result.user_status,
    }


@summarize.register
def _disassociate(result: DisassociateFacesResult, leads: Sequence[str] = ()) -> Summary:
    return {
        "unsuccessful_count": len(result.unsuccessful),
        "disassociated_face_ids": list(result.disassociated_faces),
        "user_status": result.user_status,
    }


@summarize.register
def _search_users(result: SearchUsersResult, leads: Sequence[str] = ()) -> Summary:
    out = _matches(result.user_matches, leads)
    if result.searched_user_id is not None:
        out["searched_user_id"] = result.searched_user_id
    if result.searched_face_id is not None:
        out["searched_face_id"] = result.searched_face_id
    return out


@summarize.register
def _search_users_by_image(result: SearchUsersByImageResult, leads: Sequence[str] = ()) -> Summary:
    return {**_matches(result.user_matches, leads), "unsearched_count": len(result.unsearched_faces)}


@summarize.register
def _list_tags(result: ListTagsForResourceResult, leads: Sequence[str] = ()) -> Summary:
    return {}  # tag values are not kept


@summarize.register
def _start_job(result: StartJobResult, leads: Sequence[str] = ()) -> Summary:
    """A stored-video Start: the job, and the video by its sha256 and duration (never frames)."""
    return {
        "job_id": result.job_id,
        "job_status": result.status,
        "repeated_request": not result.new,
        "video": {"sha256": result.video_sha256, "duration_millis": result.duration_millis},
    }


@summarize.register
def _get_job(result: GetJobResult, leads: Sequence[str] = ()) -> Summary:
    return {"job_id": result.job_id, "job_status": result.status, "returned": len(result.items)}
