"""One renderer per Rekognition shape: BoundingBox, Landmarks, FaceDetail, ComparedFace, Face,
FaceMatch and UserMatch, as the JSON dicts Rekognition defines.

The HTTP API, the command line's ``--json`` output and the erasure and subject-access exports all
render through these functions, so a shape is written once. Boxes arrive in ratios (the service
converts them once). Nothing here knows HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from regard.scoring.calibrate import fmr_from_similarity
from regard.service.images import FaceDetail
from regard.service.search import FaceMatch, UserMatch
from regard.store.base import FaceRecord
from regard.types import Box

Json = dict[str, Any]

#: Landmarks reported with Attributes=DEFAULT (Rekognition's five); ALL reports all thirty.
DEFAULT_LANDMARKS = ("eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight")


def bounding_box(box: Box) -> Json:
    """Rekognition's BoundingBox from a box already in ratios."""
    return {"Width": box.width, "Height": box.height, "Left": box.left, "Top": box.top}


def landmarks(face: FaceDetail, names: Sequence[str]) -> list[Json]:
    """Rekognition's Landmarks: the named points of a face, in ratios."""
    return [
        {"Type": name, "X": face.landmarks[name][0], "Y": face.landmarks[name][1]}
        for name in names
        if name in face.landmarks
    ]


def compared_face(face: FaceDetail) -> Json:
    """Rekognition's ComparedFace (no Emotions or Smile: regard infers neither)."""
    return {
        "BoundingBox": bounding_box(face.bounding_box),
        "Confidence": face.confidence,
        "Landmarks": landmarks(face, DEFAULT_LANDMARKS),
        "Pose": {"Roll": face.pose.roll, "Yaw": face.pose.yaw, "Pitch": face.pose.pitch},
        "Quality": {"Brightness": face.quality.brightness, "Sharpness": face.quality.sharpness},
    }


def face_detail(face: FaceDetail, attributes: Sequence[str]) -> Json:
    """Rekognition's FaceDetail, limited to what regard measures.

    The DEFAULT fields (BoundingBox, Confidence, Pose, Quality, five Landmarks) are always
    present; ALL adds every landmark, EyesOpen and MouthOpen; EYES_OPEN and MOUTH_OPEN add
    one each. Requested attributes regard never infers (AGE_RANGE, GENDER, EMOTIONS, SMILE,
    ...) are left out.
    """
    wanted = set(attributes)
    everything = "ALL" in wanted
    out: Json = {"BoundingBox": bounding_box(face.bounding_box)}
    if everything or "EYES_OPEN" in wanted:
        out["EyesOpen"] = {"Value": face.eyes_open.value, "Confidence": face.eyes_open.confidence}
    if everything or "MOUTH_OPEN" in wanted:
        out["MouthOpen"] = {"Value": face.mouth_open.value, "Confidence": face.mouth_open.confidence}
    names = list(face.landmarks) if everything else DEFAULT_LANDMARKS
    out["Landmarks"] = landmarks(face, names)
    out["Pose"] = {"Roll": face.pose.roll, "Yaw": face.pose.yaw, "Pitch": face.pose.pitch}
    out["Quality"] = {"Brightness": face.quality.brightness, "Sharpness": face.quality.sharpness}
    out["Confidence"] = face.confidence
    return out


def with_fmr(similarity: float, extra: Json | None = None) -> Json:
    """``Similarity`` plus the non-standard ``EstimatedFalseMatchRate`` it stands for."""
    out: Json = {"Similarity": similarity, "EstimatedFalseMatchRate": fmr_from_similarity(similarity)}
    if extra:
        out.update(extra)
    return out


def face(record: FaceRecord, model_version: str | None = None) -> Json:
    """Rekognition's Face from a stored :class:`regard.store.base.FaceRecord`."""
    out: Json = {
        "FaceId": record.face_id,
        "BoundingBox": bounding_box(record.bounding_box),
        "ImageId": record.image_id,
        "Confidence": record.confidence,
    }
    if record.external_image_id is not None:
        out["ExternalImageId"] = record.external_image_id
    if model_version is not None:
        out["IndexFacesModelVersion"] = model_version
    if record.user_id is not None:
        out["UserId"] = record.user_id
    return out


def face_match(match: FaceMatch, model_version: str | None = None) -> Json:
    """Rekognition's FaceMatch, with the estimated false-match rate of its similarity."""
    return with_fmr(
        match.similarity, {"EstimatedFalseMatchRate": match.fmr, "Face": face(match.face, model_version)}
    )


def user_match(match: UserMatch) -> Json:
    """Rekognition's UserMatch, with the estimated false-match rate of its similarity."""
    return with_fmr(
        match.similarity,
        {
            "EstimatedFalseMatchRate": match.fmr,
            "User": {"UserId": match.user.user_id, "UserStatus": match.user.status},
        },
    )


class _Unsuccessful(Protocol):
    @property
    def face_id(self) -> str: ...
    @property
    def user_id(self) -> str | None: ...
    @property
    def reasons(self) -> list[str]: ...


def unsuccessful_faces(items: Sequence[_Unsuccessful], *, with_confidence: bool) -> list[Json]:
    """Rekognition's UnsuccessfulFaceAssociation (``with_confidence``), -Disassociation or -Deletion."""
    out: list[Json] = []
    for u in items:
        row: Json = {"FaceId": u.face_id, "Reasons": u.reasons}
        if u.user_id:
            row["UserId"] = u.user_id
        confidence = getattr(u, "confidence", None)
        if with_confidence and confidence is not None:
            row["Confidence"] = confidence
        out.append(row)
    return out
