"""Rekognition operations: validated request dicts in, Rekognition-shaped response dicts out.

Each operation is a plain function ``(ctx, params) -> dict`` registered in
:data:`OPERATIONS` under its Rekognition name. They run in a worker thread (the engine
and the store block). Responses carry only fields that regard can honestly produce;
age, gender, emotions, smile, beard, glasses and the like are never inferred and are
left out. Where botocore and the AWS SDKs ignore unknown fields, an estimated false
match rate (``EstimatedFalseMatchRate``) is added next to each ``Similarity``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from regard.api.rekognition.s3 import S3Images
from regard.engine import Engine
from regard.errors import InvalidParameter
from regard.service import Service, compare, detection
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

Params = dict[str, Any]
Result = dict[str, Any]

#: Attribute names regard can produce; the others (AGE_RANGE, GENDER, EMOTIONS, ...) are never inferred.
HONEST_ATTRIBUTES = frozenset({"DEFAULT", "ALL", "EYES_OPEN", "MOUTH_OPEN"})


@dataclass
class Context:
    """What an operation may use: the engine, the image sources and (lazily) the face store."""

    engine: Engine
    s3: S3Images
    service_factory: Callable[[], Service] | None = None
    caller: str = ""
    request_id: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def service(self) -> Service:
        if self.service_factory is None:
            raise InvalidParameter("collections are not available on this server")
        return self.service_factory()


Operation = Callable[[Context, Params], Result]
OPERATIONS: dict[str, Operation] = {}


def operation(name: str) -> Callable[[Operation], Operation]:
    def register(fn: Operation) -> Operation:
        OPERATIONS[name] = fn
        return fn

    return register


# -- images --------------------------------------------------------------------------------------
def image_bytes(ctx: Context, image: Params, field_name: str = "Image") -> bytes:
    """The encoded bytes of a Rekognition ``Image`` structure (Bytes or S3Object)."""
    if "Bytes" in image and "S3Object" in image:
        raise InvalidParameter(f"{field_name}: specify either Bytes or S3Object, not both")
    if "Bytes" in image:
        data: bytes = image["Bytes"]
        return data
    if "S3Object" in image:
        s3 = image["S3Object"]
        if "Bucket" not in s3 or "Name" not in s3:
            raise InvalidParameter(f"{field_name}.S3Object needs Bucket and Name")
        return ctx.s3.fetch(s3["Bucket"], s3["Name"], s3.get("Version"))
    raise InvalidParameter(f"{field_name}: specify Bytes or S3Object")


# -- image-only operations (no collection) ------------------------------------------------------
@operation("DetectFaces")
def detect_faces(ctx: Context, params: Params) -> Result:
    r = detection.detect_faces(ctx.engine, image_bytes(ctx, params["Image"]))
    attributes = params.get("Attributes") or ["DEFAULT"]
    return {"FaceDetails": [face_detail(d, attributes) for d in r.face_details]}


@operation("CompareFaces")
def compare_faces(ctx: Context, params: Params) -> Result:
    r = compare.compare_faces(
        ctx.engine,
        image_bytes(ctx, params["SourceImage"], "SourceImage"),
        image_bytes(ctx, params["TargetImage"], "TargetImage"),
        similarity_threshold=params.get("SimilarityThreshold"),
        quality_filter=params.get("QualityFilter", "NONE"),
    )
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


def _paged(result: Result, next_token: str | None) -> Result:
    if next_token:
        result["NextToken"] = next_token
    return result


@operation("CreateCollection")
def create_collection(ctx: Context, params: Params) -> Result:
    r = ctx.service.create_collection(params["CollectionId"], params.get("Tags"))
    return {
        "StatusCode": r.status_code,
        "CollectionArn": r.collection_arn,
        "FaceModelVersion": r.face_model_version,
    }


@operation("DescribeCollection")
def describe_collection(ctx: Context, params: Params) -> Result:
    d = ctx.service.describe_collection(params["CollectionId"])
    return {
        "FaceCount": d.face_count,
        "FaceModelVersion": d.face_model_version,
        "CollectionARN": d.collection_arn,
        "CreationTimestamp": d.created_at,
        "UserCount": d.user_count,
    }


@operation("ListCollections")
def list_collections(ctx: Context, params: Params) -> Result:
    r = ctx.service.list_collections(params.get("MaxResults"), params.get("NextToken"))
    return _paged(
        {"CollectionIds": r.collection_ids, "FaceModelVersions": r.face_model_versions}, r.next_token
    )


@operation("DeleteCollection")
def delete_collection(ctx: Context, params: Params) -> Result:
    return {"StatusCode": ctx.service.delete_collection(params["CollectionId"])}


@operation("IndexFaces")
def index_faces(ctx: Context, params: Params) -> Result:
    data = image_bytes(ctx, params["Image"])
    r = ctx.service.index_faces(
        params["CollectionId"],
        data,
        external_image_id=params.get("ExternalImageId"),
        max_faces=params.get("MaxFaces"),
        quality_filter=params.get("QualityFilter", "AUTO"),
        # provenance from x-regard-source / x-regard-legal-basis, put here by regard.accountability.guard
        source_note=params.get("RegardSourceNote"),
        legal_basis=params.get("RegardLegalBasis"),
    )
    attributes = params.get("DetectionAttributes") or ["DEFAULT"]
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


@operation("ListFaces")
def list_faces(ctx: Context, params: Params) -> Result:
    r = ctx.service.list_faces(
        params["CollectionId"],
        max_results=params.get("MaxResults"),
        next_token=params.get("NextToken"),
        user_id=params.get("UserId"),
        face_ids=params.get("FaceIds"),
    )
    return _paged(
        {
            "Faces": [face(f, r.face_model_version) for f in r.faces],
            "FaceModelVersion": r.face_model_version,
        },
        r.next_token,
    )


@operation("DeleteFaces")
def delete_faces(ctx: Context, params: Params) -> Result:
    r = ctx.service.delete_faces(params["CollectionId"], params["FaceIds"])
    out: Result = {"DeletedFaces": r.deleted_faces}
    out["UnsuccessfulFaceDeletions"] = [
        {"FaceId": u.face_id, "Reasons": u.reasons} | ({"UserId": u.user_id} if u.user_id else {})
        for u in r.unsuccessful
    ]
    return out


@operation("SearchFaces")
def search_faces(ctx: Context, params: Params) -> Result:
    r = ctx.service.search_faces(
        params["CollectionId"],
        params["FaceId"],
        max_faces=params.get("MaxFaces"),
        face_match_threshold=params.get("FaceMatchThreshold"),
    )
    return {
        "SearchedFaceId": r.searched_face_id,
        "FaceMatches": [face_match(m, r.face_model_version) for m in r.face_matches],
        "FaceModelVersion": r.face_model_version,
    }


@operation("SearchFacesByImage")
def search_faces_by_image(ctx: Context, params: Params) -> Result:
    data = image_bytes(ctx, params["Image"])
    r = ctx.service.search_faces_by_image(
        params["CollectionId"],
        data,
        max_faces=params.get("MaxFaces"),
        face_match_threshold=params.get("FaceMatchThreshold"),
        quality_filter=params.get("QualityFilter", "NONE"),
    )
    return {
        "SearchedFaceBoundingBox": bounding_box(r.searched_face_bounding_box),
        "SearchedFaceConfidence": r.searched_face_confidence,
        "FaceMatches": [face_match(m, r.face_model_version) for m in r.face_matches],
        "FaceModelVersion": r.face_model_version,
    }


@operation("CreateUser")
def create_user(ctx: Context, params: Params) -> Result:
    ctx.service.create_user(
        params["CollectionId"], params["UserId"], client_request_token=params.get("ClientRequestToken")
    )
    return {}


@operation("DeleteUser")
def delete_user(ctx: Context, params: Params) -> Result:
    ctx.service.delete_user(
        params["CollectionId"], params["UserId"], client_request_token=params.get("ClientRequestToken")
    )
    return {}


@operation("ListUsers")
def list_users(ctx: Context, params: Params) -> Result:
    r = ctx.service.list_users(
        params["CollectionId"], max_results=params.get("MaxResults"), next_token=params.get("NextToken")
    )
    return _paged({"Users": [{"UserId": u.user_id, "UserStatus": u.status} for u in r.users]}, r.next_token)


@operation("AssociateFaces")
def associate_faces(ctx: Context, params: Params) -> Result:
    r = ctx.service.associate_faces(
        params["CollectionId"],
        params["UserId"],
        params["FaceIds"],
        user_match_threshold=params.get("UserMatchThreshold"),
        client_request_token=params.get("ClientRequestToken"),
    )
    return {
        "AssociatedFaces": [{"FaceId": f} for f in r.associated_faces],
        "UnsuccessfulFaceAssociations": unsuccessful_faces(r.unsuccessful, with_confidence=True),
        "UserStatus": r.user_status,
    }


@operation("DisassociateFaces")
def disassociate_faces(ctx: Context, params: Params) -> Result:
    r = ctx.service.disassociate_faces(
        params["CollectionId"],
        params["UserId"],
        params["FaceIds"],
        client_request_token=params.get("ClientRequestToken"),
    )
    return {
        "DisassociatedFaces": [{"FaceId": f} for f in r.disassociated_faces],
        "UnsuccessfulFaceDisassociations": unsuccessful_faces(r.unsuccessful, with_confidence=False),
        "UserStatus": r.user_status,
    }


@operation("SearchUsers")
def search_users(ctx: Context, params: Params) -> Result:
    r = ctx.service.search_users(
        params["CollectionId"],
        user_id=params.get("UserId"),
        face_id=params.get("FaceId"),
        user_match_threshold=params.get("UserMatchThreshold"),
        max_users=params.get("MaxUsers"),
    )
    out: Result = {
        "UserMatches": [user_match(m) for m in r.user_matches],
        "FaceModelVersion": r.face_model_version,
    }
    if r.searched_face_id is not None:
        out["SearchedFace"] = {"FaceId": r.searched_face_id}
    if r.searched_user_id is not None:
        out["SearchedUser"] = {"UserId": r.searched_user_id}
    return out


@operation("SearchUsersByImage")
def search_users_by_image(ctx: Context, params: Params) -> Result:
    data = image_bytes(ctx, params["Image"])
    r = ctx.service.search_users_by_image(
        params["CollectionId"],
        data,
        user_match_threshold=params.get("UserMatchThreshold"),
        max_users=params.get("MaxUsers"),
        quality_filter=params.get("QualityFilter", "NONE"),
    )
    return {
        "UserMatches": [user_match(m) for m in r.user_matches],
        "FaceModelVersion": r.face_model_version,
        "SearchedFace": {"FaceDetail": face_detail(r.searched_face, ["DEFAULT"])},
        "UnsearchedFaces": [
            {"FaceDetails": face_detail(u.face_detail, ["DEFAULT"]), "Reasons": u.reasons}
            for u in r.unsearched_faces
        ],
    }


@operation("TagResource")
def tag_resource(ctx: Context, params: Params) -> Result:
    ctx.service.tag_resource(params["ResourceArn"], params["Tags"])
    return {}


@operation("UntagResource")
def untag_resource(ctx: Context, params: Params) -> Result:
    ctx.service.untag_resource(params["ResourceArn"], params["TagKeys"])
    return {}


@operation("ListTagsForResource")
def list_tags_for_resource(ctx: Context, params: Params) -> Result:
    return {"Tags": ctx.service.list_tags_for_resource(params["ResourceArn"])}
