"""The ONNX descriptor agrees with dlib's own on real faces (cosine >= 0.9999, same decisions)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from regard.config import Settings
from regard.face.align import face_chips
from regard.face.embed import DlibEmbedder, resnet_identity
from regard.face.embed_onnx import OnnxEmbedder
from regard.face.engine import Engine


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings.from_env(cache_dir=tmp_path_factory.mktemp("cache"), threads=2, onnx_provider="cpu")


@pytest.fixture(scope="module")
def onnx_embedder(settings: Settings) -> OnnxEmbedder:
    return OnnxEmbedder(settings)


@pytest.fixture(scope="module")
def dlib_embedder() -> DlibEmbedder:
    return DlibEmbedder()


def _chips(engine: Engine, paths: list[Path]) -> Iterator[np.ndarray]:
    for path in paths:
        image = engine.load_image(path)
        dets = engine.detect(image, detector="hog")
        if dets:
            yield face_chips(image, [d.box for d in dets], engine.predictors)


def test_same_identity_as_dlib(onnx_embedder: OnnxEmbedder) -> None:
    assert onnx_embedder.identity == resnet_identity()
    assert onnx_embedder.providers[0] == "CPUExecutionProvider"


def test_descriptors_match_dlib_on_portraits(
    engine: Engine, fr_images: Path, onnx_embedder: OnnxEmbedder, dlib_embedder: DlibEmbedder
) -> None:
    paths = sorted(fr_images.glob("*.jpg"))
    largest = []  # one chip per portrait: its largest face, so chips and names stay aligned
    for path in paths:
        image = engine.load_image(path)
        dets = engine.detect(image, detector="hog")
        assert dets, f"no face in {path.name}"
        largest.append(face_chips(image, [dets[0].box], engine.predictors))
    chips = np.concatenate(largest)
    assert len(chips) == len(paths) >= 4
    ref = dlib_embedder.embed_chips(chips)
    got = onnx_embedder.embed_chips(chips)
    assert got.shape == ref.shape == (len(chips), 128)
    assert got.dtype == np.float32
    assert _cosine(ref, got).min() >= 0.9999
    assert np.abs(ref - got).max() < 1e-4
    # Batches of one give the same vectors as one batch of all.
    single = OnnxEmbedder(onnx_embedder.settings, batch_size=1).embed_chips(chips)
    np.testing.assert_allclose(single, got, atol=1e-5)
    # Obama's three photos are the same person, Biden another (dlib's 0.6 threshold).
    by_name = dict(zip((p.name for p in paths), got, strict=True))
    assert np.linalg.norm(by_name["obama.jpg"] - by_name["obama2.jpg"]) < 0.6
    assert np.linalg.norm(by_name["obama.jpg"] - by_name["biden.jpg"]) > 0.6


def test_empty_batch(onnx_embedder: OnnxEmbedder) -> None:
    out = onnx_embedder.embed_chips(np.zeros((0, 150, 150, 3), dtype=np.uint8))
    assert out.shape == (0, 128)


def test_engine_onnx_backend(settings: Settings, fr_images: Path) -> None:
    onnx_engine = Engine(Settings.from_env(cache_dir=settings.cache_dir, embed_backend="onnx"))
    dlib_engine = Engine(Settings.from_env(cache_dir=settings.cache_dir, embed_backend="dlib"))
    image = onnx_engine.load_image(fr_images / "obama.jpg")
    dets = onnx_engine.detect(image, detector="hog")
    a = onnx_engine.embed(image, dets)
    b = dlib_engine.embed(image, dets)
    assert onnx_engine.embedder.identity == dlib_engine.embedder.identity
    assert _cosine(a, b).min() >= 0.9999


@pytest.mark.dataset
@pytest.mark.slow
def test_descriptors_match_dlib_on_celeba(
    datasets: Path, engine: Engine, onnx_embedder: OnnxEmbedder, dlib_embedder: DlibEmbedder
) -> None:
    """Same descriptors and the same verification decisions as dlib on whole celeba_dev subjects."""
    root = datasets / "recognition" / "celeba_dev"
    with open(root / "manifest.csv", newline="") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: (r["subject"], r["path"]))
    first = sorted({r["subject"] for r in rows})[:6]
    chips, subjects = [], []
    for row in (r for r in rows if r["subject"] in first):
        image = engine.load_image(root / row["path"])
        dets = engine.detect(image, detector="hog")
        if dets:
            chips.append(face_chips(image, [dets[0].box], engine.predictors))
            subjects.append(row["subject"])
    batch = np.concatenate(chips)
    assert len(batch) >= 30
    ref, got = dlib_embedder.embed_chips(batch), onnx_embedder.embed_chips(batch)
    assert _cosine(ref, got).min() >= 0.9999
    # Every pair is accepted or rejected alike at the shipped scoring's thresholds.
    same = np.asarray(subjects)[:, None] == np.asarray(subjects)[None, :]
    upper = np.triu_indices(len(batch), 1)
    assert same[upper].sum() >= 50 and (~same[upper]).sum() >= 500
    scorer = engine.scorer

    def scores(v: np.ndarray) -> np.ndarray:
        half = scorer.half_offsets(v)
        d = np.linalg.norm(v[:, None] - v[None, :], axis=-1)
        return np.asarray((d - half[:, None] - half[None, :])[upper])

    s_ref, s_got = scores(ref), scores(got)
    for fmr in (1e-2, 1e-3, 1e-4):
        threshold = scorer.score_for_fmr(fmr)
        assert np.array_equal(s_ref <= threshold, s_got <= threshold)
