"""Flip test-time augmentation: a template is the mean of the chip's and its mirror's descriptors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from regard.config import Settings
from regard.face.align import PREPROCESSING, face_chips
from regard.face.detect.base import alignment_box
from regard.face.embed import FLIP_MEAN, mean_of_mirrors, resnet_identity, with_mirrors
from regard.face.engine import Engine
from regard.types import RGBImage


@pytest.fixture(scope="module")
def obama(engine: Engine, fr_images: Path) -> RGBImage:
    return np.ascontiguousarray(engine.load_image(fr_images / "obama.jpg")[::2, ::2])


def _chips(engine: Engine, image: RGBImage) -> np.ndarray:
    return face_chips(image, [alignment_box(d) for d in engine.detect(image)], engine.predictors)


def test_with_mirrors_and_mean_of_mirrors() -> None:
    chips = np.random.default_rng(0).integers(0, 256, size=(3, 150, 150, 3), dtype=np.uint8)
    both = with_mirrors(chips)
    assert both.shape == (6, 150, 150, 3)
    assert np.array_equal(both[:3], chips)
    assert np.array_equal(both[3:, :, ::-1], chips)  # mirrored left-right, nothing else
    vectors = np.arange(6 * 128, dtype=np.float32).reshape(6, 128)
    mean = mean_of_mirrors(vectors)
    assert mean.dtype == np.float32 and mean.shape == (3, 128)
    np.testing.assert_array_equal(mean, (vectors[:3] + vectors[3:]) / 2)
    empty = with_mirrors(np.zeros((0, 150, 150, 3), dtype=np.uint8))
    assert empty.shape == (0, 150, 150, 3)
    assert mean_of_mirrors(np.zeros((0, 128), dtype=np.float32)).shape == (0, 128)
    with pytest.raises(ValueError):
        mean_of_mirrors(vectors[:5])


def test_template_is_the_mean_of_the_two_single_descriptors(engine: Engine, obama: RGBImage) -> None:
    dets = engine.detect(obama)
    chips = _chips(engine, obama)
    plain = engine.embedder.embed_chips(chips)
    mirrored = engine.embedder.embed_chips(np.ascontiguousarray(chips[:, :, ::-1]))
    template = engine.embed(obama, dets)
    assert template.shape == (1, 128) and template.dtype == np.float32
    np.testing.assert_allclose(template, (plain + mirrored) / 2, atol=1e-5)
    # The mirror's descriptor really differs, so the mean is not the plain descriptor.
    assert np.linalg.norm(plain - mirrored) > 0.05


def test_template_of_a_mirrored_chip_is_the_same(engine: Engine, obama: RGBImage) -> None:
    chips = _chips(engine, obama)
    a = mean_of_mirrors(engine.embedder.embed_chips(with_mirrors(chips)))
    b = mean_of_mirrors(engine.embedder.embed_chips(with_mirrors(np.ascontiguousarray(chips[:, :, ::-1]))))
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_a_mirrored_photo_gives_nearly_the_same_template(engine: Engine, obama: RGBImage) -> None:
    """Detection and alignment of the mirrored photo are not exact mirrors, so not exactly equal.

    Measured on obama.jpg at half size: 0.074 between the flip-mean templates of the photo and of
    its mirror, against 0.14 between single descriptors (dlib's same-person threshold is 0.6).
    """
    mirror = np.ascontiguousarray(obama[:, ::-1])
    a = engine.embed(obama, engine.detect(obama))[0]
    b = engine.embed(mirror, engine.detect(mirror))[0]
    single_a = engine.embedder.embed_chips(_chips(engine, obama))[0]
    single_b = engine.embedder.embed_chips(_chips(engine, mirror))[0]
    flip_distance = float(np.linalg.norm(a - b))
    assert flip_distance < 0.12
    assert flip_distance < 0.75 * float(np.linalg.norm(single_a - single_b))


def test_identity_says_flip_mean_and_the_key_does_not_change() -> None:
    ident = resnet_identity()
    assert ident.preprocessing == f"{PREPROCESSING}+{FLIP_MEAN}" == f"{PREPROCESSING}+flip-mean"
    assert "flip" not in ident.key and ident.key.startswith("dlib_face_recognition_resnet_model_v1:1:")


def test_dlib_and_onnx_engines_agree_on_flip_mean_templates(
    engine: Engine, fr_images: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    cache = tmp_path_factory.mktemp("flip-cache")
    onnx = Engine(Settings.from_env(cache_dir=cache, embed_backend="onnx", onnx_provider="cpu"))
    dlib_engine = Engine(Settings.from_env(cache_dir=cache, embed_backend="dlib"))
    image = engine.load_image(fr_images / "biden.jpg")
    dets = engine.detect(image)
    a, b = onnx.embed(image, dets), dlib_engine.embed(image, dets)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cosine.min() >= 0.9999
    assert onnx.embedder.identity == dlib_engine.embedder.identity


def test_flip_can_be_turned_off_and_the_identity_says_so(engine: Engine, obama: RGBImage) -> None:
    """REGARD_EMBED_FLIP=false gives the plain descriptor (regard before 0.2), and the template
    identity (what caches and collections record) loses "+flip-mean"; the model key does not change."""
    plain = Engine(Settings.from_env(embed_flip=False))
    dets = plain.detect(obama)
    chips = _chips(plain, obama)
    np.testing.assert_allclose(plain.embed(obama, dets), plain.embedder.embed_chips(chips), atol=1e-6)
    assert FLIP_MEAN not in plain.model_identity.preprocessing
    assert FLIP_MEAN in engine.model_identity.preprocessing
    assert plain.model_identity.key == engine.model_identity.key
    assert np.linalg.norm(plain.embed(obama, dets)[0] - engine.embed(obama, dets)[0]) > 1e-3
