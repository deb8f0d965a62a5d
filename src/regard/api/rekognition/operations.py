"""Rekognition operations, each a typed call and a renderer.

Each operation is an :class:`ApiOperation` registered in :data:`OPERATIONS` under its Rekognition
name: ``perform(ctx, params)`` reads the validated request parameters and makes the typed
:class:`regard.service.Service` call, returning the service's typed result; ``render(result,
params)`` turns that result into Rekognition's response through :mod:`regard.service.render`
(one renderer per shape). In between, :func:`run` hands the typed call to the accountability
guard, which checks policy, filters matches and records the result before anything is rendered;
:func:`respond` renders what the guard returns. The API and the command line both run operations
this way, so an operation's audit record is the same from either.

They run in a worker thread (the engine and the store block). Responses carry only fields that
regard can honestly produce; age, gender, emotions, smile, beard, glasses and the like are never
inferred and are left out. Where botocore and the AWS SDKs ignore unknown fields, an estimated
false match rate (``EstimatedFalseMatchRate``) is added next to each ``Similarity``, and the
matches of a search under two-person review carry ``RegardLeadId`` and ``RegardReviewStatus``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from regard.accountability.guard import Guard, Guarded
from regard.accountability.request import Caller, Params, Provenance, RequestInfo
from regard.accountability.review import PENDING
from regard.api.rekognition.s3 import S3Images
from regard.errors import InvalidParameter
from regard.face.engine import Engine
from regard.service import (
    AssociateFacesResult,
    CollectionDescription,
    CompareFacesResult,
    CreateCollectionResult,
    DeleteCollectionResult,
    DeleteFacesResult,
    DetectFacesResult,
    DisassociateFacesResult,
    IndexFacesResult,
    ListCollectionsResult,
    ListFacesResult,
    ListTagsForResourceResult,
    ListUsersResult,
    SearchFacesByImageResult,
    SearchFacesResult,
    SearchUsersByImageResult,
    SearchUsersResult,
    Service,
    compare,
    detection,
)
from regard.service.images import EncodedImage
from regard.service.render import (
    bounding_box,
    compared_face,
    face,
    face_detail,
    face_match,
    unsuccessful_faces,
    user_match,
    with_fmr,
)
from regard.video.outcomes import GetJobResult, StartJobResult

if TYPE_CHECKING:
    from regard.video.jobs import VideoJobs

#: A Rekognition response (JSON object).
Json = dict[str, Any]
R = TypeVar("R")

#: Attribute names regard can produce; the others (AGE_RANGE, GENDER, EMOTIONS, ...) are never inferred.
HONEST_ATTRIBUTES = frozenset({"DEFAULT", "ALL", "EYES_OPEN", "MOUTH_OPEN"})


@dataclass
class Context:
    """What an operation may use: the engine, the image sources and (lazily) the face store, and
    the request's images' provenance (IndexFaces stores it with each face)."""

    engine: Engine
    s3: S3Images
    service_factory: Callable[[], Service] | None = None
    caller: str = ""
    request_id: str = ""
    provenance: Provenance = field(default_factory=Provenance)
    timings: dict[str, float] = field(default_factory=dict)
    #: The stored-video jobs (None: the video operations are not available here).
    video_jobs: VideoJobs | None = None
    #: Who asks and the request's fields (set by :func:`run`; a video job keeps them).
    who: Caller | None = None
    info: RequestInfo | None = None

    @property
    def service(self) -> Service:
        if self.service_factory is None:
            raise InvalidParameter("collections are not available on this server")
        return self.service_factory()


@dataclass(frozen=True)
class ApiOperation(Generic[R]):
    """One Rekognition operation: its typed call and the renderer of its typed result."""

    name: str
    perform: Callable[[Context, Params], R]
    render: Callable[[R, Params], Json]

    def __call__(self, ctx: Context, params: Params) -> Json:
        """The operation unguarded, typed call then render (tests and tools; the API uses :func:`run`)."""
        return self.render(self.perform(ctx, params), params)


OPERATIONS: dict[str, ApiOperation[Any]] = {}


def operation(
    name: str, render: Callable[[R, Params], Json]
) -> Callable[[Callable[[Context, Params], R]], ApiOperation[R]]:
    """Register the decorated typed call, with ``render``, as the operation ``name``."""

    def register(perform: Callable[[Context, Params], R]) -> ApiOperation[R]:
        op = ApiOperation(name, perform, render)
        OPERATIONS[name] = op
        return op

    return register


def run(
    guard: Guard, op: ApiOperation[R], params: Params, caller: Caller, info: RequestInfo, ctx: Context
) -> Guarded[R]:
    """``op``'s typed call under ``guard`` (policy, floors, leads, audit record): the request's
    id and provenance come from ``info``, the same fields the guard checks and records."""
    request = replace(ctx, request_id=info.request_id, provenance=info.provenance, who=caller, info=info)
    return guard.run(op.name, params, caller, info, lambda p: op.perform(request, p))


def respond(op: ApiOperation[R], out: Guarded[R], params: Params) -> Json:
    """The response to a guarded call: its result rendered, each match marked with its lead."""
    body = op.render(out.result, params)
    if out.leads:
        key = "FaceMatches" if "FaceMatches" in body else "UserMatches"
        for m, lead_id in zip(body[key], out.leads, strict=True):
            m["RegardLeadId"] = lead_id
            m["RegardReviewStatus"] = PENDING
    return body


# -- images --------------------------------------------------------------------------------------
def image_bytes(ctx: Context, image: Params, field_name: str = "Image") -> bytes | EncodedImage:
    """The encoded bytes of a Rekognition ``Image`` structure: Bytes (the engine's 5 MB limit) or
    S3Object (fetched and decoded under ``max_s3_image_bytes``, 15 MB)."""
    if "Bytes" in image and "S3Object" in image:
        raise InvalidParameter(f"{field_name}: specify either Bytes or S3Object, not both")
    if "Bytes" in image:
        data: bytes = image["Bytes"]
        return data
    if "S3Object" in image:
        s3 = image["S3Object"]
        if "Bucket" not in s3 or "Name" not in s3:
            raise InvalidParameter(f"{field_name}.S3Object needs Bucket and Name")
        data = ctx.s3.fetch(s3["Bucket"], s3["Name"], s3.get("Version"))
        return EncodedImage(data, ctx.s3.settings.max_s3_image_bytes)
    raise InvalidParameter(f"{field_name}: specify Bytes or S3Object")


def _attributes(params: Params, name: str) -> list[str]:
    attributes: list[str] = params.get(name) or ["DEFAULT"]
    return attributes


def _paged(result: Json, next_token: str | None) -> Json:
    if next_token:
        result["NextToken"] = next_token
    return result


def _no_content(result: None, params: Params) -> Json:
    return {}


# -- image-only operations (no collection) ------------------------------------------------------
def _detect_faces_response(r: DetectFacesResult, params: Params) -> Json:
    attributes = _attributes(params, "Attributes")
    return {"FaceDetails": [face_detail(d, attributes) for d in r.face_details]}


@operation("DetectFaces", _detect_faces_response)
def detect_faces(ctx: Context, params: Params) -> DetectFacesResult:
    return detection.detect_faces(ctx.engine, image_bytes(ctx, params["Image"]))


def _compare_faces_response(r: CompareFacesResult, params: Params) -> Json:
    return {
        "SourceImageFace": {
            "BoundingBox": bounding_box(r.source_image_face.bounding_box),
            "Confidence": r.source_image_face.confidence,
        },
        "FaceMatches": [
            with_fmr(m.similarity, {"Face": compared_face(m.face), "EstimatedFalseMatchRate": m.fmr})
            for m in r.face_matches
        ],
        "UnmatchedFaces": [compared_face(f) for f in r.unmatched_faces],
    }


@operation("CompareFaces", _compare_faces_response)
def compare_faces(ctx: Context, params: Params) -> CompareFacesResult:
    return compare.compare_faces(
        ctx.engine,
        image_bytes(ctx, params["SourceImage"], "SourceImage"),
        image_bytes(ctx, params["TargetImage"], "TargetImage"),
        similarity_threshold=params.get("SimilarityThreshold"),
        quality_filter=params.get("QualityFilter", "NONE"),
    )


# -- collections ----------------------------------------------------------------------------------
def _create_collection_response(r: CreateCollectionResult, params: Params) -> Json:
    return {
        "StatusCode": r.status_code,
        "CollectionArn": r.collection_arn,
        "FaceModelVersion": r.face_model_version,
    }


@operation("CreateCollection", _create_collection_response)
def create_collection(ctx: Context, params: Params) -> CreateCollectionResult:
    return ctx.service.create_collection(params["CollectionId"], params.get("Tags"))


def _describe_collection_response(d: CollectionDescription, params: Params) -> Json:
    return {
        "FaceCount": d.face_count,
        "FaceModelVersion": d.face_model_version,
        "CollectionARN": d.collection_arn,
        "CreationTimestamp": d.created_at,
        "UserCount": d.user_count,
        # regard's extension (unknown fields are ignored by botocore and the AWS SDKs): what the
        # numeric FaceModelVersion stands for.
        "RegardFaceModel": d.face_model_identity,
    }


@operation("DescribeCollection", _describe_collection_response)
def describe_collection(ctx: Context, params: Params) -> CollectionDescription:
    return ctx.service.describe_collection(params["CollectionId"])


def _list_collections_response(r: ListCollectionsResult, params: Params) -> Json:
    return _paged(
        {"CollectionIds": r.collection_ids, "FaceModelVersions": r.face_model_versions}, r.next_token
    )


@operation("ListCollections", _list_collections_response)
def list_collections(ctx: Context, params: Params) -> ListCollectionsResult:
    return ctx.service.list_collections(params.get("MaxResults"), params.get("NextToken"))


def _delete_collection_response(r: DeleteCollectionResult, params: Params) -> Json:
    return {"StatusCode": r.status_code}


@operation("DeleteCollection", _delete_collection_response)
def delete_collection(ctx: Context, params: Params) -> DeleteCollectionResult:
    return DeleteCollectionResult(ctx.service.delete_collection(params["CollectionId"]))


# -- faces ----------------------------------------------------------------------------------------
def _index_faces_response(r: IndexFacesResult, params: Params) -> Json:
    attributes = _attributes(params, "DetectionAttributes")
    return {
        "FaceRecords": [
            {
                "Face": face(f.face, r.face_model_version),
                "FaceDetail": face_detail(f.face_detail, attributes),
            }
            for f in r.face_records
        ],
        "FaceModelVersion": r.face_model_version,
        "UnindexedFaces": [
            {"Reasons": u.reasons, "FaceDetail": face_detail(u.face_detail, attributes)}
            for u in r.unindexed_faces
        ],
    }


@operation("IndexFaces", _index_faces_response)
def index_faces(ctx: Context, params: Params) -> IndexFacesResult:
    data = image_bytes(ctx, params["Image"])
    return ctx.service.index_faces(
        params["CollectionId"],
        data,
        external_image_id=params.get("ExternalImageId"),
        max_faces=params.get("MaxFaces"),
        quality_filter=params.get("QualityFilter", "AUTO"),
        # the request's provenance (x-regard-source / x-regard-legal-basis, or the CLI's flags)
        source_note=ctx.provenance.source_note,
        legal_basis=ctx.provenance.legal_basis,
    )


def _list_faces_response(r: ListFacesResult, params: Params) -> Json:
    return _paged(
        {
            "Faces": [face(f, r.face_model_version) for f in r.faces],
            "FaceModelVersion": r.face_model_version,
        },
        r.next_token,
    )


@operation("ListFaces", _list_faces_response)
def list_faces(ctx: Context, params: Params) -> ListFacesResult:
    return ctx.service.list_faces(
        params["CollectionId"],
        max_results=params.get("MaxResults"),
        next_token=params.get("NextToken"),
        user_id=params.get("UserId"),
        face_ids=params.get("FaceIds"),
    )


def _delete_faces_response(r: DeleteFacesResult, params: Params) -> Json:
    return {
        "DeletedFaces": r.deleted_faces,
        "UnsuccessfulFaceDeletions": unsuccessful_faces(r.unsuccessful, with_confidence=False),
    }


@operation("DeleteFaces", _delete_faces_response)
def delete_faces(ctx: Context, params: Params) -> DeleteFacesResult:
    return ctx.service.delete_faces(params["CollectionId"], params["FaceIds"])


def _search_faces_response(r: SearchFacesResult, params: Params) -> Json:
    return {
        "SearchedFaceId": r.searched_face_id,
        "FaceMatches": [face_match(m, r.face_model_version) for m in r.face_matches],
        "FaceModelVersion": r.face_model_version,
    }


@operation("SearchFaces", _search_faces_response)
def search_faces(ctx: Context, params: Params) -> SearchFacesResult:
    return ctx.service.search_faces(
        params["CollectionId"],
        params["FaceId"],
        max_faces=params.get("MaxFaces"),
        face_match_threshold=params.get("FaceMatchThreshold"),
    )


def _search_faces_by_image_response(r: SearchFacesByImageResult, params: Params) -> Json:
    return {
        "SearchedFaceBoundingBox": bounding_box(r.searched_face_bounding_box),
        "SearchedFaceConfidence": r.searched_face_confidence,
        "FaceMatches": [face_match(m, r.face_model_version) for m in r.face_matches],
        "FaceModelVersion": r.face_model_version,
    }


@operation("SearchFacesByImage", _search_faces_by_image_response)
def search_faces_by_image(ctx: Context, params: Params) -> SearchFacesByImageResult:
    data = image_bytes(ctx, params["Image"])
    return ctx.service.search_faces_by_image(
        params["CollectionId"],
        data,
        max_faces=params.get("MaxFaces"),
        face_match_threshold=params.get("FaceMatchThreshold"),
        quality_filter=params.get("QualityFilter", "NONE"),
    )


# -- users ----------------------------------------------------------------------------------------
@operation("CreateUser", _no_content)
def create_user(ctx: Context, params: Params) -> None:
    ctx.service.create_user(
        params["CollectionId"], params["UserId"], client_request_token=params.get("ClientRequestToken")
    )


@operation("DeleteUser", _no_content)
def delete_user(ctx: Context, params: Params) -> None:
    ctx.service.delete_user(
        params["CollectionId"], params["UserId"], client_request_token=params.get("ClientRequestToken")
    )


def _list_users_response(r: ListUsersResult, params: Params) -> Json:
    return _paged({"Users": [{"UserId": u.user_id, "UserStatus": u.status} for u in r.users]}, r.next_token)


@operation("ListUsers", _list_users_response)
def list_users(ctx: Context, params: Params) -> ListUsersResult:
    return ctx.service.list_users(
        params["CollectionId"], max_results=params.get("MaxResults"), next_token=params.get("NextToken")
    )


def _associate_faces_response(r: AssociateFacesResult, params: Params) -> Json:
    return {
        "AssociatedFaces": [{"FaceId": f} for f in r.associated_faces],
        "UnsuccessfulFaceAssociations": unsuccessful_faces(r.unsuccessful, with_confidence=True),
        "UserStatus": r.user_status,
    }


@operation("AssociateFaces", _associate_faces_response)
def associate_faces(ctx: Context, params: Params) -> AssociateFacesResult:
    return ctx.service.associate_faces(
        params["CollectionId"],
        params["UserId"],
        params["FaceIds"],
        user_match_threshold=params.get("UserMatchThreshold"),
        client_request_token=params.get("ClientRequestToken"),
    )


def _disassociate_faces_response(r: DisassociateFacesResult, params: Params) -> Json:
    return {
        "DisassociatedFaces": [{"FaceId": f} for f in r.disassociated_faces],
        "UnsuccessfulFaceDisassociations": unsuccessful_faces(r.unsuccessful, with_confidence=False),
        "UserStatus": r.user_status,
    }


@operation("DisassociateFaces", _disassociate_faces_response)
def disassociate_faces(ctx: Context, params: Params) -> DisassociateFacesResult:
    return ctx.service.disassociate_faces(
        params["CollectionId"],
        params["UserId"],
        params["FaceIds"],
        client_request_token=params.get("ClientRequestToken"),
    )


def _search_users_response(r: SearchUsersResult, params: Params) -> Json:
    out: Json = {
        "UserMatches": [user_match(m) for m in r.user_matches],
        "FaceModelVersion": r.face_model_version,
    }
    if r.searched_face_id is not None:
        out["SearchedFace"] = {"FaceId": r.searched_face_id}
    if r.searched_user_id is not None:
        out["SearchedUser"] = {"UserId": r.searched_user_id}
    return out


@operation("SearchUsers", _search_users_response)
def search_users(ctx: Context, params: Params) -> SearchUsersResult:
    return ctx.service.search_users(
        params["CollectionId"],
        user_id=params.get("UserId"),
        face_id=params.get("FaceId"),
        user_match_threshold=params.get("UserMatchThreshold"),
        max_users=params.get("MaxUsers"),
    )


def _search_users_by_image_response(r: SearchUsersByImageResult, params: Params) -> Json:
    out: Json = {
        "UserMatches": [user_match(m) for m in r.user_matches],
        "FaceModelVersion": r.face_model_version,
        "UnsearchedFaces": [
            {"FaceDetails": face_detail(u.face_detail, ["DEFAULT"]), "Reasons": u.reasons}
            for u in r.unsearched_faces
        ],
    }
    if r.searched_face is not None:  # none when the image held no face to search by
        out["SearchedFace"] = {"FaceDetail": face_detail(r.searched_face, ["DEFAULT"])}
    return out


@operation("SearchUsersByImage", _search_users_by_image_response)
def search_users_by_image(ctx: Context, params: Params) -> SearchUsersByImageResult:
    data = image_bytes(ctx, params["Image"])
    return ctx.service.search_users_by_image(
        params["CollectionId"],
        data,
        user_match_threshold=params.get("UserMatchThreshold"),
        max_users=params.get("MaxUsers"),
        quality_filter=params.get("QualityFilter", "NONE"),
    )


# -- tags -----------------------------------------------------------------------------------------
@operation("TagResource", _no_content)
def tag_resource(ctx: Context, params: Params) -> None:
    ctx.service.tag_resource(params["ResourceArn"], params["Tags"])


@operation("UntagResource", _no_content)
def untag_resource(ctx: Context, params: Params) -> None:
    ctx.service.untag_resource(params["ResourceArn"], params["TagKeys"])


def _list_tags_for_resource_response(r: ListTagsForResourceResult, params: Params) -> Json:
    return {"Tags": r.tags}


@operation("ListTagsForResource", _list_tags_for_resource_response)
def list_tags_for_resource(ctx: Context, params: Params) -> ListTagsForResourceResult:
    return ListTagsForResourceResult(ctx.service.list_tags_for_resource(params["ResourceArn"]))


# -- stored video (regard.video.jobs) ---------------------------------------------------------------
#: What a Start with NotificationChannel is told (docs/http-api.md, "Stored video").
NOTIFICATION_REFUSED = "regard does not send notifications; poll GetFaceDetection or GetFaceSearch"


def _jobs(ctx: Context) -> VideoJobs:
    if ctx.video_jobs is None:
        raise InvalidParameter("stored video is not available on this server")
    return ctx.video_jobs


def _start_video_job(ctx: Context, params: Params, kind: str) -> StartJobResult:
    from regard.video.jobs import JobRequest

    if "NotificationChannel" in params:
        raise InvalidParameter(NOTIFICATION_REFUSED)
    jobs = _jobs(ctx)
    s3 = params["Video"].get("S3Object")
    if not isinstance(s3, dict) or "Bucket" not in s3 or "Name" not in s3:
        raise InvalidParameter("Video.S3Object needs Bucket and Name")
    location = {k: s3[k] for k in ("Bucket", "Name", "Version") if k in s3}
    collection = params.get("CollectionId")
    if collection is not None:
        ctx.service.describe_collection(collection)  # ResourceNotFoundException before any download
    request = JobRequest(
        kind=kind,
        video={"S3Object": location},
        collection_id=collection,
        face_match_threshold=params.get("FaceMatchThreshold"),
        face_attributes=params.get("FaceAttributes", "DEFAULT"),
        job_tag=params.get("JobTag"),
        client_request_token=params.get("ClientRequestToken"),
    )
    limit = ctx.s3.settings.video_max_bytes

    def fetch(dest: Path) -> None:
        ctx.s3.fetch_to_file(location["Bucket"], location["Name"], location.get("Version"), dest, limit)

    info = ctx.info or RequestInfo(ctx.request_id)
    caller = ctx.who or Caller(ctx.caller or None, "", "", "")
    return jobs.prepare(request, caller, info.request_id, info.purpose, info.case_reference, fetch=fetch)


def _start_response(r: StartJobResult, params: Params) -> Json:
    return {"JobId": r.job_id}


@operation("StartFaceDetection", _start_response)
def start_face_detection(ctx: Context, params: Params) -> StartJobResult:
    return _start_video_job(ctx, params, "FACE_DETECTION")


@operation("StartFaceSearch", _start_response)
def start_face_search(ctx: Context, params: Params) -> StartJobResult:
    return _start_video_job(ctx, params, "FACE_SEARCH")


def _get_video_job(ctx: Context, params: Params, kind: str) -> GetJobResult:
    from regard.errors import AccessDenied, ResourceNotFound
    from regard.video.jobs import page

    job = _jobs(ctx).store.get(params["JobId"])
    if job.kind != kind:
        raise ResourceNotFound(f"The job {params['JobId']} does not exist")
    who = ctx.who
    if who is not None and not who.local and who.role != "admin" and who.access_key_id != job.access_key_id:
        # a job's results are its requester's (and administrators'): leads are not for passers-by
        raise AccessDenied(f"job {job.job_id} was started by another access key")
    return page(job, params.get("MaxResults"), params.get("NextToken"), params.get("SortBy"))


def _job_response(r: GetJobResult, key: str) -> Json:
    out: Json = {"JobStatus": r.status, "JobId": r.job_id, key: r.items}
    if r.status_message:
        out["StatusMessage"] = r.status_message
    if r.metadata:
        out["VideoMetadata"] = r.metadata
    if r.video:
        out["Video"] = r.video
    if r.job_tag:
        out["JobTag"] = r.job_tag
    return _paged(out, r.next_token)


def _get_face_detection_response(r: GetJobResult, params: Params) -> Json:
    return _job_response(r, "Faces")


def _get_face_search_response(r: GetJobResult, params: Params) -> Json:
    return _job_response(r, "Persons")


@operation("GetFaceDetection", _get_face_detection_response)
def get_face_detection(ctx: Context, params: Params) -> GetJobResult:
    return _get_video_job(ctx, params, "FACE_DETECTION")


@operation("GetFaceSearch", _get_face_search_response)
def get_face_search(ctx: Context, params: Params) -> GetJobResult:
    return _get_video_job(ctx, params, "FACE_SEARCH")
