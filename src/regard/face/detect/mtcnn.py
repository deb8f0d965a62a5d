"""MTCNN (Zhang et al. 2016) on onnxruntime: a three-stage cascade of small convolutional nets.

1. P-net scans an image pyramid (factor 0.709, largest scale ``12 / min_face_size``) and proposes
   12x12-window candidates with a face probability and a box regression; per-scale NMS (IoU 0.5),
   cross-scale NMS (0.7), box calibration, squaring.
2. R-net re-scores 24x24 crops of the candidates; threshold, calibration, NMS (0.7), squaring.
3. O-net re-scores 48x48 crops and regresses the box and five landmarks; threshold, calibration,
   NMS (0.7, intersection over the smaller box).

The nets are converted from the ``mtcnn`` package's weights once and cached
(:func:`regard.models.mtcnn_convert.mtcnn_onnx_paths`). Crops and the pyramid are made with Pillow
from the uint8 image, then scaled to [-1, 1] with ``(x - 127.5) / 128``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from PIL import Image

from regard.face.detect.base import ALIGNMENT_BOXES, MAX_FACES, clip_box
from regard.models.mtcnn_convert import CONVERTER_VERSION, mtcnn_onnx_paths
from regard.types import Box, Detection, Point, RGBImage

FloatArray = npt.NDArray[np.float32]

#: Face-probability thresholds of P-net, R-net and O-net. P and R as in the ``mtcnn`` package; O-net
#: stricter than its 0.8 (the paper's code used 0.7): blurred background shapes reached 0.75-0.83
#: on the face_recognition portraits, while 99% of the faces MTCNN finds on celeba_dev score >= 0.9.
THRESHOLDS = (0.6, 0.7, 0.9)
#: Ratio between consecutive pyramid levels.
SCALE_FACTOR = 0.709
#: P-net's window and stride in pixels of a pyramid level.
PNET_CELL = 12
PNET_STRIDE = 2
#: Upper bound on candidates carried from one stage to the next (keeps worst cases bounded).
MAX_CANDIDATES = 2000


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; indices kept, best score first.

    ``boxes`` is ``N x 4`` (x1, y1, x2, y2). ``mode`` "union" divides the overlap by the union,
    "min" by the smaller box's area. The pairwise overlaps are computed at once (N is at most
    a few thousand), then one pass in score order keeps each box no kept box overlaps too much.
    """
    n = boxes.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(-scores, kind="stable")
    b = boxes[order].astype(np.float64)
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    area = np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0)
    iw = np.maximum(0.0, np.minimum(x2[:, None], x2[None, :]) - np.maximum(x1[:, None], x1[None, :]))
    ih = np.maximum(0.0, np.minimum(y2[:, None], y2[None, :]) - np.maximum(y1[:, None], y1[None, :]))
    inter = iw * ih
    if mode == "min":
        denom = np.minimum(area[:, None], area[None, :])
    else:
        denom = area[:, None] + area[None, :] - inter
    suppress = inter > threshold * denom  # overlap > threshold, and never for an empty pair
    suppress &= denom > 0
    alive = np.ones(n, dtype=bool)
    keep: list[int] = []
    for i in range(n):
        if alive[i]:
            keep.append(i)
            alive &= ~suppress[i]
    return order[np.asarray(keep, dtype=np.int64)]


def calibrate(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply box regressions (offsets as fractions of the box's width and height)."""
    w = (boxes[:, 2] - boxes[:, 0])[:, None]
    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    out: np.ndarray = boxes + reg * np.concatenate([w, h, w, h], axis=1)
    return out


def square(boxes: np.ndarray) -> np.ndarray:
    """Grow each box to a square of its longer side, around the same centre."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    cx = boxes[:, 0] + w / 2
    cy = boxes[:, 1] + h / 2
    return np.stack([cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], axis=1)


def pyramid(height: int, width: int, min_face_size: int, factor: float = SCALE_FACTOR) -> list[float]:
    """Scales at which P-net's 12-pixel window sees faces from ``min_face_size`` up to the image."""
    scale = PNET_CELL / max(min_face_size, 1)
    side = min(height, width) * scale
    scales = []
    while side >= PNET_CELL:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def normalize(pixels: np.ndarray) -> FloatArray:
    """uint8 ``... x H x W x 3`` -> float32 ``... x 3 x H x W`` in [-1, 1]."""
    arr = (pixels.astype(np.float32) - 127.5) * (1.0 / 128.0)
    return np.ascontiguousarray(np.moveaxis(arr, -1, -3))


def crops(image: np.ndarray, boxes: np.ndarray, size: int) -> FloatArray:
    """``N x 3 x size x size`` bilinear crops, normalized to [-1, 1].

    ``image`` is the uint8 picture with a one-pixel black border, ``(H + 2) x (W + 2) x 3`` (see
    :func:`padded`), so samples outside the picture read black. Plain bilinear sampling at the
    crop's pixel centres, as the cascade's training crops were made (``cv2.resize`` /
    ``crop_and_resize``), in one vectorized gather for every box; only the crops are converted
    to floating point.
    """
    height, width = image.shape[0] - 2, image.shape[1] - 2
    t = (np.arange(size, dtype=np.float64) + 0.5) / size
    xs = boxes[:, 0:1] + t[None, :] * (boxes[:, 2:3] - boxes[:, 0:1]) - 0.5
    ys = boxes[:, 1:2] + t[None, :] * (boxes[:, 3:4] - boxes[:, 1:2]) - 0.5
    x0 = np.floor(xs)
    y0 = np.floor(ys)
    fx = (xs - x0).astype(np.float32)[:, None, :, None]
    fy = (ys - y0).astype(np.float32)[:, :, None, None]
    # Indices into the bordered image; everything beyond the picture lands on the black border.
    cx0 = np.clip(x0, -1, width).astype(np.int64) + 1
    cx1 = np.clip(x0 + 1, -1, width).astype(np.int64) + 1
    cy0 = (np.clip(y0, -1, height).astype(np.int64) + 1) * (width + 2)
    cy1 = (np.clip(y0 + 1, -1, height).astype(np.int64) + 1) * (width + 2)
    flat = image.reshape(-1, 3)

    def gather(rows: np.ndarray, cols: np.ndarray) -> FloatArray:
        values: FloatArray = np.take(flat, rows[:, :, None] + cols[:, None, :], axis=0).astype(np.float32)
        return values

    top = gather(cy0, cx0)
    top += (gather(cy0, cx1) - top) * fx
    bottom = gather(cy1, cx0)
    bottom += (gather(cy1, cx1) - bottom) * fx
    top += (bottom - top) * fy
    return normalize(top)


def padded(image: RGBImage) -> np.ndarray:
    """The uint8 image with a one-pixel black border, as :func:`crops` reads it."""
    out: np.ndarray = np.pad(image, ((1, 1), (1, 1), (0, 0)))
    return out


def _order5(points: np.ndarray) -> tuple[Point, Point, Point, Point, Point]:
    """Eyes, nose, mouth corners with the image-left one of each pair first."""
    p = [(float(x), float(y)) for x, y in points]
    eyes = sorted(p[0:2])
    mouth = sorted(p[3:5])
    return (eyes[0], eyes[1], p[2], mouth[0], mouth[1])


#: Where dlib's HOG detector would put its box, from MTCNN's five landmarks, as (a, b, c): box centre
#: = centroid + s * (a * right + b * down), box side = c * s, with s the mean distance of the five
#: points from their centroid, ``down`` the unit vector from the eye midpoint to the mouth midpoint
#: and ``right`` perpendicular to it. dlib's shape predictors were trained on dlib detector boxes;
#: MTCNN's boxes are taller and sit higher, so alignment starts from this box instead (the reported
#: box stays MTCNN's own). Fitted with ``bench/bench_accuracy.py --subjects-step 2 --fit-alignment``:
#: medians over the 478 celeba_dev photos (75 subjects) where dlib's HOG detector (one upsample,
#: full image) and MTCNN (O-net at 0.7) found the same face (IoU >= 0.3); median absolute
#: deviations 0.11, 0.14 and 0.23 (a is zero up to noise, as symmetry says it should be). Checked on
#: the other 75 subjects, which the fit never saw: docs/benchmarks.md, "Verification accuracy".
ALIGNMENT = (-0.0174, -0.0561, 4.0549)


def hog_like_box(detection: Detection) -> Box:
    """The box dlib's HOG detector would draw around this MTCNN detection (see :data:`ALIGNMENT`)."""
    pts = np.asarray(detection.landmarks, dtype=np.float64)
    centroid = pts.mean(axis=0)
    scale = float(np.sqrt(((pts - centroid) ** 2).sum(axis=1)).mean())
    axis = pts[3:5].mean(axis=0) - pts[0:2].mean(axis=0)
    norm = float(np.hypot(axis[0], axis[1]))
    a, b, c = ALIGNMENT
    if scale <= 0 or norm <= 0 or c <= 0:
        return detection.box
    down = axis / norm
    right = np.array([down[1], -down[0]])
    cx, cy = centroid + scale * (a * right + b * down)
    side = c * scale
    return Box(float(cx - side / 2), float(cy - side / 2), side, side)


ALIGNMENT_BOXES["mtcnn"] = hog_like_box


class MtcnnDetector:
    """MTCNN face detector: box, confidence (O-net face probability x 100), five landmarks."""

    name = "mtcnn"
    #: The converted graphs' version, plus 2 for the cascade code (pyramid levels resampled from
    #: the level before, since 2026-11-29).
    version = f"{CONVERTER_VERSION}+cascade-2"

    def __init__(
        self,
        *,
        threads: int = 0,
        thresholds: tuple[float, float, float] = THRESHOLDS,
        scale_factor: float = SCALE_FACTOR,
        model_paths: Mapping[str, Path] | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        paths = model_paths if model_paths is not None else mtcnn_onnx_paths(cache_dir)
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Busy-waiting worker threads only burn cycles that the rest of the service needs.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._sessions = {
            net: ort.InferenceSession(str(paths[net]), options, providers=["CPUExecutionProvider"])
            for net in ("pnet", "rnet", "onet")
        }
        self.thresholds = thresholds
        self.scale_factor = scale_factor

    def _run(self, net: str, batch: FloatArray) -> list[FloatArray]:
        outputs = self._sessions[net].run(None, {"input": batch})
        return [np.asarray(o, dtype=np.float32) for o in outputs]

    # -- stages ---------------------------------------------------------------------------------
    def _proposals(self, image: Image.Image, min_face_size: int) -> np.ndarray:
        """P-net over the pyramid: ``N x 4`` squared candidate boxes."""
        width, height = image.size
        found: list[np.ndarray] = []
        previous = image
        for scale in pyramid(height, width, min_face_size, self.scale_factor):
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            # Each level is resampled from the one before (a 0.709 step, so a narrow filter over a
            # smaller picture), not from the full image: several times cheaper for the same pyramid.
            source = previous if previous.size[0] >= size[0] and previous.size[1] >= size[1] else image
            previous = source.resize(size, Image.Resampling.BILINEAR)
            level = np.asarray(previous)
            reg, prob = self._run("pnet", normalize(level)[None])
            iy, ix = np.nonzero(prob[0, 0] > self.thresholds[0])
            if iy.size == 0:
                continue
            sx, sy = size[0] / width, size[1] / height
            x1 = ix * PNET_STRIDE / sx
            y1 = iy * PNET_STRIDE / sy
            boxes = np.stack([x1, y1, x1 + PNET_CELL / sx, y1 + PNET_CELL / sy], axis=1)
            scores = prob[0, 0, iy, ix]
            offsets = reg[0][:, iy, ix].T
            keep = nms(boxes, scores, 0.5)
            found.append(np.concatenate([boxes[keep], scores[keep, None], offsets[keep]], axis=1))
        if not found:
            return np.zeros((0, 4))
        cand = np.concatenate(found)
        keep = nms(cand[:, :4], cand[:, 4], 0.7)[:MAX_CANDIDATES]
        cand = cand[keep]
        return square(calibrate(cand[:, :4], cand[:, 5:9]))

    def _refine(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """R-net: squared boxes that pass its threshold."""
        if boxes.shape[0] == 0:
            return boxes
        reg, prob = self._run("rnet", crops(image, boxes, 24))
        ok = prob[:, 1] > self.thresholds[1]
        boxes, scores = calibrate(boxes[ok], reg[ok]), prob[ok, 1]
        keep = nms(boxes, scores, 0.7)[:MAX_CANDIDATES]
        return square(boxes[keep])

    def _output(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """O-net: final boxes, face probabilities and ``N x 5 x 2`` landmarks."""
        if boxes.shape[0] == 0:
            return boxes, np.zeros(0), np.zeros((0, 5, 2))
        reg, marks, prob = self._run("onet", crops(image, boxes, 48))
        ok = prob[:, 1] > self.thresholds[2]
        boxes, reg, marks, scores = boxes[ok], reg[ok], marks[ok], prob[ok, 1]
        w = (boxes[:, 2] - boxes[:, 0])[:, None]
        h = (boxes[:, 3] - boxes[:, 1])[:, None]
        points = np.stack([boxes[:, 0:1] + marks[:, 0:5] * w, boxes[:, 1:2] + marks[:, 5:10] * h], axis=2)
        boxes = calibrate(boxes, reg)
        keep = nms(boxes, scores, 0.7, mode="min")
        return boxes[keep], scores[keep], points[keep]

    def raw(self, image: RGBImage, *, min_face_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The cascade's unfiltered output: boxes (x1, y1, x2, y2), probabilities, landmarks."""
        pil = Image.fromarray(np.ascontiguousarray(image))
        proposals = self._proposals(pil, min_face_size)
        if proposals.shape[0] == 0:
            return self._output(np.zeros((0, 0, 3), np.uint8), proposals)
        full = padded(image)
        return self._output(full, self._refine(full, proposals))

    def detect(self, image: RGBImage, *, min_face_size: int) -> list[Detection]:
        height, width = image.shape[:2]
        if min(height, width) < PNET_CELL:
            return []
        boxes, scores, points = self.raw(image, min_face_size=min_face_size)
        out = []
        for (x1, y1, x2, y2), score, pts in zip(boxes.tolist(), scores.tolist(), points, strict=True):
            box = clip_box(Box(x1, y1, x2 - x1, y2 - y1), width, height)
            if box.width < min_face_size or box.area <= 0:
                continue
            out.append(Detection(box, 100.0 * float(score), _order5(pts), self.name))
        out.sort(key=lambda d: d.box.area, reverse=True)
        return out[:MAX_FACES]
