"""MTCNN: the ONNX conversion against a plain numpy forward pass, and the detector on real photos."""

from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from regard.face.detect.base import MAX_FACES, alignment_box
from regard.face.detect.mtcnn import MtcnnDetector, nms
from regard.face.engine import Engine
from regard.models.mtcnn_convert import load_weights, mtcnn_onnx_paths
from regard.types import Box

# -- a numpy reference of the Keras models (NHWC, as the weights are stored) ------------------------


def _conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    k = kernel.shape[0]
    win = sliding_window_view(x, (k, k), axis=(1, 2))  # N, H', W', C, kh, kw
    return np.einsum("nhwcij,ijco->nhwo", win, kernel, optimize=True) + bias


def _prelu(x: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, x * alpha.reshape(-1))


def _maxpool(x: np.ndarray, size: int, stride: int, same: bool) -> np.ndarray:
    if same:  # TensorFlow "same": output ceil(n / stride), extra padding at the end, ignored by max
        pads = []
        for n in x.shape[1:3]:
            total = max((-(-n // stride) - 1) * stride + size - n, 0)
            pads.append((total // 2, total - total // 2))
        x = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)), constant_values=-np.inf)
    win = sliding_window_view(x, (size, size), axis=(1, 2))[:, ::stride, ::stride]
    return np.asarray(win.max(axis=(-1, -2)))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


def _reference(net: str, x: np.ndarray) -> list[np.ndarray]:
    """Keras semantics in float64: conv 'valid', PReLU, TF max-pooling, Permute((2,1,3)) + Flatten."""
    w = [a.astype(np.float64) for a in load_weights(net)]
    pools = {
        "pnet": {0: (2, 2, True)},
        "rnet": {0: (3, 2, True), 1: (3, 2, False)},
        "onet": {0: (3, 2, True), 1: (3, 2, False), 2: (2, 2, True)},
    }[net]
    n_convs = {"pnet": 3, "rnet": 3, "onet": 4}[net]
    i = 0
    for layer in range(n_convs):
        x = _prelu(_conv(x, w[i], w[i + 1]), w[i + 2])
        i += 3
        if layer in pools:
            x = _maxpool(x, *pools[layer])
    if net == "pnet":
        box = _conv(x, w[i], w[i + 1])
        prob = _softmax(_conv(x, w[i + 2], w[i + 3]))
        return [box, prob]
    x = x.transpose(0, 2, 1, 3).reshape(x.shape[0], -1)
    x = _prelu(x @ w[i] + w[i + 1], w[i + 2])
    i += 3
    heads = []
    while i < len(w):
        heads.append(x @ w[i] + w[i + 1])
        i += 2
    heads[-1] = _softmax(heads[-1])
    return heads


@pytest.fixture(scope="module")
def onnx_paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return mtcnn_onnx_paths(tmp_path_factory.mktemp("cache"))


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("shape", [(2, 25, 31), (1, 12, 12), (1, 47, 36)])
def test_pnet_matches_numpy_reference(onnx_paths: dict[str, Path], shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, size=(*shape, 3))
    box, prob = _session(onnx_paths["pnet"]).run(None, {"input": x.transpose(0, 3, 1, 2).astype(np.float32)})
    ref_box, ref_prob = _reference("pnet", x)
    assert box.shape == (shape[0], 4, *ref_box.shape[1:3])
    np.testing.assert_allclose(box.transpose(0, 2, 3, 1), ref_box, atol=2e-4)
    np.testing.assert_allclose(prob[:, 0], ref_prob[..., 1], atol=2e-5)


@pytest.mark.parametrize("net", ["rnet", "onet"])
def test_rnet_onet_match_numpy_reference(onnx_paths: dict[str, Path], net: str) -> None:
    side = 24 if net == "rnet" else 48
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, size=(5, side, side, 3))
    got = _session(onnx_paths[net]).run(None, {"input": x.transpose(0, 3, 1, 2).astype(np.float32)})
    ref = _reference(net, x)
    assert len(got) == len(ref) == (2 if net == "rnet" else 3)
    for g, r in zip(got, ref, strict=True):
        np.testing.assert_allclose(g, r, atol=2e-4)
    # The flatten order matters: a model that flattened (H, W, C) instead would differ.
    assert np.abs(got[-1] - ref[-1]).max() < 1e-4
    assert not np.allclose(ref[0][0], ref[0][1])


def test_conversion_is_cached(tmp_path: Path) -> None:
    first = mtcnn_onnx_paths(tmp_path)
    assert set(first) == {"pnet", "rnet", "onet"}
    stamps = {net: p.stat().st_mtime_ns for net, p in first.items()}
    second = mtcnn_onnx_paths(tmp_path)
    assert second == first
    assert {net: p.stat().st_mtime_ns for net, p in second.items()} == stamps


def test_nms_union_and_min() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [2, 2, 6, 6]], dtype=np.float64)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    assert nms(boxes, scores, 0.5).tolist() == [3, 0, 2]
    # The small box lies inside the first: 'min' overlap is 1, so it suppresses the rest around it.
    assert nms(boxes, scores, 0.7, mode="min").tolist() == [3, 2]


# -- the detector ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def detector(onnx_paths: dict[str, Path]) -> MtcnnDetector:
    return MtcnnDetector(threads=1, model_paths=onnx_paths)


def _load(engine: Engine, path: Path) -> np.ndarray:
    return engine.load_image(path)


@pytest.mark.parametrize("name", ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"])
def test_finds_the_portrait_face(engine: Engine, fr_images: Path, name: str) -> None:
    image = _load(engine, fr_images / name)
    found = engine.detect(image, detector="mtcnn")
    assert found, name
    face = found[0]
    assert face.detector == "mtcnn"
    assert face.confidence > 95
    assert face.box.width > 150  # the portrait's face, not a background speck
    eye_l, eye_r, nose, mouth_l, mouth_r = face.landmarks
    assert eye_l[0] < eye_r[0] and mouth_l[0] < mouth_r[0]
    assert max(eye_l[1], eye_r[1]) < nose[1] < min(mouth_l[1], mouth_r[1])
    for x, y in face.landmarks:
        assert face.box.left <= x <= face.box.right and face.box.top <= y <= face.box.bottom
    # It agrees with dlib's HOG detector on where the face is.
    hog = engine.detect(image, detector="hog")[0]
    assert face.box.iou(hog.box) > 0.5


@pytest.mark.parametrize("name", ["obama.jpg", "obama2.jpg", "biden.jpg"])
def test_alignment_box_is_hog_like(engine: Engine, fr_images: Path, name: str) -> None:
    image = _load(engine, fr_images / name)
    face = engine.detect(image, detector="mtcnn")[0]
    hog = engine.detect(image, detector="hog")[0]
    mapped = alignment_box(face)
    assert mapped != face.box  # MTCNN registers its own map...
    assert mapped.iou(hog.box) > 0.6  # ...onto the geometry dlib's predictors were trained on
    assert mapped.iou(hog.box) > face.box.iou(hog.box)
    # Moving the face moves the mapped box with it (the map is computed from this face's landmarks).
    shift = 48
    moved = np.ascontiguousarray(np.pad(image, ((shift, 0), (shift, 0), (0, 0)), mode="edge"))
    found = engine.detect(moved, detector="mtcnn")
    assert found, "MTCNN finds the same portrait with a border added"
    m = alignment_box(found[0])
    cx, cy = mapped.left + mapped.width / 2, mapped.top + mapped.height / 2
    tx, ty = m.left + m.width / 2, m.top + m.height / 2
    assert abs(tx - (cx + shift)) < 0.05 * mapped.width and abs(ty - (cy + shift)) < 0.05 * mapped.width
    assert abs(m.width / mapped.width - 1) < 0.1  # the pyramid's levels differ a little


def test_min_face_size_is_honoured(engine: Engine, fr_images: Path, detector: MtcnnDetector) -> None:
    image = _load(engine, fr_images / "obama.jpg")
    small = np.asarray(Image.fromarray(image).resize((image.shape[1] // 4, image.shape[0] // 4)))
    faces = detector.detect(small, min_face_size=20)
    assert faces
    width = faces[0].box.width
    assert all(f.box.width >= 20 for f in faces)
    assert detector.detect(small, min_face_size=round(width * 1.5)) == []
    bigger = detector.detect(small, min_face_size=round(width * 0.8))
    assert bigger and all(f.box.width >= round(width * 0.8) for f in bigger)


def _mosaic(image: np.ndarray, face: Box, rows: int, cols: int) -> np.ndarray:
    pad = 0.3
    crop = Image.fromarray(image).crop(
        (
            round(face.left - pad * face.width),
            round(face.top - pad * face.height),
            round(face.right + pad * face.width),
            round(face.bottom + pad * face.height),
        )
    )
    cell = 80
    canvas = Image.new("RGB", (cols * cell, rows * cell), (255, 255, 255))
    for k in range(rows * cols):
        side = 50 + k % 20
        canvas.paste(crop.resize((side, side)), ((k % cols) * cell + 5, (k // cols) * cell + 5))
    return np.asarray(canvas)


def test_at_most_100_faces_largest_first(engine: Engine, fr_images: Path, detector: MtcnnDetector) -> None:
    image = _load(engine, fr_images / "obama.jpg")
    face = engine.detect(image, detector="mtcnn")[0].box
    mosaic = _mosaic(image, face, rows=11, cols=12)  # 132 faces
    boxes, _, _ = detector.raw(mosaic, min_face_size=20)
    assert len(boxes) > MAX_FACES  # the cascade sees more than Rekognition's limit...
    found = detector.detect(mosaic, min_face_size=20)
    assert len(found) == MAX_FACES  # ...and the detector reports 100, the largest
    areas = [f.box.area for f in found]
    assert areas == sorted(areas, reverse=True)
    dropped = sorted(((b[2] - b[0]) * (b[3] - b[1]) for b in boxes), reverse=True)[MAX_FACES:]
    assert max(dropped) <= min(areas) * 1.05
    assert len(engine.detect(mosaic, detector="mtcnn", max_faces=7)) == 7


def test_blank_and_tiny_images_have_no_faces(detector: MtcnnDetector) -> None:
    assert detector.detect(np.zeros((480, 640, 3), np.uint8), min_face_size=20) == []
    assert detector.detect(np.full((300, 200, 3), 200, np.uint8), min_face_size=20) == []
    assert detector.detect(np.zeros((8, 8, 3), np.uint8), min_face_size=1) == []


def test_face_at_the_edge(engine: Engine, fr_images: Path, detector: MtcnnDetector) -> None:
    image = _load(engine, fr_images / "obama.jpg")
    face = engine.detect(image, detector="mtcnn")[0].box
    # Cut the image through the middle of the face: the box is clipped to the picture.
    cut = np.ascontiguousarray(image[:, : round(face.left + 0.8 * face.width)])
    found = detector.detect(cut, min_face_size=20)
    assert found
    assert all(f.box.left >= 0 and f.box.right <= cut.shape[1] + 1e-6 for f in found)


# -- datasets --------------------------------------------------------------------------------------


def _dlib_truth(folder: Path) -> dict[str, list[Box]]:
    truth: dict[str, list[Box]] = {}
    for xml in ("training.xml", "testing.xml"):
        for img in ET.parse(folder / xml).getroot().iter("image"):
            boxes = [
                Box(*(float(b.get(k, 0)) for k in ("left", "top", "width", "height")))
                for b in img.iter("box")
                if b.get("ignore") != "1"
            ]
            truth.setdefault(str(img.get("file")), []).extend(boxes)
    return truth


@pytest.mark.dataset
def test_recall_on_dlib_detection_set(datasets: Path, engine: Engine) -> None:
    folder = datasets / "detection" / "dlib"
    truth = _dlib_truth(folder)
    hits = total = 0
    for name, boxes in truth.items():
        found = engine.detect(engine.load_image(folder / name), detector="mtcnn")
        total += len(boxes)
        hits += sum(any(t.iou(f.box) >= 0.3 for f in found) for t in boxes)
    assert total > 20
    assert hits / total >= 0.85


@pytest.mark.dataset
@pytest.mark.slow
def test_few_failures_on_celeba_dev(datasets: Path, engine: Engine) -> None:
    folder = datasets / "recognition" / "celeba_dev"
    with open(folder / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[::28]  # 50 photos spread over the set
    images = ((r["path"], engine.load_image(folder / r["path"])) for r in rows)
    missed = [path for path, image in images if not engine.detect(image, detector="mtcnn")]
    assert len(rows) == 50
    assert len(missed) <= 2, missed
