"""Plain value types shared by every stage of the engine.

Coordinates are in pixels of the decoded, orientation-corrected image unless a
name says otherwise (``*_ratio`` fields are fractions of the image size, as
Rekognition reports them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

#: An RGB image: height x width x 3, uint8.
RGBImage = npt.NDArray[np.uint8]
#: One descriptor per row, float32.
Embeddings = npt.NDArray[np.float32]

Point = tuple[float, float]

#: Names of the five detection landmarks, in order (left/right as seen in the image).
LANDMARKS5 = ("eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight")


@dataclass(frozen=True, slots=True)
class Box:
    """An axis-aligned box in pixels: left, top, width, height."""

    left: float
    top: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.left + self.width

    @property
    def bottom(self) -> float:
        return self.top + self.height

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    def iou(self, other: Box) -> float:
        """Intersection over union with another box."""
        ix = max(0.0, min(self.right, other.right) - max(self.left, other.left))
        iy = max(0.0, min(self.bottom, other.bottom) - max(self.top, other.top))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def to_ratios(self, image_width: int, image_height: int) -> Box:
        """This pixel box as fractions of the image's width and height (Rekognition's BoundingBox)."""
        return Box(
            left=self.left / image_width,
            top=self.top / image_height,
            width=self.width / image_width,
            height=self.height / image_height,
        )


@dataclass(frozen=True, slots=True)
class Detection:
    """One face found by a detector.

    ``confidence`` is on 0-100 as Rekognition reports it. ``landmarks`` holds the
    five points named in :data:`LANDMARKS5`, in that order.
    """

    box: Box
    confidence: float
    landmarks: tuple[Point, Point, Point, Point, Point]
    detector: str


@dataclass(frozen=True, slots=True)
class Pose:
    """Head pose in degrees (Rekognition's Roll, Yaw, Pitch)."""

    roll: float
    yaw: float
    pitch: float


@dataclass(frozen=True, slots=True)
class Quality:
    """Image quality of the face region on 0-100."""

    brightness: float
    sharpness: float


@dataclass(frozen=True, slots=True)
class Flag:
    """A yes/no attribute with a confidence on 0-100."""

    value: bool
    confidence: float


@dataclass(frozen=True, slots=True)
class FaceAnalysis:
    """What :func:`regard.face.analyze` reports about one detected face."""

    detection: Detection
    landmarks: dict[str, Point]
    pose: Pose
    quality: Quality
    eyes_open: Flag
    mouth_open: Flag
    landmarks68: tuple[Point, ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class ModelIdentity:
    """Which embedding model produced a template; templates of different models never mix."""

    name: str
    version: str
    weights_sha256: str
    preprocessing: str

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}:{self.weights_sha256[:16]}"


@dataclass(frozen=True, slots=True)
class Comparison:
    """The outcome of comparing two templates."""

    distance: float  # Euclidean distance between the templates
    similarity: float
    fmr: float
    score: float  # the distance after fair score normalization (equals distance without a normalizer)


@dataclass(frozen=True, slots=True)
class Face:
    """A detected face with its analysis and template, ready to compare or store."""

    detection: Detection
    analysis: FaceAnalysis
    embedding: Embeddings  # shape (128,), float32
