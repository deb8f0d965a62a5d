"""Align faces to the descriptor's 150x150 chip.

dlib's 5-point shape predictor places two corners of each eye and the base of the
nose inside the detection box; a similarity transform (rotation, uniform scale,
translation) maps those points onto dlib's chip template with 25% padding. This is
the alignment the ResNet descriptor was trained on, so every embedding backend
consumes the same chips.
"""

from __future__ import annotations

from collections.abc import Sequence

import dlib
import numpy as np

from regard.face.landmarks import ShapePredictors
from regard.types import Box, RGBImage

CHIP_SIZE = 150
CHIP_PADDING = 0.25
PREPROCESSING = f"dlib-shape5-similarity-chip{CHIP_SIZE}-pad{CHIP_PADDING}"


def face_chips(image: RGBImage, boxes: Sequence[Box], predictors: ShapePredictors) -> np.ndarray:
    """One aligned ``150 x 150 x 3`` uint8 chip per box, stacked into ``N x 150 x 150 x 3``."""
    if not boxes:
        return np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), dtype=np.uint8)
    shapes = dlib.full_object_detections()
    for box in boxes:
        shapes.append(predictors.shape5(image, box))
    chips = dlib.get_face_chips(image, shapes, size=CHIP_SIZE, padding=CHIP_PADDING)
    return np.stack([np.asarray(c, dtype=np.uint8) for c in chips])
