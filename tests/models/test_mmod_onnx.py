"""The ONNX MMOD detector finds the same faces as dlib's (IoU >= 0.95, same scores)."""

from __future__ import annotations

import csv
from pathlib import Path

import dlib
import numpy as np
import pytest

from regard.config import Settings
from regard.face.detect.base import downscale
from regard.face.detect.mmod_onnx import MmodOnnxDetector, pyramid_rects, pyramid_up
from regard.face.engine import Engine
from regard.models import dlib_model_path
from regard.types import Box


@pytest.fixture(scope="module")
def detector(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> MmodOnnxDetector:
    settings = Settings.from_env(cache_dir=tmp_path_factory.mktemp("cache"), threads=2, onnx_provider="cpu")
    return MmodOnnxDetector(engine.predictors, settings)


@pytest.fixture(scope="module")
def reference() -> dlib.cnn_face_detection_model_v1:
    return dlib.cnn_face_detection_model_v1(str(dlib_model_path("mmod")))


def _compare(
    detector: MmodOnnxDetector, reference: dlib.cnn_face_detection_model_v1, image: np.ndarray, ups: int
) -> int:
    ref = [(d.rect, d.confidence) for d in reference(image, ups)]
    got = detector.raw(image, ups)
    assert len(got) == len(ref)
    for (r_rect, r_score), (g_rect, g_score) in zip(ref, got, strict=True):
        a = Box(r_rect.left(), r_rect.top(), r_rect.width(), r_rect.height())
        b = Box(g_rect.left, g_rect.top, g_rect.width, g_rect.height)
        assert a.iou(b) >= 0.95
        assert abs(r_score - g_score) < 1e-3
    return len(ref)


def test_pyramid_layout() -> None:
    rects, rows, cols = pyramid_rects(480, 640)
    assert (rects[0].left, rects[0].top, rects[0].width, rects[0].height) == (11, 11, 640, 480)
    assert cols == 640 + 22
    assert [r.height for r in rects[:3]] == [480, 400, 333]
    assert all(r.left >= 0 and r.right < cols and r.top >= 0 and r.bottom < rows for r in rects)


def test_pyramid_up_size() -> None:
    up = pyramid_up(np.zeros((10, 20, 3), dtype=np.uint8) + 7)
    assert up.shape == (21, 42, 3)
    assert (up == 7).all()


def test_same_detections_as_dlib_on_portrait(
    detector: MmodOnnxDetector, reference: dlib.cnn_face_detection_model_v1, engine: Engine, fr_images: Path
) -> None:
    image, _ = downscale(engine.load_image(fr_images / "obama.jpg"), 400)
    assert _compare(detector, reference, image, 0) == 1
    small, _ = downscale(image, 200)
    assert _compare(detector, reference, small, 1) == 1


def test_engine_cnn_is_onnx(engine: Engine, fr_images: Path) -> None:
    assert isinstance(engine.detector("cnn"), MmodOnnxDetector)
    image, _ = downscale(engine.load_image(fr_images / "obama.jpg"), 400)
    onnx = engine.detect(image, detector="cnn", min_face_size=40)
    ref = engine.detect(image, detector="cnn-dlib", min_face_size=40)
    assert len(onnx) == len(ref) == 1
    assert onnx[0].box.iou(ref[0].box) >= 0.95
    assert abs(onnx[0].confidence - ref[0].confidence) < 0.1


@pytest.mark.dataset
@pytest.mark.slow
def test_same_detections_as_dlib_on_celeba(
    detector: MmodOnnxDetector, reference: dlib.cnn_face_detection_model_v1, engine: Engine, datasets: Path
) -> None:
    root = datasets / "recognition" / "celeba_dev"
    with open(root / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    found = 0
    for row in rows[::200]:
        image, _ = downscale(engine.load_image(root / row["path"]), 320)
        found += _compare(detector, reference, image, 0)
    assert found >= 4


@pytest.mark.parametrize("shape", [(1, 1), (5, 5), (1, 500), (10, 10)])
def test_tiny_images_have_no_faces(detector: MmodOnnxDetector, shape: tuple[int, int]) -> None:
    image = np.full((*shape, 3), 128, dtype=np.uint8)
    for ups in (0, 1):
        assert detector.raw(image, ups) == []
    assert detector.detect(image, min_face_size=20) == []
