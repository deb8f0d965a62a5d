"""Test pictures made from the packaged portraits: face crops and a two-face composite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from regard.face.engine import Engine
from regard.types import RGBImage


def face_crop(engine: Engine, path: Path, side: int) -> RGBImage:
    """The photo's face with a margin, resized to ``side`` x ``side``."""
    image = engine.load_image(path)
    box = engine.detect(image)[0].box
    cx, cy, half = box.left + box.width / 2, box.top + box.height / 2, box.width * 1.1
    region = Image.fromarray(image).crop((int(cx - half), int(cy - half), int(cx + half), int(cy + half)))
    return np.asarray(region.resize((side, side)), dtype=np.uint8)


def two_faces(engine: Engine, portraits: Path) -> RGBImage:
    """Obama (the larger face, a 400-pixel crop) beside Biden (300 pixels), in one picture."""
    biden = np.zeros((400, 300, 3), dtype=np.uint8)
    biden[50:350] = face_crop(engine, portraits / "biden.jpg", 300)
    return np.hstack([face_crop(engine, portraits / "obama.jpg", 400), biden])
