"""Inference speed: regard's onnxruntime paths against the plain dlib calls, on the same photos.

Prints, in one run on the same celeba_dev photos:

* the machine's float32 matrix-product rate (GFLOP/s, one and all threads);
* descriptor ms/face: dlib vs regard's ONNX ResNet at 1 and 2 threads, and their agreement
  (cosine) plus the verification figure (TAR at FMR 1e-3) computed with each backend;
* MMOD CNN ms/photo: dlib vs ONNX (no upsampling, same boxes checked);
* the whole default pipeline (detect + embed, ONNX descriptor) vs a face_recognition-style
  pipeline (dlib HOG with one upsample + 5-point shape + dlib descriptor), in photos/s. regard's
  pipeline embeds each chip and its mirror (flip-mean templates); a detector named in a row runs
  alone, the last row is the default detector with its fallback cascade.

The fallback cascade and the flip alone are measured by bench/bench_fallback.py.

Usage: .venv/bin/python bench/bench_inference.py [--photos 100] [--mmod-photos 100]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dlib
import numpy as np
from threadpoolctl import threadpool_limits

from regard.config import Settings
from regard.face.align import face_chips
from regard.face.detect.mmod_onnx import MmodOnnxDetector
from regard.face.embed import DlibEmbedder
from regard.face.embed_onnx import OnnxEmbedder
from regard.face.engine import DEFAULT_DETECTOR, DETECTORS, Engine
from regard.models import dlib_model_path

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("REGARD_DATASETS", ROOT.parent / "shared" / "datasets"))


def _photos(n: int) -> tuple[list[Path], list[str]]:
    """``n`` celeba_dev photos: whole subjects in manifest order, so genuine pairs exist."""
    root = DATASETS / "recognition" / "celeba_dev"
    with open(root / "manifest.csv", newline="") as fh:
        rows = sorted(csv.DictReader(fh), key=lambda r: (r["subject"], r["path"]))
    rows = rows[:n]
    return [root / r["path"] for r in rows], [r["subject"] for r in rows]


def _gflops(threads: int, size: int = 1024, reps: int = 10) -> float:
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    with threadpool_limits(threads):
        a @ b
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        elapsed = time.perf_counter() - start
    return 2 * size**3 * reps / elapsed / 1e9


def _timed(fn: Callable[[], object], reps: int = 1) -> float:
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _tar_at_fmr(vectors: np.ndarray, subjects: list[str], fmr: float = 1e-3) -> tuple[float, float]:
    d = np.linalg.norm(vectors[:, None, :] - vectors[None, :, :], axis=-1)
    same = np.asarray(subjects)[:, None] == np.asarray(subjects)[None, :]
    iu = np.triu_indices(len(vectors), 1)
    dist, gen = d[iu], same[iu]
    impostor = np.sort(dist[~gen])
    k = int(np.floor(fmr * len(impostor)))
    threshold = float(impostor[k]) if k < len(impostor) else float(impostor[-1])  # accept d < threshold
    return float(np.mean(dist[gen] < threshold)), threshold


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--mmod-photos", type=int, default=None, help="photos for the MMOD comparison")
    args = parser.parse_args()
    if not (DATASETS / "recognition" / "celeba_dev").is_dir():
        print(f"datasets folder {DATASETS} is absent", file=sys.stderr)
        return 1
    paths, subjects = _photos(args.photos)
    with tempfile.TemporaryDirectory(prefix="regard-bench-") as tmp:
        return _run(args, paths, subjects, Path(tmp))


def _run(args: argparse.Namespace, paths: list[Path], subjects: list[str], cache: Path) -> int:
    base = Settings.from_env(cache_dir=cache, onnx_provider="cpu")
    engine = Engine(base)
    images = [engine.load_image(p) for p in paths]
    print(f"{len(images)} celeba_dev photos, {len(set(subjects))} people; cpu cores: {os.cpu_count()}")
    one, every = _gflops(1), _gflops(os.cpu_count() or 1)
    print(f"float32 matmul 1024^3: {one:.0f} GFLOP/s on 1 thread, {every:.0f} on all")

    # -- descriptor -------------------------------------------------------------------------
    chips_list, chip_subjects = [], []
    for image, subject in zip(images, subjects, strict=True):
        dets = engine.detect(image, detector="hog")
        if dets:
            chips_list.append(face_chips(image, [dets[0].box], engine.predictors))
            chip_subjects.append(subject)
    chips = np.concatenate(chips_list)
    n = len(chips)
    dlib_emb = DlibEmbedder()
    ref = dlib_emb.embed_chips(chips[:2])
    t_dlib = _timed(lambda: dlib_emb.embed_chips(chips)) / n * 1000
    ref = dlib_emb.embed_chips(chips)
    rows = [("dlib (reference)", t_dlib, 1.0)]
    onnx_vectors = None
    for threads in (1, 2):
        emb = OnnxEmbedder(Settings.from_env(cache_dir=cache, onnx_provider="cpu", threads=threads))
        emb.embed_chips(chips[:8])
        t = _timed(lambda emb=emb: emb.embed_chips(chips), reps=2) / n * 1000  # type: ignore[misc]
        rows.append((f"onnx, {threads} thread{'s' if threads > 1 else ''}", t, t_dlib / t))
        onnx_vectors = emb.embed_chips(chips)
    assert onnx_vectors is not None
    cos = (ref * onnx_vectors).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(onnx_vectors, axis=1))
    print(f"\ndescriptor, {n} faces (batched):")
    for name, t, ratio in rows:
        print(f"  {name:22s} {t:8.2f} ms/face   x{ratio:5.1f}")
    print(f"  agreement: min cosine {cos.min():.7f}, max |diff| {np.abs(ref - onnx_vectors).max():.2e}")
    tar_d, thr_d = _tar_at_fmr(ref, chip_subjects)
    tar_o, thr_o = _tar_at_fmr(onnx_vectors, chip_subjects)
    print(f"  TAR at FMR 1e-3: dlib {tar_d:.4f} (d < {thr_d:.4f}), onnx {tar_o:.4f} (d < {thr_o:.4f})")

    # -- MMOD detector ----------------------------------------------------------------------
    m = args.mmod_photos or len(images)
    mmod_images = images[:m]
    ref_cnn = dlib.cnn_face_detection_model_v1(str(dlib_model_path("mmod")))
    onnx_cnn = MmodOnnxDetector(engine.predictors, Settings.from_env(cache_dir=cache, onnx_provider="cpu"))
    onnx_cnn.raw(mmod_images[0], 0)
    start = time.perf_counter()
    ref_boxes = [ref_cnn(im, 0) for im in mmod_images]
    t_ref = (time.perf_counter() - start) / m * 1000
    start = time.perf_counter()
    onnx_boxes = [onnx_cnn.raw(im, 0) for im in mmod_images]
    t_onnx = (time.perf_counter() - start) / m * 1000
    same = sum(
        [(d.rect.left(), d.rect.top(), d.rect.right(), d.rect.bottom()) for d in a]
        == [(r.left, r.top, r.right, r.bottom) for r, _ in b]
        for a, b in zip(ref_boxes, onnx_boxes, strict=True)
    )
    mean_px = np.mean([im.shape[0] * im.shape[1] for im in mmod_images]) / 1e6
    print(f"\nMMOD CNN, {m} photos (mean {mean_px:.2f} Mpx, no upsampling):")
    print(f"  dlib (reference)       {t_ref:8.1f} ms/photo")
    print(f"  onnx                   {t_onnx:8.1f} ms/photo   x{t_ref / t_onnx:5.1f}")
    print(f"  identical boxes on {same}/{m} photos")

    # -- whole pipeline ---------------------------------------------------------------------
    hog = dlib.get_frontal_face_detector()
    sp5 = dlib.shape_predictor(str(dlib_model_path("shape5")))
    rec = dlib.face_recognition_model_v1(str(dlib_model_path("resnet")))

    def fr_style(image: np.ndarray) -> list[np.ndarray]:
        return [np.asarray(rec.compute_face_descriptor(image, sp5(image, r))) for r in hog(image, 1)]

    regard = Engine(Settings.from_env(cache_dir=cache, onnx_provider="cpu", embed_backend="onnx"))
    # (detector, smallest face): the default smallest face makes HOG upsample 2x; 80 px does not.
    variants = [(d, None) for d in ("hog", "mtcnn") if d in DETECTORS]
    variants += [("mtcnn", 20), ("mtcnn", 40), ("hog", 80)]

    def regard_pipeline(image: np.ndarray, detector: str | None, min_face: int | None) -> np.ndarray:
        return regard.embed(image, regard.detect(image, detector=detector, min_face_size=min_face))

    def rate(count: Callable[[], int]) -> tuple[float, int]:
        """Best photos/s of two passes (both pipelines alike), and the faces found."""
        best, faces = float("inf"), 0
        for _ in range(2):
            start = time.perf_counter()
            faces = count()
            best = min(best, time.perf_counter() - start)
        return len(images) / best, faces

    fr_rate, n_fr = rate(lambda: sum(len(fr_style(im)) for im in images))
    print(f"\nwhole pipeline (detect + embed), {len(images)} photos; default detector {DEFAULT_DETECTOR!r}:")
    fr_label = "face_recognition-style (HOG x1 + shape5 + dlib)"
    print(f"  {fr_label:58s} {fr_rate:6.2f} photos/s ({n_fr} faces)")
    for detector, min_face in variants:
        regard_pipeline(images[0], detector, min_face)
        rg_rate, n_rg = rate(
            lambda d=detector, m=min_face: sum(len(regard_pipeline(im, d, m)) for im in images)  # type: ignore[misc]
        )
        smallest = f", min face {min_face or regard.settings.min_face_size}"
        label = f"regard ({detector!r}{smallest}, onnx descriptor)"
        print(f"  {label:58s} {rg_rate:6.2f} photos/s ({n_rg} faces)   x{rg_rate / fr_rate:4.1f}")
    # Photos in flight at once, as `regard index` (--jobs, one per core) and the API server run them.
    jobs = os.cpu_count() or 1
    with ThreadPoolExecutor(jobs) as pool:

        def default(image: np.ndarray) -> int:  # the default detector with its fallback cascade
            return len(regard_pipeline(image, None, None))

        rg_rate, n_rg = rate(lambda: sum(pool.map(default, images)))
    label = f"regard default, {jobs} photos in flight (as regard index --jobs {jobs})"
    print(f"  {label:58s} {rg_rate:6.2f} photos/s ({n_rg} faces)   x{rg_rate / fr_rate:4.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
