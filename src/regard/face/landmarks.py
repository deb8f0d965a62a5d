"""dlib's shape predictors: 5 points for alignment, 68 points for analysis."""

from __future__ import annotations

import threading
from functools import cached_property

import dlib
import numpy as np

from regard.models import dlib_model_path
from regard.types import Box, Point, RGBImage


def to_dlib_rect(box: Box) -> dlib.rectangle:
    return dlib.rectangle(round(box.left), round(box.top), round(box.right) - 1, round(box.bottom) - 1)


class ShapePredictors:
    """Loads each predictor once, on first use; safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @cached_property
    def five(self) -> dlib.shape_predictor:
        with self._lock:
            return dlib.shape_predictor(str(dlib_model_path("shape5")))

    @cached_property
    def sixty_eight(self) -> dlib.shape_predictor:
        with self._lock:
            return dlib.shape_predictor(str(dlib_model_path("shape68")))

    def shape5(self, image: RGBImage, box: Box) -> dlib.full_object_detection:
        return self.five(image, to_dlib_rect(box))

    def points68(self, image: RGBImage, box: Box) -> tuple[Point, ...]:
        shape = self.sixty_eight(image, to_dlib_rect(box))
        return tuple((float(p.x), float(p.y)) for p in shape.parts())


def shape_points(shape: dlib.full_object_detection) -> np.ndarray:
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
