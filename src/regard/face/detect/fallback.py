"""The fallback cascade: when the default detector finds nothing, look again on a padded image.

MTCNN finds no face in about 10% of FairFace's tight face crops: the face fills the picture, so
the pyramid has no level where a whole face with some context fits P-net's window. Failing to
acquire a face is an error like any other, and it falls unevenly on groups (docs/benchmarks.md),
so when the default detector finds nothing the engine retries, in order:

* ``pad``: MTCNN again on the image padded by :data:`PAD_FRACTION` of its width left and right
  and of its height top and bottom, the padding filled with the image's mean colour;
* ``pad-cnn``: dlib's MMOD CNN detector (``cnn``) on that same padded image.

The first step that finds a face wins; its boxes and landmarks are moved back to the original
image's pixels. A box may reach past the picture's edge, as Rekognition's BoundingBox does for a
face cut by the frame; the engine aligns such faces on the picture extended with its mean colour
(:func:`extend_for`), exactly as they were measured. Chosen on the fitting half of
demographics/fairface_train (lowest worst-race failure rate, then fewest steps): failure to
acquire 10.2% -> 0.93% (worst race 13.4% -> 1.6%); celeba_dev 15 photos -> 1.
Images where the first detector finds a face are never padded for detection. :func:`extend_for`
also serves them: any face whose alignment box crosses the frame is aligned on the picture
extended with its mean colour.
"""

from __future__ import annotations

import numpy as np

from regard.errors import InvalidParameter
from regard.types import Box, Detection, RGBImage

#: Padding on each side, as a fraction of the image's width (left, right) and height (top, bottom).
PAD_FRACTION = 0.25
#: Step name -> the detector it runs on the padded image (None: the default detector again).
STEPS: dict[str, str | None] = {"pad": None, "pad-cnn": "cnn"}
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
    """The cascade in one string, for cache keys: ``"pad,pad-cnn@0.25"``, or ``"none"``."""
    return f"{','.join(steps)}@{PAD_FRACTION}" if steps else OFF


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
