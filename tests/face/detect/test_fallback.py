"""The detector fallback cascade: tight or tilted face crops MTCNN misses are found on a padded
(and, failing that, turned) image."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from regard.config import Settings
from regard.errors import InvalidParameter
from regard.face.detect.base import alignment_box, clip_box
from regard.face.detect.dlib_detectors import MMOD_WINDOW
from regard.face.detect.fallback import (
    PAD_UPSAMPLE_MAX_SIDE,
    ROTATE_MAX_SIDE,
    ROTATE_MIN_FRACTION,
    ROTATIONS,
    describe,
    extend_for,
    pad_image,
    padded_min_face,
    parse_steps,
    rotate_image,
    turn_back,
    unpad,
)
from regard.face.detect.mtcnn import PNET_CELL
from regard.face.engine import Engine
from regard.types import Box, Detection, RGBImage

DEFAULT_STEPS = ("pad", "pad-cnn", "rot", "rot-cnn")
DEFAULT = "pad,pad-cnn,rot,rot-cnn"


@pytest.fixture(scope="module")
def cascade(engine: Engine) -> Engine:
    """The suite's engine with the shipped cascade, whatever REGARD_DETECT_FALLBACK says."""
    if engine.fallback_steps() == DEFAULT_STEPS:
        return engine
    return Engine(replace(engine.settings, detector="default", detect_fallback=DEFAULT))


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
    assert Settings().detect_fallback == DEFAULT
    assert Settings.from_env({"REGARD_DETECT_FALLBACK": "none"}).detect_fallback == "none"
    assert parse_steps(DEFAULT) == DEFAULT_STEPS
    assert parse_steps("pad,pad-cnn") == ("pad", "pad-cnn")
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

    on = TemplateSource(Engine(Settings.from_env(detector="default", detect_fallback=DEFAULT)))
    off = TemplateSource(Engine(Settings.from_env(detector="default", detect_fallback="none")))
    assert on.identity()["detect_fallback"] == describe(DEFAULT_STEPS) != "none"
    # The padding steps' enlarging limit and the rotation steps' angles are part of the identity.
    assert describe(DEFAULT_STEPS) == "pad,pad-cnn,rot,rot-cnn@0.25^768/-15,15,-30,30,-45,45@384,0.25"
    assert describe(("pad", "pad-cnn")) == "pad,pad-cnn@0.25^768"
    assert describe(("pad",)) == "pad@0.25^768"
    assert off.identity()["detect_fallback"] == "none"
    assert "flip-mean" in on.identity()["preprocessing"]


@pytest.mark.parametrize(("height", "width"), [(40, 60), (61, 33)])
@pytest.mark.parametrize("degrees", [-30.0, 15.0, 37.0, 90.0])
def test_rotate_image_maps_its_points_back(height: int, width: int, degrees: float) -> None:
    """A bright 3x3 block, turned: its centre of mass maps back to where it was."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[10:13, 20:23] = 255  # centred on (21.5, 11.5) in continuous pixel coordinates
    turned, matrix = rotate_image(image, degrees)
    theta = np.deg2rad(degrees)
    assert turned.shape[:2] == (
        int(np.ceil(abs(width * np.sin(theta)) + abs(height * np.cos(theta)) - 1e-9)),
        int(np.ceil(abs(width * np.cos(theta)) + abs(height * np.sin(theta)) - 1e-9)),
    )
    weight = np.where(turned[..., 0] > 20, turned[..., 0], 0).astype(np.float64)
    ys, xs = np.nonzero(weight)
    w = weight[ys, xs]
    cx, cy = ((xs + 0.5) @ w) / w.sum(), ((ys + 0.5) @ w) / w.sum()
    back = matrix @ np.array([cx, cy, 1.0])
    assert np.allclose(back, (21.5, 11.5), atol=0.1)


def test_rotate_image_turns_counter_clockwise_and_fills_with_the_mean() -> None:
    image = np.zeros((40, 60, 3), dtype=np.uint8)
    image[10:13, 20:23] = 255  # up and to the left of the centre
    turned, _ = rotate_image(image, 90.0)
    assert turned.shape[:2] == (60, 40)
    ys, xs = np.nonzero(turned[..., 0] > 100)
    # A quarter turn counter-clockwise takes up-left to down-left: offset (-8.5, -8.5) from the
    # centre (30, 20) goes to (-8.5, +8.5) from the new centre (20, 30).
    assert (xs.mean() + 0.5, ys.mean() + 0.5) == (11.5, 38.5)
    corner = rotate_image(np.full((40, 60, 3), 90, dtype=np.uint8), 45.0)[0][0, 0]
    assert corner.tolist() == [90, 90, 90]


def test_turn_back_keeps_the_box_size_and_turns_the_landmarks() -> None:
    matrix = np.array([[0.0, -1.0, 50.0], [1.0, 0.0, 0.0]])  # a quarter turn plus a shift
    pts = ((10.0, 20.0), (30.0, 20.0), (20.0, 30.0), (12.0, 40.0), (28.0, 40.0))
    found = Detection(Box(0.0, 10.0, 40.0, 40.0), 99.0, pts, "mtcnn")
    (back,) = turn_back([found], matrix)
    assert back.box == Box(0.0, 0.0, 40.0, 40.0)  # centre (20, 30) -> (20, 20), same size
    assert back.landmarks[0] == (30.0, 10.0) and back.landmarks[4] == (10.0, 28.0)
    assert back.detector == "mtcnn" and back.confidence == 99.0


def _tilted_crop(engine: Engine, image: RGBImage, degrees: float, keep: float) -> tuple[RGBImage, np.ndarray]:
    """A square crop of ``keep`` times the HOG box's side around the face of ``image`` turned by
    ``degrees``; and the 2x3 matrix from ``image``'s pixels to the crop's."""
    box = engine.detect(image, detector="hog")[0].box
    turned, back = rotate_image(image, degrees)
    forward = np.linalg.inv(np.vstack([back, [0.0, 0.0, 1.0]]))[:2]
    cx, cy = forward @ np.array([box.left + box.width / 2, box.top + box.height / 2, 1.0])
    side = int(box.width * keep)
    left, top = int(cx - side / 2), int(cy - side / 2)
    crop = np.ascontiguousarray(turned[top : top + side, left : left + side])
    return crop, forward - np.array([[0.0, 0.0, left], [0.0, 0.0, top]])


@pytest.mark.parametrize("scale", [1, 4])
def test_rotation_step_finds_a_tilted_tight_crop_and_maps_its_landmarks(
    cascade: Engine, no_fallback: Engine, fr_images: Path, scale: int
) -> None:
    """At scale 4 (732 px) the rotation steps look at a copy scaled down to ROTATE_MAX_SIDE: the
    landmarks must come back in the crop's own pixels all the same."""
    photo = cascade.load_image(fr_images / "obama2.jpg")
    crop, to_crop = _tilted_crop(cascade, photo, -30.0, 0.7)
    if scale != 1:
        size = (crop.shape[1] * scale, crop.shape[0] * scale)
        crop = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BICUBIC))
        to_crop = to_crop * scale
        assert max(pad_image(crop)[0].shape[:2]) > ROTATE_MAX_SIDE
    # The premise: MTCNN, MTCNN on the padded crop and MMOD on it all miss this tilted face.
    padded, _, _ = pad_image(crop)
    assert cascade.detect(crop, detector="mtcnn") == []
    assert cascade.detect(padded, detector="mtcnn") == cascade.detect(padded, detector="cnn") == []
    assert no_fallback.detect(crop) == []
    assert Engine(replace(cascade.settings, detect_fallback="pad,pad-cnn")).detect(crop) == []

    (face,) = cascade.detect(crop)
    assert face.detector == "mtcnn" and -30.0 in ROTATIONS
    # Known answer: the upright photo's landmarks, carried into the crop by the same turn, are
    # where the rotation step put them. MTCNN's landmarks on a tight crop wander by about a tenth
    # of the distance between the eyes (0.08-0.14 here); a turn the wrong way, or none, puts
    # them off by more than half of it.
    upright = cascade.detect(photo, detector="mtcnn", max_faces=1)[0]
    expected = np.array([to_crop @ np.array([x, y, 1.0]) for x, y in upright.landmarks])
    got = np.array(face.landmarks)
    eyes = float(np.linalg.norm(expected[0] - expected[1]))
    assert np.linalg.norm(got - expected, axis=1).max() < 0.25 * eyes
    # The face is the same person as the upright photo's: within dlib's 0.6 and far nearer than
    # another man's photo.
    template = _template(cascade, crop)
    same = np.linalg.norm(template - _template(cascade, photo))
    other = np.linalg.norm(template - _template(cascade, cascade.load_image(fr_images / "biden.jpg")))
    assert same < 0.6 and same < other - 0.2


#: One detector call: the detector's name, the picture's (height, width), the minimum face asked for.
Call = tuple[str, tuple[int, int], int]


def _record_detectors(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """Every detector call ``engine.detect`` makes from now on, in order."""
    calls: list[Call] = []
    real = engine.detector

    class Recording:
        def __init__(self, name: str | None) -> None:
            self.inner = real(name)

        def detect(self, image: RGBImage, *, min_face_size: int) -> list[Detection]:
            calls.append((self.inner.name, image.shape[:2], min_face_size))
            return self.inner.detect(image, min_face_size=min_face_size)

    monkeypatch.setattr(engine, "detector", Recording)
    return calls


@pytest.mark.parametrize(("width", "smallest", "pad_smallest"), [(1600, 15, 15), (3200, 8, PNET_CELL)])
def test_every_step_on_a_large_faceless_photo(
    cascade: Engine, monkeypatch: pytest.MonkeyPatch, width: int, smallest: int, pad_smallest: int
) -> None:
    """On a faceless photo every step runs. It is scaled to detect_max_side, so the 24 px minimum
    face shrinks (1600 px: 15; 3200 px: 8). The padding steps look at the padded picture (over
    PAD_UPSAMPLE_MAX_SIDE) without enlarging it: MTCNN for faces of at least P-net's 12 px cell,
    MMOD of at least its 40 px window. The turned pictures are copies of at most
    ROTATE_MAX_SIDE pixels (turned, at most that times sqrt 2), searched only for faces of at
    least ROTATE_MIN_FRACTION of the copy's shorter side."""
    photo = np.asarray(Image.fromarray(skimage_data.coffee()).resize((width, width * 3 // 4)))
    calls = _record_detectors(cascade, monkeypatch)
    assert cascade.detect(photo) == []
    first, pad, pad_cnn, *turned = calls
    assert first == ("mtcnn", (768, 1024), smallest)  # the detection picture (MTCNN may enlarge it)
    assert pad == ("mtcnn", (1152, 1536), pad_smallest)
    assert pad_cnn == ("cnn", (1152, 1536), MMOD_WINDOW)
    assert [name for name, _, _ in turned] == ["mtcnn"] * len(ROTATIONS) + ["cnn"] * len(ROTATIONS)
    for _, (height, width_turned), min_face in turned:
        assert max(height, width_turned) <= ROTATE_MAX_SIDE * np.sqrt(2) + 1
        assert min_face == round(ROTATE_MIN_FRACTION * 288)  # the copy is 384 x 288
    shapes = [shape for _, shape, _ in turned]
    assert shapes[: len(ROTATIONS)] == shapes[len(ROTATIONS) :]  # both detectors, the same turns


def test_padded_min_face() -> None:
    """A padding step looks for faces its detector sees only by enlarging the picture (MTCNN under
    P-net's 12 px cell, MMOD under its 40 px window) only on padded images of at most
    PAD_UPSAMPLE_MAX_SIDE a side; other steps keep the minimum face."""
    at_limit = np.zeros((PAD_UPSAMPLE_MAX_SIDE // 2, PAD_UPSAMPLE_MAX_SIDE, 3), dtype=np.uint8)
    over = np.zeros((PAD_UPSAMPLE_MAX_SIDE + 1, 10, 3), dtype=np.uint8)
    assert padded_min_face("pad-cnn", at_limit, 15) == 15
    assert padded_min_face("pad-cnn", over, 15) == MMOD_WINDOW == 40
    assert padded_min_face("pad-cnn", over, 60) == 60  # never lowered
    assert padded_min_face("pad", at_limit, 5) == 5
    assert padded_min_face("pad", over, 5) == PNET_CELL == 12
    assert padded_min_face("pad", over, 15) == 15
    assert padded_min_face("rot", over, 5) == padded_min_face("rot-cnn", over, 5) == 5


@pytest.mark.parametrize(("scale", "smallest"), [(1, 24), (4, MMOD_WINDOW)])
def test_pad_cnn_finds_a_tight_crop_with_and_without_doubling(
    cascade: Engine, fr_images: Path, monkeypatch: pytest.MonkeyPatch, scale: int, smallest: int
) -> None:
    """obama3's tight crop (207 px) and the same crop enlarged 4x (828 px, padded 1,242: over
    PAD_UPSAMPLE_MAX_SIDE): pad-cnn finds both, the small one looking for faces from the
    minimum face size up (MMOD doubles it), the large one from MMOD's window up (not doubled)."""
    crop = _tight_crop(cascade, cascade.load_image(fr_images / "obama3.jpg"), 0.7)
    side = crop.shape[0] * scale
    crop = np.asarray(Image.fromarray(crop).resize((side, side), Image.Resampling.BICUBIC))
    padded, _, _ = pad_image(crop)
    assert (max(padded.shape[:2]) > PAD_UPSAMPLE_MAX_SIDE) == (scale > 1)
    # The premise: neither MTCNN step finds it, so pad-cnn is the step that does.
    assert cascade.detect(crop, detector="mtcnn") == []
    assert cascade.detect(padded, detector="mtcnn") == []
    calls = _record_detectors(cascade, monkeypatch)
    (face,) = cascade.detect(crop)
    assert face.detector == "cnn"
    assert [(name, min_face) for name, _, min_face in calls] == [
        ("mtcnn", 24),
        ("mtcnn", 24),
        ("cnn", smallest),
    ]
    # The face fills the crop: its box's centre is in the middle third, its width most of the side.
    cx, cy = face.box.left + face.box.width / 2, face.box.top + face.box.height / 2
    assert side / 3 < cx < 2 * side / 3 and side / 3 < cy < 2 * side / 3
    assert face.box.width > 0.8 * side
