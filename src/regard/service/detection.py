"""DetectFaces: every face of an image, analysed and described in ratios (no collection involved)."""

from __future__ import annotations

from dataclasses import dataclass

from regard.face.engine import Engine
from regard.face.imaging import image_size
from regard.service.images import FaceDetail, ImageInput, decode


@dataclass(frozen=True, slots=True)
class DetectFacesResult:
    """DetectFaces: FaceDetails, largest face first."""

    face_details: list[FaceDetail]


def detect_faces(engine: Engine, image: ImageInput) -> DetectFacesResult:
    """DetectFaces: box, landmarks, pose, quality, eyes and mouth of each face (up to 100)."""
    rgb = decode(engine, image)
    width, height = image_size(rgb)
    return DetectFacesResult(
        [FaceDetail.of(engine.analyze(rgb, d), width, height) for d in engine.detect(rgb)]
    )
