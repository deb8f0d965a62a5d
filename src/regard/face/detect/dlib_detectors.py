"""dlib's two detectors: the HOG frontal detector and the MMOD CNN detector."""

from __future__ import annotations

import math
import threading

import dlib
import numpy as np

from regard.face.detect.base import clip_box, landmarks5_from_68
from regard.face.landmarks import ShapePredictors
from regard.models import dlib_model_path
from regard.types import Box, Detection, RGBImage

#: Smallest face (pixels) each detector finds without upsampling.
HOG_WINDOW = 80
MMOD_WINDOW = 40


def upsamples_for(min_face_size: int, window: int, limit: int = 2) -> int:
    """How many 2x upsamples make faces of ``min_face_size`` visible to a ``window`` detector."""
    if min_face_size >= window:
        return 0
    return min(limit, math.ceil(math.log2(window / max(min_face_size, 1))))


def _hog_confidence(score: float) -> float:
    """Map the HOG SVM margin (about -0.5..3) onto 0-100 with a logistic curve."""
    return float(100.0 / (1.0 + math.exp(-3.0 * (score + 0.5))))


class HogDetector:
    """dlib's frontal face detector (HOG + linear SVM, 5 pose-specific filters)."""

    name = "hog"
    version = "dlib-hog-1"

    def __init__(self, predictors: ShapePredictors, *, max_upsample: int = 1) -> None:
        self._detector = dlib.get_frontal_face_detector()
        self._lock = threading.Lock()  # dlib's object_detector is not safe for concurrent use
        self._predictors = predictors
        self._max_upsample = max_upsample

    def detect(self, image: RGBImage, *, min_face_size: int) -> list[Detection]:
        ups = upsamples_for(min_face_size, HOG_WINDOW, self._max_upsample)
        with self._lock:
            rects, scores, _ = self._detector.run(image, ups, -0.2)
        h, w = image.shape[:2]
        out = []
        for rect, score in zip(rects, scores, strict=True):
            box = clip_box(Box(rect.left(), rect.top(), rect.width(), rect.height()), w, h)
            if box.width < min_face_size or box.area <= 0:
                continue
            pts = landmarks5_from_68(self._predictors.points68(image, box))
            out.append(Detection(box, _hog_confidence(score), pts, self.name))
        return out


class MmodDetector:
    """dlib's MMOD CNN face detector, run by dlib (the reference implementation)."""

    name = "cnn"
    version = "dlib-mmod-1"

    def __init__(self, predictors: ShapePredictors, *, max_upsample: int = 1) -> None:
        self._lock = threading.Lock()
        self._net = dlib.cnn_face_detection_model_v1(str(dlib_model_path("mmod")))
        self._predictors = predictors
        self._max_upsample = max_upsample

    def detect(self, image: RGBImage, *, min_face_size: int) -> list[Detection]:
        ups = upsamples_for(min_face_size, MMOD_WINDOW, self._max_upsample)
        with self._lock:
            found = self._net(image, ups)
        h, w = image.shape[:2]
        out = []
        for det in found:
            r = det.rect
            box = clip_box(Box(r.left(), r.top(), r.width(), r.height()), w, h)
            if box.width < min_face_size or box.area <= 0:
                continue
            pts = landmarks5_from_68(self._predictors.points68(image, box))
            conf = float(100.0 / (1.0 + np.exp(-2.0 * det.confidence)))
            out.append(Detection(box, conf, pts, self.name))
        return out
