"""The Detector protocol and helpers shared by every detector."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
from PIL import Image

from regard.types import Box, Detection, Point, RGBImage

#: At most this many faces are reported per image (Rekognition's limit).
MAX_FACES = 100


class Detector(Protocol):
    """Finds faces. Implementations return boxes in the pixels of the image they were given."""

    name: str
    #: Changes whenever the detector's output may change (weights, graphs or the code around them);
    #: caches of detections and templates are keyed by it.
    version: str

    def detect(self, image: RGBImage, *, min_face_size: int) -> list[Detection]:
        """All faces at least ``min_face_size`` pixels wide, any order."""
        ...


def downscale(image: RGBImage, max_side: int) -> tuple[RGBImage, float]:
    """Shrink ``image`` so its longest side is at most ``max_side``; return it and the factor used."""
    height, width = image.shape[:2]
    longest = max(height, width)
    if max_side <= 0 or longest <= max_side:
        return image, 1.0
    scale = max_side / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    return np.ascontiguousarray(small, dtype=np.uint8), scale


def rescale(detection: Detection, factor: float) -> Detection:
    """Map a detection found on a resized image back by dividing coordinates by ``factor``."""
    if factor == 1.0:
        return detection
    b = detection.box
    box = Box(b.left / factor, b.top / factor, b.width / factor, b.height / factor)
    pts = tuple((x / factor, y / factor) for x, y in detection.landmarks)
    return Detection(box, detection.confidence, pts, detection.detector)  # type: ignore[arg-type]


def landmarks5_from_68(points: Sequence[Point]) -> tuple[Point, Point, Point, Point, Point]:
    """Eye centres, nose tip and mouth corners from dlib's 68-point layout (image left first)."""
    pts = np.asarray(points, dtype=np.float64)
    eye_a = pts[36:42].mean(axis=0)  # the eye on the image's left
    eye_b = pts[42:48].mean(axis=0)
    nose = pts[30]
    mouth_a = pts[48]
    mouth_b = pts[54]

    def p(v: np.ndarray) -> Point:
        return (float(v[0]), float(v[1]))

    return (p(eye_a), p(eye_b), p(nose), p(mouth_a), p(mouth_b))


#: Detector name -> map from its detection to the box dlib's shape predictors expect (they were
#: trained on dlib detector boxes). Detectors that draw boxes differently register one here.
ALIGNMENT_BOXES: dict[str, Callable[[Detection], Box]] = {}


def alignment_box(detection: Detection) -> Box:
    """The box to initialise the shape predictors from (the detection's own box by default)."""
    mapper = ALIGNMENT_BOXES.get(detection.detector)
    return detection.box if mapper is None else mapper(detection)


def finalize(detections: list[Detection], max_faces: int = MAX_FACES) -> list[Detection]:
    """Largest first, at most ``max_faces``."""
    ordered = sorted(detections, key=lambda d: d.box.area, reverse=True)
    return ordered[: max(0, min(max_faces, MAX_FACES))]


def clip_box(box: Box, width: int, height: int) -> Box:
    """Clip a box to the image."""
    left = min(max(box.left, 0.0), float(width))
    top = min(max(box.top, 0.0), float(height))
    right = min(max(box.right, 0.0), float(width))
    bottom = min(max(box.bottom, 0.0), float(height))
    return Box(left, top, right - left, bottom - top)
