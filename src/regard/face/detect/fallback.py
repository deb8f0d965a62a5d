"""The fallback cascade: when the default detector finds nothing, look again on a padded image.

MTCNN finds no face in about 10% of FairFace's tight face crops: the face fills the picture, so
the pyramid has no level where a whole face with some context fits P-net's window. Failing to
acquire a face is an error like any other, and it falls unevenly on groups (docs/benchmarks.md),
so when the default detector finds nothing the engine retries, in order:

* ``pad``: MTCNN again on the image padded by :data:`PAD_FRACTION` of its width left and right
  and of its height top and bottom, the padding filled with the image's mean colour;
* ``pad-cnn``: dlib's MMOD CNN detector (``cnn``) on that same padded image;
* ``rot``: MTCNN on that padded image, scaled down to :data:`ROTATE_MAX_SIDE`, turned by each
  angle of :data:`ROTATIONS` in turn;
* ``rot-cnn``: MMOD on those turned images.

Both detectors learnt from mostly upright faces; on a turned copy of the picture they find many
of the tilted, turned-away and cut-off faces they missed upright. The first step (and angle) that
finds a face wins; its boxes and landmarks are moved back to the original image's pixels. A face
found on a turned image keeps its box's size around its turned-back centre, and its landmarks
are turned back exactly, so its chip is aligned on the original pixels like any other face's.
A box may reach past the picture's edge, as Rekognition's BoundingBox does for a face cut by
the frame; the engine aligns such faces on the picture extended with its mean colour
(:func:`extend_for`), exactly as they were measured.

Chosen on the fitting half of demographics/fairface_train (lowest worst-race failure rate, then
fewest steps): ``pad,pad-cnn`` took failure to acquire from 10.2% to 0.93% (worst race 13.4% ->
1.6%; celeba_dev 15 photos -> 1). Of the 24 crops it still missed there, the rotation steps find
18 (failures per race 2-6 -> 0-2); the angles were chosen by the same rule (:data:`ROTATIONS`).
Both padding steps enlarge only padded images of at most :data:`PAD_UPSAMPLE_MAX_SIDE` (measured
on the same fitting parts). Images where the first detector finds a face are never padded or
turned for detection.
:func:`extend_for` also serves them: any face whose alignment box crosses the frame is aligned
on the picture extended with its mean colour.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

from regard.errors import InvalidParameter
from regard.face.detect.base import Detector, downscale, rescale
from regard.face.detect.dlib_detectors import MMOD_WINDOW
from regard.face.detect.mtcnn import PNET_CELL
from regard.types import Box, Detection, RGBImage

#: Padding on each side, as a fraction of the image's width (left, right) and height (top, bottom).
PAD_FRACTION = 0.25
#: Step name -> the detector it runs on the padded image (None: the default detector again).
STEPS: dict[str, str | None] = {"pad": None, "pad-cnn": "cnn", "rot": None, "rot-cnn": "cnn"}
#: The padding steps enlarge the padded image (MTCNN's pyramid starts above scale 1 for faces
#: under P-net's 12 px cell; MMOD doubles it for faces under its 40 px window) only while its
#: longest side is at most this; a larger padded image is searched at its own resolution, for
#: faces of at least :data:`NATIVE_FACE`. So ``pad-cnn``'s MMOD never looks at more than 1,536 px
#: a side (a full-size photo's 1,024 px detection picture, padded), and ``pad``'s MTCNN never
#: enlarges a photo that was scaled down for detection (the 24 px minimum face of a 4032x3024
#: photo is 6 px in its detection picture). Enlarging every padded image took a faceless photo's
#: padding steps from 0.67 s to 2.0 s at 1600x1200, and from 1.2 s to 3.8 s at 4032x3024
#: (bench/bench_fallback.py, section 5). On the pool's fitting parts (bench/fairness_templates.py's
#: images where MTCNN finds nothing) ``pad-cnn`` finds 232 faces; without doubling it loses 7 of
#: FairFace's 102 (224 px crops, 336 px padded), none of UTKFace's 126 (300 px padded) and none of
#: celeba_dev's 4 (padded 474 to 1,536 px). Images up to 512 px a side (every FairFace and UTKFace
#: crop) are searched as before, and so, by ``pad``, are photos up to 2,048 px. Of the shared
#: sets' images where MTCNN finds no face, four are over 512 px (all celeba_dev fitting photos):
#: two are found as before, the two over 2,048 px by ``pad-cnn`` instead of ``pad``.
PAD_UPSAMPLE_MAX_SIDE = 768
#: The smallest face each padding step's detector sees without enlarging the picture.
NATIVE_FACE = {"pad": PNET_CELL, "pad-cnn": MMOD_WINDOW}
#: The steps that look on the padded image turned by each of :data:`ROTATIONS`.
ROTATED = frozenset({"rot", "rot-cnn"})
#: The rotation steps are for tight crops (ID photos, mugshots), where the face fills the picture.
#: They look at the padded image scaled down to at most this many pixels a side (FairFace's and
#: UTKFace's crops, 224 and 200 px, padded: 336 and 300, are not scaled) ...
ROTATE_MAX_SIDE = 384
#: ... and only for faces at least this fraction of its shorter side (three eighths of the
#: original's; a face that fills a tight crop is at least a half). A faceless picture then costs
#: them about 0.25 s (0.4 s for a 1600x1200 photo), and they found no false face in the 101
#: faceless pictures measured (docs/benchmarks.md); without this floor they found one in a cat.
ROTATE_MIN_FRACTION = 0.25
#: Angles in degrees, counter-clockwise as shown, in the order the rotation steps try them
#: (the smaller turns first). Chosen on FairFace's fitting half by the lowest failure rate in the
#: worst race, then the fewest angles: +-30 alone left 3 of 354 East Asian crops; +-15, +-30
#: left 2 of 354 (East Asian); +-10, +-20, +-30 the same; with +-45 added, 2 of 371 (Black).
ROTATIONS = (-15.0, 15.0, -30.0, 30.0, -45.0, 45.0)
#: What ``REGARD_DETECT_FALLBACK`` accepts besides a comma-separated list of steps.
OFF = "none"


def parse_steps(value: str) -> tuple[str, ...]:
    """``"pad,pad-cnn"`` -> ``("pad", "pad-cnn")``; ``"none"`` (or empty) -> ``()``."""
    text = value.strip().lower()
    if text in {OFF, ""}:
        return ()
    steps = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in steps if s not in STEPS]
    if unknown or len(set(steps)) != len(steps):
        raise InvalidParameter(
            f"detect_fallback {value!r}: give {OFF!r} or comma-separated steps from {sorted(STEPS)}"
        )
    return steps


def describe(steps: tuple[str, ...]) -> str:
    """The cascade in one string, for cache keys: ``"pad,pad-cnn@0.25^768"``, or ``"none"``.

    After the padding the largest padded image the padding steps enlarge (``^768``); with a
    rotation step its angles, copy size and size floor:
    ``"pad,pad-cnn,rot,rot-cnn@0.25^768/-15,15,-30,30,-45,45@384,0.25"``.
    """
    if not steps:
        return OFF
    text = f"{','.join(steps)}@{PAD_FRACTION}"
    if NATIVE_FACE.keys() & set(steps):
        text += f"^{PAD_UPSAMPLE_MAX_SIDE}"
    if ROTATED.intersection(steps):
        text += "/" + ",".join(f"{a:g}" for a in ROTATIONS) + f"@{ROTATE_MAX_SIDE},{ROTATE_MIN_FRACTION:g}"
    return text


def pad_image(image: RGBImage, fraction: float = PAD_FRACTION) -> tuple[RGBImage, int, int]:
    """``image`` with a border of its mean colour; return it and the left and top offsets.

    The fill is each channel's mean truncated to uint8, as in the measurement that chose it.
    """
    height, width = image.shape[:2]
    dx, dy = round(width * fraction), round(height * fraction)
    fill = np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(axis=0).astype(np.uint8)
    padded = np.empty((height + 2 * dy, width + 2 * dx, 3), dtype=np.uint8)
    padded[...] = fill
    padded[dy : dy + height, dx : dx + width] = image
    return padded, dx, dy


def padded_min_face(step: str, padded: RGBImage, min_face_size: int) -> int:
    """The smallest face ``step`` looks for on ``padded``: ``min_face_size``, except that a
    padding step on a padded image over :data:`PAD_UPSAMPLE_MAX_SIDE` looks only for faces its
    detector sees without enlarging the image (:data:`NATIVE_FACE`)."""
    if step in NATIVE_FACE and max(padded.shape[:2]) > PAD_UPSAMPLE_MAX_SIDE:
        return max(min_face_size, NATIVE_FACE[step])
    return min_face_size


def unpad(detections: list[Detection], dx: int, dy: int, width: int, height: int) -> list[Detection]:
    """Detections on the padded image, in the original image's pixels.

    Boxes and landmarks are only shifted: a box may reach past the edge (clipping it would move
    the face's alignment). A detection whose box centre lies in the padding is dropped: that is no
    face of this image.
    """
    out = []
    for d in detections:
        b = d.box
        box = Box(b.left - dx, b.top - dy, b.width, b.height)
        cx, cy = box.left + box.width / 2, box.top + box.height / 2
        if not (0 <= cx < width and 0 <= cy < height):
            continue
        eye_a, eye_b, nose, mouth_a, mouth_b = ((x - dx, y - dy) for x, y in d.landmarks)
        out.append(Detection(box, d.confidence, (eye_a, eye_b, nose, mouth_a, mouth_b), d.detector))
    return out


def rotate_image(image: RGBImage, degrees: float) -> tuple[RGBImage, npt.NDArray[np.float64]]:
    """``image`` turned by ``degrees`` (counter-clockwise as shown) on a canvas that holds all of
    it, the corners filled with its mean colour; and the 2x3 matrix that takes a point of the
    turned image back to ``image``'s pixels (``source = matrix @ (x, y, 1)``).

    Points are continuous pixel coordinates (the top-left corner of the top-left pixel is
    (0, 0)), as detections use.
    """
    height, width = image.shape[:2]
    theta = np.deg2rad(degrees)
    cos, sin = float(np.cos(theta)), float(np.sin(theta))
    out_w = int(np.ceil(abs(width * cos) + abs(height * sin) - 1e-9))
    out_h = int(np.ceil(abs(width * sin) + abs(height * cos) - 1e-9))
    # With y pointing down, turning the picture counter-clockwise by theta sends a source offset
    # (u, v) from the centre to (u cos + v sin, -u sin + v cos); the inverse brings it back.
    linear = np.array([[cos, -sin], [sin, cos]])
    shift = np.array([width / 2, height / 2]) - linear @ np.array([out_w / 2, out_h / 2])
    matrix = np.hstack([linear, shift[:, None]])
    fill = tuple(int(c) for c in np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(axis=0))
    # PIL samples output pixel centre (x + 0.5, y + 0.5) at matrix @ (x + 0.5, y + 0.5, 1) - 0.5
    # in the source's pixel indices, which is this continuous mapping.
    turned = Image.fromarray(np.ascontiguousarray(image)).transform(
        (out_w, out_h),
        Image.Transform.AFFINE,
        tuple(float(v) for v in matrix.reshape(-1)),
        resample=Image.Resampling.BILINEAR,
        fillcolor=fill,
    )
    return np.asarray(turned, dtype=np.uint8), matrix


def turn_back(detections: list[Detection], matrix: npt.NDArray[np.float64]) -> list[Detection]:
    """Detections on a turned image (:func:`rotate_image`) in the unturned image's pixels: each
    box keeps its size around its turned-back centre, and the landmarks are turned back."""

    def back(x: float, y: float) -> tuple[float, float]:
        u, v = matrix @ np.array([x, y, 1.0])
        return float(u), float(v)

    out = []
    for d in detections:
        b = d.box
        cx, cy = back(b.left + b.width / 2, b.top + b.height / 2)
        box = Box(cx - b.width / 2, cy - b.height / 2, b.width, b.height)
        eye_a, eye_b, nose, mouth_a, mouth_b = (back(x, y) for x, y in d.landmarks)
        out.append(Detection(box, d.confidence, (eye_a, eye_b, nose, mouth_a, mouth_b), d.detector))
    return out


class Turned:
    """What the rotation steps look at: a copy of the padded image of at most
    :data:`ROTATE_MAX_SIDE` pixels, turned by each of :data:`ROTATIONS` on first use (the two
    steps share the turned copies), searched only for faces of at least
    :data:`ROTATE_MIN_FRACTION` of the copy's shorter side: the faces these steps are for fill
    the picture, and the floor bounds a faceless photo's time and its false faces."""

    def __init__(
        self, padded: RGBImage, dx: int, dy: int, width: int, height: int, min_face_size: int
    ) -> None:
        self.small, self.factor = downscale(padded, ROTATE_MAX_SIDE)
        floor = round(ROTATE_MIN_FRACTION * min(self.small.shape[:2]))
        self.min_face_size = max(round(min_face_size * self.factor), floor, 1)
        self.unpad = (dx, dy, width, height)  # the padding, and the original image's size
        self.copies: dict[float, tuple[RGBImage, npt.NDArray[np.float64]]] = {}

    def find(self, finder: Detector) -> list[Detection]:
        """The faces ``finder`` sees on the first angle that shows any, in the original image's
        pixels (turned back, scaled back, the padding taken off)."""
        for angle in ROTATIONS:
            if angle not in self.copies:
                self.copies[angle] = rotate_image(self.small, angle)
            picture, matrix = self.copies[angle]
            on_small = turn_back(finder.detect(picture, min_face_size=self.min_face_size), matrix)
            found = unpad([rescale(d, self.factor) for d in on_small], *self.unpad)
            if found:
                return found
        return []


def extend_for(image: RGBImage, boxes: list[Box]) -> tuple[RGBImage, list[Box]]:
    """``image`` extended with its mean colour so that every box (and a quarter of the image
    beyond) lies inside it, with the boxes moved to match; the image itself when all fit."""
    height, width = image.shape[:2]
    if all(b.left >= 0 and b.top >= 0 and b.right <= width and b.bottom <= height for b in boxes):
        return image, boxes
    over_x = max([0.0] + [max(-b.left, b.right - width) for b in boxes])
    over_y = max([0.0] + [max(-b.top, b.bottom - height) for b in boxes])
    fraction = PAD_FRACTION  # the padding the cascade detected on: same pixels, same alignment
    if over_x > round(width * PAD_FRACTION) or over_y > round(height * PAD_FRACTION):
        fraction += max((over_x + 1) / width, (over_y + 1) / height)
    padded, dx, dy = pad_image(image, fraction)
    return padded, [Box(b.left + dx, b.top + dy, b.width, b.height) for b in boxes]
