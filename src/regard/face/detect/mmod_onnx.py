"""dlib's MMOD CNN face detector on onnxruntime, with dlib's pyramid, threshold and NMS semantics.

What dlib does, and this module repeats:

* optional 2x upsampling (``pyramid_up`` with ``pyramid_down<2>``: a bilinear resize to
  ``(2h+1) x (2w+2)``), mapped back with ``p / 2 - (1.25, 0.75)``;
* ``input_rgb_image_pyramid<pyramid_down<6>>``: the normalised image and its 5/6, (5/6)^2, ...
  downscales (bilinear, corners aligned, each from the previous level) tiled into one tensor
  with 10 pixels between tiles and 11 around them;
* the network's score map: every location scoring above 0 is an 80x80 window centred on
  ``8 * (x, y) + 14`` in the tiled image, mapped back to the image through the tile it falls in
  (``p * 6/5 + 0.3`` per level);
* greedy non-max suppression, highest score first, dropping a window whose overlap with a kept one
  (intersection over the area of the box bounding both) exceeds the model's threshold (0.338).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from regard.config import Settings
from regard.face.detect.base import clip_box, landmarks5_from_68
from regard.face.detect.dlib_detectors import MMOD_WINDOW, upsamples_for
from regard.face.landmarks import ShapePredictors
from regard.models.convert_dlib import mmod_onnx_path
from regard.models.dlib_dat import load
from regard.models.packaged import dlib_model_path
from regard.models.session import make_session
from regard.types import Box, Detection, RGBImage

F32 = npt.NDArray[np.float32]

PYRAMID_PADDING = 10
PYRAMID_OUTER_PADDING = 11
PYRAMID_N = 6
MIN_LEVEL_HEIGHT = 5
#: Output location (x, y) looks at the input window centred on STRIDE * (x, y) + OFFSET.
STRIDE = 8
OFFSET = 14
#: Smallest tiled-image side the three unpadded 5x5 stride-2 convolutions leave one output for.
MIN_TENSOR_SIDE = 29


@dataclass(frozen=True, slots=True)
class Rect:
    """dlib's inclusive integer rectangle."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left + 1

    @property
    def height(self) -> int:
        return self.bottom - self.top + 1

    @property
    def area(self) -> int:
        return max(0, self.width) * max(0, self.height)


def _round(v: float) -> int:
    return math.floor(v + 0.5)


def pyramid_rects(nr: int, nc: int) -> tuple[list[Rect], int, int]:
    """Where each level goes in the tiled image, and the tiled image's rows and columns."""
    sizes = [(nc, nr)]
    r, c = nr, nc
    while True:
        r = math.floor((PYRAMID_N - 1) / PYRAMID_N * r)
        c = math.floor((PYRAMID_N - 1) / PYRAMID_N * c)
        if r * c == 0 or r < MIN_LEVEL_HEIGHT:
            break
        sizes.append((c, r))
    pad, outer = PYRAMID_PADDING, PYRAMID_OUTER_PADDING
    total_height = sum(h + pad for _, h in sizes) - 2 * pad
    height = 0
    prev_width = 0
    for w, h in sizes:
        if w <= sizes[0][0] - prev_width - pad and (height - sizes[0][1]) * 2 >= total_height - sizes[0][1]:
            break
        height += h + pad
        prev_width = w
    height -= pad
    width = sizes[0][0]
    rects: list[Rect] = []
    y = outer
    i = 0
    while y < height + outer and i < len(sizes):
        w, h = sizes[i]
        rects.append(Rect(outer, y, outer + w - 1, y + h - 1))
        y += h + pad
        i += 1
    y -= pad
    while i < len(sizes):
        w, h = sizes[i]
        x1, y1 = outer + width - 1, y - 1
        rect = Rect(x1 - (w - 1), y1 - (h - 1), x1, y1)
        first = rects[0]
        if not (
            rect.right < first.left
            or rect.left > first.right
            or rect.bottom < first.top
            or rect.top > first.bottom
        ):
            break
        rects.append(rect)
        y -= h + pad
        i += 1
    return rects, height + 2 * outer, width + 2 * outer


def resize_bilinear(src: F32, rows: int, cols: int) -> F32:
    """dlib's bilinear resize (corners aligned, edges clamped) of a ``C x h x w`` array.

    Done separably (rows, then columns): the same weights as dlib's, in a different order.
    """
    h, w = src.shape[-2:]
    ys = np.arange(rows, dtype=np.float64) * ((h - 1) / max(rows - 1, 1))
    xs = np.arange(cols, dtype=np.float64) * ((w - 1) / max(cols - 1, 1))
    top = np.floor(ys).astype(np.intp)
    left = np.floor(xs).astype(np.intp)
    bottom = np.minimum(top + 1, h - 1)
    right = np.minimum(left + 1, w - 1)
    fy = (ys - top).astype(np.float32)[:, None]
    fx = (xs - left).astype(np.float32)
    upper = np.take(src, top, axis=-2)
    upper += (np.take(src, bottom, axis=-2) - upper) * fy
    out: F32 = np.take(upper, left, axis=-1)
    out += (np.take(upper, right, axis=-1) - out) * fx
    return out


def pyramid_up(image: RGBImage) -> RGBImage:
    """dlib's ``pyramid_up`` with ``pyramid_down<2>``: bilinear upsampling to ``(2h+1) x (2w+2)``."""
    h, w = image.shape[:2]
    planes = np.transpose(image, (2, 0, 1)).astype(np.float32)
    up = resize_bilinear(planes, 2 * h + 1, 2 * w + 2)
    return np.ascontiguousarray(np.transpose(np.clip(np.floor(up + 0.5), 0, 255), (1, 2, 0)).astype(np.uint8))


def tiled_pyramid(image: RGBImage, mean: tuple[float, float, float]) -> tuple[F32, list[Rect]]:
    """The normalised ``1 x 3 x H x W`` tensor dlib's ``input_rgb_image_pyramid`` builds."""
    h, w = image.shape[:2]
    rects, rows, cols = pyramid_rects(h, w)
    data = np.zeros((3, rows, cols), dtype=np.float32)
    centred = np.transpose(image, (2, 0, 1)).astype(np.float32) - np.asarray(mean, np.float32)[:, None, None]
    level: F32 = (centred * np.float32(1 / 256)).astype(np.float32)
    r0 = rects[0]
    data[:, r0.top : r0.bottom + 1, r0.left : r0.right + 1] = level
    for rect in rects[1:]:
        level = resize_bilinear(level, rect.height, rect.width)
        data[:, rect.top : rect.bottom + 1, rect.left : rect.right + 1] = level
    return data[None], rects


def _nearest_rect(rects: list[Rect], x: float, y: float) -> int:
    best, best_dist = 0, math.inf
    for i, r in enumerate(rects):
        if r.left <= x <= r.right and r.top <= y <= r.bottom:
            return i
        nx = min(max(x, r.left), r.right)
        ny = min(max(y, r.top), r.bottom)
        dist = math.hypot(nx - x, ny - y)
        if dist < best_dist:
            best, best_dist = i, dist
    return best


def _overlaps(a: Rect, b: Rect, iou_thresh: float, covered_thresh: float) -> bool:
    iw = min(a.right, b.right) - max(a.left, b.left) + 1
    ih = min(a.bottom, b.bottom) - max(a.top, b.top) + 1
    if iw <= 0 or ih <= 0:
        return False
    inner = float(iw * ih)
    outer = Rect(min(a.left, b.left), min(a.top, b.top), max(a.right, b.right), max(a.bottom, b.bottom)).area
    return inner / outer > iou_thresh or inner / a.area > covered_thresh or inner / b.area > covered_thresh


class MmodOnnxDetector:
    """dlib's MMOD CNN face detector run by onnxruntime (registered as the ``cnn`` detector)."""

    name = "cnn"
    version = "onnx-mmod-1"

    def __init__(
        self, predictors: ShapePredictors, settings: Settings | None = None, *, max_upsample: int = 1
    ) -> None:
        self.settings = settings or Settings.from_env()
        net = load(dlib_model_path("mmod"))
        self._mean: tuple[float, float, float] = net.input_attrs["mean"]
        opts = net.loss_attrs
        self._window = (int(opts["detector_width"]), int(opts["detector_height"]))
        self._nms = (float(opts["nms_iou_thresh"]), float(opts["nms_percent_covered_thresh"]))
        self._session = make_session(mmod_onnx_path(self.settings.cache_dir), self.settings)
        self._predictors = predictors
        self._max_upsample = max_upsample

    def raw(self, image: RGBImage, upsample: int = 0) -> list[tuple[Rect, float]]:
        """dlib's ``cnn_face_detection_model_v1(image, upsample)``: rectangles and raw scores."""
        img = np.ascontiguousarray(image, dtype=np.uint8)
        for _ in range(upsample):
            img = pyramid_up(img)
        if min(img.shape[:2]) < 1:
            return []
        tensor, rects = tiled_pyramid(img, self._mean)
        if min(tensor.shape[-2:]) < MIN_TENSOR_SIDE:
            return []  # too small to hold any face the network can score
        scores = self._session.run(["scores"], {"tensor": tensor})[0][0, 0]
        rows, cols = np.nonzero(scores > 0)
        cands = []
        half_w, half_h = (self._window[0] - 1) / 2, (self._window[1] - 1) / 2
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            px, py = STRIDE * c + OFFSET, STRIDE * r + OFFSET
            level = _nearest_rect(rects, px, py)
            origin = rects[level]
            box = [
                px - half_w - origin.left,
                py - half_h - origin.top,
                px + half_w - origin.left,
                py + half_h - origin.top,
            ]
            for _ in range(level):
                box = [v * PYRAMID_N / (PYRAMID_N - 1) + 0.3 for v in box]
            cands.append((float(scores[r, c]), box))
        cands.sort(key=lambda t: -t[0])
        kept: list[tuple[Rect, float]] = []
        for score, box in cands:
            rect = Rect(*(_round(v) for v in box))
            if any(_overlaps(k, rect, *self._nms) for k, _ in kept):
                continue
            kept.append((rect, score))
        if upsample:
            out = []
            for rect, score in kept:
                corners = [float(rect.left), float(rect.top), float(rect.right), float(rect.bottom)]
                for _ in range(upsample):
                    corners = [
                        corners[0] / 2 - 1.25,
                        corners[1] / 2 - 0.75,
                        corners[2] / 2 - 1.25,
                        corners[3] / 2 - 0.75,
                    ]
                out.append((Rect(*(_round(v) for v in corners)), score))
            kept = out
        return kept

    def detect(self, image: RGBImage, *, min_face_size: int) -> list[Detection]:
        ups = upsamples_for(min_face_size, MMOD_WINDOW, self._max_upsample)
        h, w = image.shape[:2]
        out = []
        for rect, score in self.raw(image, ups):
            box = clip_box(Box(rect.left, rect.top, rect.width, rect.height), w, h)
            if box.width < min_face_size or box.area <= 0:
                continue
            pts = landmarks5_from_68(self._predictors.points68(image, box))
            conf = float(100.0 / (1.0 + np.exp(-2.0 * score)))
            out.append(Detection(box, conf, pts, self.name))
        return out
