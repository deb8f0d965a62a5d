"""Embed every shared face set once for the fairness work: each fallback step, plain and mirrored.

For every image: MTCNN on the image; where it finds nothing, each candidate fallback step
(MTCNN on the image padded by 25% or 50% of its size with its mean colour, dlib's MMOD ``cnn`` on
the image and on the 25%-padded image). For every step that finds a face, the template of the
largest face's aligned chip and of its mirror image, the step's time and the face's height are
kept in ``.cache/fair/<set>.npz`` (never committed). The steps of the shipped cascade (MTCNN, and
``pad`` and ``pad-cnn`` at 25%) are run by the engine itself and their faces embedded as the
engine embeds them, so their templates are the deployed pipeline's (a padding step's time then
includes MTCNN's fruitless pass). Where MTCNN finds the face, the template of regard before 0.2
is kept too (no flip, aligned on the bare picture). ``bench/fairness_data.py`` reads them back as
the shipped pipeline sees them; the detector cascade and the flip were chosen from these files
(docs/calibration.md), and ``bench/fairness_sweep.py`` chooses the normalizer's details on them.

    .venv/bin/python bench/fairness_templates.py [recognition/celeba_dev ...]
"""

from __future__ import annotations

import csv
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
SETS = [
    "recognition/celeba_dev",
    "demographics/fairface_train",
    "demographics/utkface",
    "recognition/orl",
    "recognition/yale",
    "recognition/bbt",
    "recognition/deepface",
    "recognition/fr_examples",
]
VARIANTS = ["mtcnn", "pad25_mtcnn", "pad50_mtcnn", "cnn", "pad25_cnn"]
#: The variants that are one step of the engine's own cascade, run by an engine whose cascade is
#: that step alone, so their boxes and templates are exactly the deployed pipeline's.
ENGINE_STEPS = {"pad25_mtcnn": "pad", "pad25_cnn": "pad-cnn"}
_engines: dict[str, Any] = {}


def _init() -> None:
    from regard.config import Settings
    from regard.face.engine import Engine

    def engine(fallback: str) -> Any:
        return Engine(Settings.from_env(threads=1, embed_backend="onnx", detect_fallback=fallback))

    _engines["none"] = engine("none")  # the other variants are run by hand
    for step in ENGINE_STEPS.values():
        _engines[step] = engine(step)


def one(path: str) -> tuple[str, str, dict[str, tuple[Any, Any, float, float]]]:
    from regard.face.align import face_chips
    from regard.face.detect.base import alignment_box
    from regard.face.detect.fallback import extend_for, pad_image

    e = _engines["none"]
    try:
        img = e.load_image(path)
    except Exception:
        return path, "unreadable", {}
    res: dict[str, tuple[Any, Any, float, float]] = {}
    for v in VARIANTS:
        if v != "mtcnn" and res["mtcnn"][0] is not None:
            continue  # the fallback steps only run where MTCNN found nothing
        t = time.perf_counter()
        if v in ENGINE_STEPS:
            # MTCNN (again: it finds nothing here), then the step; boxes in the image's pixels.
            im, found = img, _engines[ENGINE_STEPS[v]].detect(img, max_faces=1)
        else:
            im = pad_image(img, int(v[3:5]) / 100)[0] if v.startswith("pad") else img
            found = e.detect(im, detector=v.split("_")[-1], max_faces=1)
        dt = time.perf_counter() - t
        if not found:
            res[v] = (None, None, dt, 0.0)
            continue
        # As the engine embeds: a face whose alignment box crosses the frame (a tight crop's, most
        # often, and every padding step's) is aligned on the picture extended with its mean colour.
        chips = face_chips(*extend_for(im, [alignment_box(found[0])]), e.predictors)
        a = e.embedder.embed_chips(chips)[0]
        b = e.embedder.embed_chips(np.ascontiguousarray(chips[:, :, ::-1]))[0]
        res[v] = (a, b, dt, float(found[0].box.height))
        if v == "mtcnn":
            # regard before 0.2 aligned every face on the bare picture (no extension), without
            # the flip: its template, for the before/after comparisons.
            bare = face_chips(im, [alignment_box(found[0])], e.predictors)
            res["before"] = (e.embedder.embed_chips(bare)[0], None, 0.0, 0.0)
    return path, "ok", res


def main() -> None:
    out = ROOT / ".cache" / "fair"
    out.mkdir(parents=True, exist_ok=True)
    with mp.get_context("spawn").Pool(2, initializer=_init) as pool:
        for name in sys.argv[1:] or SETS:
            root = DATASETS / name
            with open(root / "manifest.csv") as f:
                rows = list(csv.DictReader(f))
            files = [str(root / r["path"]) for r in rows]
            t0 = time.time()
            results = pool.map(one, files, chunksize=8)
            n = len(files)
            data: dict[str, np.ndarray] = {"paths": np.array([r["path"] for r in rows])}
            for v in VARIANTS:
                emb = np.full((n, 128), np.nan, np.float32)
                flip = emb.copy()
                tried = np.zeros(n, bool)
                secs = np.zeros(n)
                height = np.zeros(n)
                for i, (_, _status, res) in enumerate(results):
                    if v in res:
                        tried[i] = True
                        a, b, secs[i], height[i] = res[v]
                        if a is not None:
                            emb[i], flip[i] = a, b
                data[f"{v}_emb"], data[f"{v}_flip"], data[f"{v}_tried"] = emb, flip, tried
                data[f"{v}_secs"], data[f"{v}_height"] = secs, height
            before = np.full((n, 128), np.nan, np.float32)
            for i, (_, _status, res) in enumerate(results):
                if "before" in res:
                    before[i] = res["before"][0]
            data["before_emb"] = before
            target = out / (name.replace("/", "__") + ".npz")
            np.savez(target.with_suffix(".tmp.npz"), **data)
            target.with_suffix(".tmp.npz").replace(target)  # a reader never sees half a file
            ok = np.isfinite(data["mtcnn_emb"][:, 0]).mean()
            print(f"{name}: {n} images, MTCNN found a face in {ok:.1%}, {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
