"""Images as the service receives them: decoded once, faces described in ratios once, probes chosen once.

Every face the service reports leaves here as a :class:`FaceDetail`, whose box and landmarks
are fractions of the image as Rekognition reports them, so no caller converts pixels again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from regard.errors import InvalidParameter
from regard.face.engine import Engine, Probe
from regard.face.imaging import face_crop_jpeg, image_size
from regard.service.quality import check_quality_filter, quality_reasons
from regard.store.base import as_vector
from regard.types import Box, Embeddings, FaceAnalysis, Flag, Point, Pose, Quality, RGBImage

#: Rekognition's message when an image holds no face to search or compare by (none passes the bar).
NO_FACES = "There are no faces in the image. Should be at least 1."


@dataclass(frozen=True, slots=True)
class FaceDetail:
    """Rekognition's FaceDetail of one face: box and landmarks as fractions of the image."""

    bounding_box: Box  # ratios of the image's width and height
    confidence: float  # detection confidence, 0-100
    landmarks: dict[str, Point]  # name -> (x, y) as ratios, every landmark regard measures
    pose: Pose
    quality: Quality
    eyes_open: Flag
    mouth_open: Flag

    @classmethod
    def of(cls, analysis: FaceAnalysis, width: int, height: int) -> FaceDetail:
        """The detail of a face analysed in pixels of a ``width`` x ``height`` image."""
        return cls(
            bounding_box=analysis.detection.box.to_ratios(width, height),
            confidence=float(analysis.detection.confidence),
            landmarks={k: (x / width, y / height) for k, (x, y) in analysis.landmarks.items()},
            pose=analysis.pose,
            quality=analysis.quality,
            eyes_open=analysis.eyes_open,
            mouth_open=analysis.mouth_open,
        )


@dataclass(frozen=True, slots=True)
class EncodedImage:
    """Encoded image bytes under a byte limit other than the engine's ``max_image_bytes``:
    Rekognition takes images by S3Object up to 15 MB (``Settings.max_s3_image_bytes``) while inline
    Bytes stay at 5 MB. The engine's pixel and decoded-size limits still apply."""

    data: bytes
    max_bytes: int


#: An image as the service takes it: encoded bytes (the engine's byte limit), encoded bytes with
#: their own byte limit, or a decoded RGB array.
ImageInput = bytes | EncodedImage | RGBImage


def encoded(image: ImageInput) -> bytes | None:
    """The encoded bytes of ``image``; None when it came decoded."""
    if isinstance(image, EncodedImage):
        return image.data
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    return None


def decode(engine: Engine, image: ImageInput) -> RGBImage:
    """Encoded bytes decoded by the engine (its limits apply), or an RGB array checked as one."""
    if isinstance(image, EncodedImage):
        return engine.load_image(image.data, max_bytes=image.max_bytes)
    if isinstance(image, bytes | bytearray | memoryview):
        return engine.load_image(bytes(image))
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise InvalidParameter("image must be encoded bytes or an H x W x 3 uint8 RGB array")
    return arr


@dataclass(frozen=True, slots=True)
class ProbeFace:
    """The face an image is searched or compared by: its template and detail, and the other faces'."""

    detail: FaceDetail
    embedding: Embeddings
    others: list[FaceDetail] = field(default_factory=list)  # largest first
    #: The face as a small JPEG (:func:`regard.face.imaging.face_crop_jpeg`): evidence a
    #: reviewer may see when the search raises a lead; never rendered into a response.
    crop: bytes | None = None


def probe(engine: Engine, image: RGBImage, quality_filter: str, *, others: bool = False) -> ProbeFace:
    """The largest face of ``image`` (:meth:`regard.face.engine.Engine.probe`), held to ``quality_filter``.

    InvalidParameter (:data:`NO_FACES`) when the image holds no face or its largest falls short of
    the bar: the largest face is the probe, and a smaller one never stands in for it.
    """
    check_quality_filter(quality_filter)
    found = engine.probe(image, others=others)
    width, height = image_size(image)
    if found is None or quality_reasons(found.face.analysis, quality_filter, width, height):
        raise InvalidParameter(NO_FACES)
    return probe_face(image, found)


def probe_face(image: RGBImage, found: Probe) -> ProbeFace:
    """The :class:`ProbeFace` of what :meth:`regard.face.engine.Engine.probe` found in ``image``."""
    width, height = image_size(image)
    return ProbeFace(
        detail=FaceDetail.of(found.face.analysis, width, height),
        embedding=as_vector(found.face.embedding),
        others=[FaceDetail.of(a, width, height) for a in found.others],
        crop=face_crop_jpeg(image, found.face.detection.box),
    )
