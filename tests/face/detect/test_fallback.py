"""The detector fallback cascade: tight face crops MTCNN misses are found on a padded image."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from regard.config import Settings
from regard.errors import InvalidParameter
from regard.face.detect.base import alignment_box, clip_box
from regard.face.detect.fallback import describe, extend_for, pad_image, parse_steps, unpad
from regard.face.engine import Engine
from regard.types import Box, Detection, RGBImage

DEFAULT_STEPS = ("pad", "pad-cnn")


@pytest.fixture(scope="module")
def cascade(engine: Engine) -> Engine:
    """The suite's engine with the shipped cascade, whatever REGARD_DETECT_FALLBACK says."""
    if engine.fallback_steps() == DEFAULT_STEPS:
        return engine
    return Engine(replace(engine.settings, detector="default", detect_fallback="pad,pad-cnn"))


@pytest.fixture(scope="module")
def no_fallback(cascade: Engine) -> Engine:
    return Engine(replace(cascade.settings, detect_fallback="none"))


def _tight_crop(engine: Engine, image: RGBImage, keep: float) -> RGBImage:
    """A square crop of ``keep`` times the side of dlib's HOG box, centred on it: face only."""
    box = engine.detect(image, detector="hog")[0].box
    cx, cy = box.left + box.width / 2, box.top + box.height / 2
    side = int(box.width * keep)
    left, top = int(cx - side / 2), int(cy - side / 2)
    return np.ascontiguousarray(image[top : top + side, left : left + side])


def _template(engine: Engine, image: RGBImage) -> np.ndarray:
    return engine.embed(image, engine.detect(image, max_faces=1))[0]


# (photo, fraction of the HOG box kept, the cascade step that finds it: the detector it reports)
CROPS = [("obama.jpg", 0.7, "mtcnn"), ("obama3.jpg", 0.7, "cnn")]


@pytest.mark.parametrize(("name", "keep", "finder"), CROPS)
def test_cascade_recovers_a_tight_crop_mtcnn_misses(
    cascade: Engine, no_fallback: Engine, fr_images: Path, name: str, keep: float, finder: str
) -> None:
    photo = cascade.load_image(fr_images / name)
    crop = _tight_crop(cascade, photo, keep)
    height, width = crop.shape[:2]
    # The premise: MTCNN alone finds nothing here (else this test would prove nothing).
    assert cascade.detect(crop, detector="mtcnn") == []
    assert no_fallback.detect(crop) == []
    padded, _, _ = pad_image(crop)
    padded_mtcnn = cascade.detect(padded, detector="mtcnn")
    assert (padded_mtcnn != []) == (finder == "mtcnn")  # which step finds it: first or second

    found = cascade.detect(crop)
    assert len(found) == 1
    face = found[0]
    assert face.detector == finder  # honest: the detector that found it, so alignment maps right
    b = face.box
    # The box is the detector's own: centred in the crop, reaching past its edges as the face does
    # (Rekognition's BoundingBox may too), covering most of the picture.
    assert 0 <= b.left + b.width / 2 < width and 0 <= b.top + b.height / 2 < height
    assert clip_box(b, width, height).area >= 0.5 * width * height
    # On the face: landmarks sit where a face's do (eyes above the nose above the mouth,
    # image-left first, inside the picture).
    (elx, ely), (erx, ery), (nx, ny), (mlx, mly), (mrx, mry) = face.landmarks
    assert elx < nx < erx and mlx < mrx
    assert max(ely, ery) < ny < min(mly, mry)
    assert all(0 <= x <= width and 0 <= y <= height for x, y in face.landmarks)
    assert alignment_box(face).iou(Box(0, 0, width, height)) > 0.3
    # Alignment works: the crop's template is the same person as the whole photo's, aligned as
    # well as on the padded crop it was found on (a clipped box would move the alignment).
    near = np.linalg.norm(_template(cascade, crop) - _template(cascade, photo))
    assert near < 0.45
    on_padded = cascade.embed(padded, cascade.detect(padded, detector=finder, max_faces=1))[0]
    assert np.linalg.norm(_template(cascade, crop) - on_padded) < 1e-3


def test_a_named_detector_runs_alone(cascade: Engine, fr_images: Path) -> None:
    """Naming a detector, even the default's own name, means exactly that detector."""
    photo = cascade.load_image(fr_images / "obama.jpg")
    crop = _tight_crop(cascade, photo, 0.7)
    assert cascade.fallback_steps("mtcnn") == ()
    assert cascade.fallback_steps("hog") == ()
    assert cascade.fallback_steps("default") == cascade.fallback_steps() == DEFAULT_STEPS
    assert cascade.detect(crop, detector="mtcnn") == []
    assert len(cascade.detect(crop, detector="default")) == 1


def test_fallback_none_finds_nothing_on_the_crop(no_fallback: Engine, fr_images: Path) -> None:
    crop = _tight_crop(no_fallback, no_fallback.load_image(fr_images / "obama3.jpg"), 0.7)
    assert no_fallback.fallback_steps() == ()
    assert no_fallback.detect(crop) == []


@pytest.mark.parametrize("shape", [(300, 400, 3), (12, 9, 3), (1, 1, 3)])
def test_no_face_at_all_is_no_face_and_no_error(cascade: Engine, shape: tuple[int, int, int]) -> None:
    grey = np.full(shape, 128, dtype=np.uint8)
    assert cascade.detect(grey) == []
    noise = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    assert all(d.box.area > 0 for d in cascade.detect(noise))


def test_cascade_is_not_called_when_the_detector_finds_a_face(
    cascade: Engine, fr_images: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = np.ascontiguousarray(cascade.load_image(fr_images / "obama.jpg")[::2, ::2])
    before = cascade.detect(photo)

    def boom(*args: object, **kwargs: object) -> list[Detection]:
        raise AssertionError("the fallback ran")

    monkeypatch.setattr(cascade, "_fallback", boom)
    assert cascade.detect(photo) == before
    assert len(before) == 1 and before[0].detector == "mtcnn"


def test_the_setting() -> None:
    assert Settings().detect_fallback == "pad,pad-cnn"
    assert Settings.from_env({"REGARD_DETECT_FALLBACK": "none"}).detect_fallback == "none"
    assert parse_steps("pad,pad-cnn") == DEFAULT_STEPS
    assert parse_steps(" Pad ") == ("pad",)
    assert parse_steps("none") == parse_steps("") == ()
    for bad in ("pad,bogus", "pad,pad", "hog"):
        with pytest.raises(InvalidParameter, match="detect_fallback"):
            parse_steps(bad)
    # Only the default detector falls back, whether settings call it "default" or by its name.
    assert Engine(Settings(detector="mtcnn")).fallback_steps() == DEFAULT_STEPS
    assert Engine(Settings(detector="hog")).fallback_steps() == ()
    with pytest.raises(InvalidParameter):
        Engine(Settings(detect_fallback="sideways"))  # refused when the engine is made, not per image


def test_pad_and_unpad() -> None:
    image = np.zeros((40, 80, 3), dtype=np.uint8)
    image[:, :40] = (200, 100, 0)
    padded, dx, dy = pad_image(image)
    assert (dx, dy) == (20, 10) and padded.shape == (60, 120, 3)
    assert np.array_equal(padded[dy : dy + 40, dx : dx + 80], image)
    assert padded[0, 0].tolist() == [100, 50, 0]  # the mean colour
    pts = ((30.0, 20.0), (50.0, 20.0), (40.0, 30.0), (32.0, 40.0), (48.0, 40.0))
    inside = Detection(Box(15.0, 5.0, 50.0, 50.0), 90.0, pts, "cnn")
    in_padding = Detection(Box(0.0, 0.0, 15.0, 15.0), 90.0, pts, "cnn")
    (moved,) = unpad([inside, in_padding], dx, dy, 80, 40)
    assert moved.box == Box(-5.0, -5.0, 50.0, 50.0)  # shifted by (-20, -10), not clipped
    assert moved.landmarks[0] == (10.0, 10.0) and moved.landmarks[4] == (28.0, 30.0)
    assert moved.detector == "cnn" and moved.confidence == 90.0


def test_extend_for_pads_only_when_a_box_leaves_the_picture() -> None:
    image = np.full((40, 80, 3), 7, dtype=np.uint8)
    inside = [Box(10.0, 5.0, 20.0, 20.0)]
    same, boxes = extend_for(image, inside)
    assert same is image and boxes == inside
    padded, moved = extend_for(image, [Box(-5.0, -5.0, 50.0, 50.0)])
    assert padded.shape == (60, 120, 3) and moved == [Box(15.0, 5.0, 50.0, 50.0)]  # the cascade's padding
    far, (box,) = extend_for(image, [Box(-30.0, 0.0, 20.0, 20.0)])  # beyond a quarter: more padding
    assert box.left >= 0 and far.shape[1] >= 80 + 2 * 30


def test_template_cache_identity_names_the_fallback() -> None:
    from regard.evaluation.dataset import TemplateSource

    on = TemplateSource(Engine(Settings.from_env(detector="default", detect_fallback="pad,pad-cnn")))
    off = TemplateSource(Engine(Settings.from_env(detector="default", detect_fallback="none")))
    assert on.identity()["detect_fallback"] == describe(DEFAULT_STEPS) != "none"
    assert off.identity()["detect_fallback"] == "none"
    assert "flip-mean" in on.identity()["preprocessing"]
