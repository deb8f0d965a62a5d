"""regard: accountable, self-hosted face recognition with Amazon Rekognition's API.

The public verbs follow the pipeline, one per stage, taking and returning plain types::

    image = regard.load_image("a.jpg")
    faces = regard.detect(image)              # list[Detection], largest first
    vectors = regard.embed(image, faces)      # (n, 128) float32
    probe = regard.probe(image)               # the largest face, analysed and embedded (or None)
    result = regard.compare(vectors[0], other)  # Comparison(distance, similarity, fmr, score)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from regard.errors import RegardError
from regard.face.engine import Engine, Probe, default_engine
from regard.types import Comparison, Detection, Embeddings, Face, FaceAnalysis, RGBImage

__version__ = "0.1.0"

__all__ = [
    "Comparison",
    "Detection",
    "Engine",
    "Face",
    "FaceAnalysis",
    "Probe",
    "RegardError",
    "__version__",
    "analyze",
    "compare",
    "detect",
    "embed",
    "faces",
    "load_image",
    "probe",
]


def load_image(source: bytes | str | Path) -> RGBImage:
    """Decode bytes or a file into an RGB array (EXIF orientation applied, limits enforced)."""
    return default_engine().load_image(source)


def detect(image: RGBImage, *, detector: str | None = None, max_faces: int = 100) -> list[Detection]:
    """Faces in an image, largest first."""
    return default_engine().detect(image, detector=detector, max_faces=max_faces)


def analyze(image: RGBImage, detection: Detection) -> FaceAnalysis:
    """Landmarks, pose, quality, eyes and mouth of one detected face."""
    return default_engine().analyze(image, detection)


def embed(image: RGBImage, detections: list[Detection]) -> Embeddings:
    """One 128-d template per detection."""
    return default_engine().embed(image, detections)


def faces(image: RGBImage, *, max_faces: int = 100) -> list[Face]:
    """Detect, analyze and embed every face."""
    return default_engine().faces(image, max_faces=max_faces)


def probe(image: RGBImage) -> Probe | None:
    """The face an image stands for (its largest), analysed and embedded; None when it has none."""
    return default_engine().probe(image)


def compare(a: np.ndarray, b: np.ndarray) -> Comparison:
    """Calibrated comparison of two templates."""
    return default_engine().compare(a, b)
