"""Rekognition operations: validated request dicts in, Rekognition-shaped response dicts out.

Each operation is a plain function ``(ctx, params) -> dict`` registered in
:data:`OPERATIONS` under its Rekognition name. They run in a worker thread (the engine
and the store block). Responses carry only fields that regard can honestly produce;
age, gender, emotions, smile, beard, glasses and the like are never inferred and are
left out. Where botocore and the AWS SDKs ignore unknown fields, an estimated false
match rate (``EstimatedFalseMatchRate``) is added next to each ``Similarity``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from regard.api.rekognition.s3 import S3Images
from regard.calibrate import fmr_from_similarity
from regard.engine import Engine
from regard.errors import InvalidParameter
from regard.imaging import image_size
from regard.types import Face, FaceAnalysis, RGBImage

Params = dict[str, Any]
Result = dict[str, Any]

#: Landmarks reported with Attributes=DEFAULT (Rekognition's five); ALL reports all thirty.
DEFAULT_LANDMARKS = ("eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight")
#: Attribute names regard can produce; the others (AGE_RANGE, GENDER, EMOTIONS, ...) are never inferred.
HONEST_ATTRIBUTES = frozenset({"DEFAULT", "ALL", "EYES_OPEN", "MOUTH_OPEN"})


@dataclass
class Context:
    """What an operation may use: the engine, the image sources and (lazily) the face store."""

    engine: Engine
    s3: S3Images
    service_factory: Callable[[], Any] | None = None
    caller: str = ""
    request_id: str = ""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def service(self) -> Any:
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


def load(ctx: Context, image: Params, field_name: str = "Image") -> RGBImage:
    return ctx.engine.load_image(image_bytes(ctx, image, field_name))


# -- face JSON -----------------------------------------------------------------------------------
def bounding_box(face: FaceAnalysis, width: int, height: int) -> Result:
    return face.detection.box.to_ratios(width, height)


def landmarks_json(face: FaceAnalysis, width: int, height: int, names: Sequence[str]) -> list[Result]:
    return [
        {"Type": name, "X": face.landmarks[name][0] / width, "Y": face.landmarks[name][1] / height}
        for name in names
        if name in face.landmarks
    ]


def compared_face(face: FaceAnalysis, width: int, height: int) -> Result:
    """Rekognition's ComparedFace (no Emotions or Smile: regard infers neither)."""
    return {
        "BoundingBox": bounding_box(face, width, height),
        "Confidence": face.detection.confidence,
        "Landmarks": landmarks_json(face, width, height, DEFAULT_LANDMARKS),
        "Pose": {"Roll": face.pose.roll, "Yaw": face.pose.yaw, "Pitch": face.pose.pitch},
        "Quality": {"Brightness": face.quality.brightness, "Sharpness": face.quality.sharpness},
    }


def face_detail(face: FaceAnalysis, width: int, height: int, attributes: Sequence[str]) -> Result:
    """Rekognition's FaceDetail, limited to what regard measures.

    The DEFAULT fields (BoundingBox, Confidence, Pose, Quality, five Landmarks) are always
    present; ALL adds every landmark, EyesOpen and MouthOpen; EYES_OPEN and MOUTH_OPEN add
    one each. Requested attributes regard never infers (AGE_RANGE, GENDER, EMOTIONS, SMILE,
    ...) are left out.
    """
    wanted = set(attributes)
    everything = "ALL" in wanted
    out: Result = {"BoundingBox": bounding_box(face, width, height)}
    if everything or "EYES_OPEN" in wanted:
        out["EyesOpen"] = {"Value": face.eyes_open.value, "Confidence": face.eyes_open.confidence}
    if everything or "MOUTH_OPEN" in wanted:
        out["MouthOpen"] = {"Value": face.mouth_open.value, "Confidence": face.mouth_open.confidence}
    names = list(face.landmarks) if everything else DEFAULT_LANDMARKS
    out["Landmarks"] = landmarks_json(face, width, height, names)
    out["Pose"] = {"Roll": face.pose.roll, "Yaw": face.pose.yaw, "Pitch": face.pose.pitch}
    out["Quality"] = {"Brightness": face.quality.brightness, "Sharpness": face.quality.sharpness}
    out["Confidence"] = face.detection.confidence
    return out


# -- quality filter ------------------------------------------------------------------------------
#: Per QualityFilter level: smallest box side (px), max |yaw|/|pitch| (deg), min sharpness,
#: min brightness and min detection confidence. AUTO uses the LOW bar so that indexing does not
#: silently drop usable faces; every number is regard's own choice, documented in
#: docs/rekognition-coverage.md.
QUALITY_BARS: dict[str, tuple[float, float, float, float, float]] = {
    "LOW": (20.0, 60.0, 3.0, 8.0, 50.0),
    "AUTO": (20.0, 60.0, 3.0, 8.0, 50.0),
    "MEDIUM": (40.0, 45.0, 8.0, 15.0, 75.0),
    "HIGH": (60.0, 30.0, 15.0, 25.0, 90.0),
}


def quality_reasons(face: FaceAnalysis, level: str) -> list[str]:
    """Rekognition's Reasons why ``face`` fails QualityFilter ``level`` (empty when it passes)."""
    if level == "NONE":
        return []
    side, pose, sharp, bright, conf = QUALITY_BARS[level]
    reasons: list[str] = []
    b = face.detection.box
    if min(b.width, b.height) < side:
        reasons.append("SMALL_BOUNDING_BOX")
    if abs(face.pose.yaw) > pose or abs(face.pose.pitch) > pose:
        reasons.append("EXTREME_POSE")
    if face.quality.sharpness < sharp:
        reasons.append("LOW_SHARPNESS")
    if face.quality.brightness < bright:
        reasons.append("LOW_BRIGHTNESS")
    if face.detection.confidence < conf:
        reasons.append("LOW_CONFIDENCE")
    return reasons


def with_fmr(similarity: float, extra: Result | None = None) -> Result:
    """``Similarity`` plus the non-standard ``EstimatedFalseMatchRate`` it stands for."""
    out: Result = {"Similarity": similarity, "EstimatedFalseMatchRate": fmr_from_similarity(similarity)}
    if extra:
        out.update(extra)
    return out


# -- engine-only operations ----------------------------------------------------------------------
@operation("DetectFaces")
def detect_faces(ctx: Context, params: Params) -> Result:
    image = load(ctx, params["Image"])
    width, height = image_size(image)
    attributes = params.get("Attributes") or ["DEFAULT"]
    detections = ctx.engine.detect(image)
    details = [face_detail(ctx.engine.analyze(image, d), width, height, attributes) for d in detections]
    return {"FaceDetails": details}


def _largest(faces: list[Face]) -> Face | None:
    return max(faces, key=lambda f: f.detection.box.area) if faces else None


@operation("CompareFaces")
def compare_faces(ctx: Context, params: Params) -> Result:
    threshold = float(params.get("SimilarityThreshold", 80.0))
    level = params.get("QualityFilter", "NONE")
    source = load(ctx, params["SourceImage"], "SourceImage")
    target = load(ctx, params["TargetImage"], "TargetImage")
    sw, sh = image_size(source)
    tw, th = image_size(target)
    probe = _largest(ctx.engine.faces(source))
    if probe is None or quality_reasons(probe.analysis, level):
        raise InvalidParameter("There are no faces in the image. Should be at least 1.")
    matches: list[Result] = []
    unmatched: list[Result] = []
    for face in ctx.engine.faces(target):
        if quality_reasons(face.analysis, level):
            continue
        result = ctx.engine.compare(probe.embedding, face.embedding)
        described = compared_face(face.analysis, tw, th)
        if result.similarity >= threshold:
            match = with_fmr(result.similarity, {"Face": described})
            match["EstimatedFalseMatchRate"] = result.fmr
            matches.append(match)
        else:
            unmatched.append(described)
    matches.sort(key=lambda m: -float(m["Similarity"]))
    return {
        "SourceImageFace": {
            "BoundingBox": bounding_box(probe.analysis, sw, sh),
            "Confidence": probe.detection.confidence,
        },
        "FaceMatches": matches,
        "UnmatchedFaces": unmatched,
    }
