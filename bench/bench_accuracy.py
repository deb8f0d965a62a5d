"""Issue 2 acceptance: regard's default pipeline vs face_recognition's plain dlib pipeline.

On ``recognition/celeba_dev`` (one subject per photo), every photo goes through

* ``face_recognition`` - what the face_recognition library runs by default, called on dlib
  directly: HOG detector with one upsample on the full image, the 5-point shape predictor on the
  HOG box, dlib's ResNet descriptor on the 150-pixel chip, no jitter;
* ``regard`` - :class:`regard.face.engine.Engine` with its default detector: ``engine.detect`` then
  ``engine.embed`` (whatever alignment the engine does);
* ``mtcnn-raw-box`` (diagnostic) - MTCNN detections aligned from the MTCNN box itself, to show
  what the box mapping in :mod:`regard.face.detect.mtcnn` is worth.

The largest face found in a photo stands for it. A photo where a pipeline finds no face is a
failure to acquire: it has no template, its genuine pairs count as rejected in ``TAR (FTA as
reject)`` and its impostor pairs as (correct) non-matches; the plain ``TAR`` columns use only
pairs where both photos were embedded, and the ``common`` columns only the photos that every
pipeline embedded (like for like). Thresholds for FMR 1e-3 / 1e-4 come from each pipeline's own
impostor distances (pairs of embedded photos of different subjects).

Detections and embeddings are cached under ``.cache/bench/accuracy/`` so reruns only recompute
what changed (``--fresh`` ignores the cache; a cached MTCNN face below today's O-net threshold is
detected again). ``--stage fr`` / ``--stage mtcnn`` fill one cache only, so two processes can
share the work before a final run prints the table. Run:

    .venv/bin/python bench/bench_accuracy.py [--subjects-step N] [--with-hog] [--fit-alignment]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import dlib
import numpy as np

from regard.face.align import face_chips
from regard.face.detect import mtcnn as mtcnn_module
from regard.face.detect.base import alignment_box
from regard.face.detect.mtcnn import THRESHOLDS
from regard.face.engine import DEFAULT_DETECTOR, Engine
from regard.models import dlib_model_path
from regard.types import Box, Detection

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "bench" / "accuracy"

Record = dict[str, object]


def load_manifest(folder: Path, subjects_step: int = 1) -> list[tuple[str, str]]:
    """(path, subject) of every photo of every ``subjects_step``-th subject (sorted by name)."""
    with open(folder / "manifest.csv", newline="") as fh:
        rows = [(r["path"], r["subject"]) for r in csv.DictReader(fh)]
    chosen = set(sorted({s for _, s in rows})[::subjects_step])
    return [(p, s) for p, s in rows if s in chosen]


class Cache:
    """One JSON file per (pipeline, stage): path -> record."""

    def __init__(self, name: str, fresh: bool) -> None:
        self.path = CACHE / f"{name}.json"
        self.data: dict[str, Record] = {}
        if self.path.is_file() and not fresh:
            self.data = json.loads(self.path.read_text())

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        tmp.replace(self.path)


def run_cached(
    name: str,
    rows: list[tuple[str, str]],
    fresh: bool,
    compute: Callable[[str, Record | None], Record],
    complete: Callable[[Record], bool] = lambda r: True,
) -> dict[str, Record]:
    """Records for every photo; ``compute(path, old)`` runs where none is cached or it is incomplete."""
    cache = Cache(name, fresh)
    todo = [p for p, _ in rows if p not in cache.data or not complete(cache.data[p])]
    start = time.perf_counter()
    for i, path in enumerate(todo, 1):
        cache.data[path] = compute(path, cache.data.get(path))
        if i % 25 == 0:
            cache.save()
            rate = (time.perf_counter() - start) / i
            print(f"  {name}: {i}/{len(todo)} ({rate * 1000:.0f} ms/photo)", file=sys.stderr, flush=True)
    if todo:
        cache.save()
    return {p: cache.data[p] for p, _ in rows}


# -- the face_recognition reference, on dlib directly ---------------------------------------------


class FaceRecognitionPipeline:
    def __init__(self) -> None:
        self.detector = dlib.get_frontal_face_detector()
        self.shape5 = dlib.shape_predictor(str(dlib_model_path("shape5")))
        self.resnet = dlib.face_recognition_model_v1(str(dlib_model_path("resnet")))

    def __call__(self, image: np.ndarray) -> Record:
        rects = list(self.detector(image, 1))
        if not rects:
            return {"found": 0}
        rect = max(rects, key=lambda r: r.width() * r.height())
        shape = self.shape5(image, rect)
        vec = np.asarray(self.resnet.compute_face_descriptor(image, shape, 1), dtype=np.float32)
        box = [rect.left(), rect.top(), rect.width(), rect.height()]
        return {"found": len(rects), "box": box, "embedding": vec.tolist()}


# -- regard ----------------------------------------------------------------------------------------


def _largest(dets: list[Detection]) -> Detection:
    return max(dets, key=lambda d: d.box.area)


def regard_record(engine: Engine, image: np.ndarray, detector: str) -> Record:
    """Engine.detect then Engine.embed on the largest face."""
    dets = engine.detect(image, detector=detector)
    if not dets:
        return {"found": 0}
    det = _largest(dets)
    vec = engine.embed(image, [det])[0]
    b = det.box
    return {"found": len(dets), "box": [b.left, b.top, b.width, b.height], "embedding": vec.tolist()}


#: Key of the engine-aligned embedding in MTCNN records; changes with the alignment constants.
ENGINE_KEY = f"embedding_engine:{getattr(mtcnn_module, 'ALIGNMENT', None)!r}"


def mtcnn_record(engine: Engine, image: np.ndarray, old: Record | None) -> Record:
    """MTCNN's largest face, embedded twice: aligned by the engine, and from the raw MTCNN box.

    The detection is ``engine.detect(image, detector="mtcnn")``; a cached one is reused (the
    detector is deterministic), so changing the alignment only re-embeds.
    """
    if old and "box" in old and float(old["confidence"]) >= 100 * THRESHOLDS[2]:  # type: ignore[arg-type]
        rec = dict(old)
    else:
        dets = engine.detect(image, detector="mtcnn")
        if not dets:
            return {"found": 0}
        d = _largest(dets)
        rec = {
            "found": len(dets),
            "box": [d.box.left, d.box.top, d.box.width, d.box.height],
            "confidence": d.confidence,
            "landmarks": [list(p) for p in d.landmarks],
        }
    det = Detection(
        Box(*rec["box"]),  # type: ignore[misc]
        float(rec["confidence"]),  # type: ignore[arg-type]
        tuple(tuple(p) for p in rec["landmarks"]),  # type: ignore[arg-type, union-attr]
        "mtcnn",
    )
    if "embedding_raw" not in rec:
        chips = face_chips(image, [det.box], engine.predictors)
        rec["embedding_raw"] = engine.embedder.embed_chips(chips)[0].tolist()
    if ENGINE_KEY not in rec:
        if alignment_box(det) == det.box:  # the engine aligns from the raw box: same embedding
            rec[ENGINE_KEY] = rec["embedding_raw"]
        else:
            rec[ENGINE_KEY] = engine.embed(image, [det])[0].tolist()
    return rec


def view(records: dict[str, Record], key: str) -> dict[str, Record]:
    """The same records with ``key`` as their embedding."""
    return {
        p: ({"found": r["found"], "embedding": r[key]} if r.get("found") else r) for p, r in records.items()
    }


# -- metrics ---------------------------------------------------------------------------------------


def verification(records: dict[str, Record], subjects: dict[str, str]) -> dict[str, float]:
    paths = list(records)
    ok = [p for p in paths if records[p].get("found")]
    emb = np.asarray([records[p]["embedding"] for p in ok], dtype=np.float64)
    subj = np.asarray([subjects[p] for p in ok])
    d2 = (emb**2).sum(1)
    dist = np.sqrt(np.maximum(d2[:, None] + d2[None, :] - 2 * emb @ emb.T, 0.0))
    iu = np.triu_indices(len(ok), k=1)
    same = (subj[:, None] == subj[None, :])[iu]
    dd = dist[iu]
    genuine = np.sort(dd[same])
    impostor = np.sort(dd[~same])
    # Genuine pairs among all photos, embedded or not (for FTA counted as rejection).
    all_subj = np.asarray([subjects[p] for p in paths])
    counts = np.unique(all_subj, return_counts=True)[1]
    all_genuine = int((counts * (counts - 1) // 2).sum())
    out: dict[str, float] = {
        "photos": float(len(paths)),
        "failures": float(len(paths) - len(ok)),
        "genuine_pairs": float(genuine.size),
        "impostor_pairs": float(impostor.size),
        "all_genuine_pairs": float(all_genuine),
    }
    for fmr, key in ((1e-3, "1e-3"), (1e-4, "1e-4")):
        # Largest threshold whose false-match rate does not exceed ``fmr`` (accept when d < t).
        allowed = int(np.floor(fmr * impostor.size))
        threshold = impostor[allowed] if allowed < impostor.size else np.inf
        accepted = int(np.searchsorted(genuine, threshold, side="left"))
        out[f"threshold@{key}"] = float(threshold)
        out[f"tar@{key}"] = accepted / genuine.size
        out[f"tar_fta@{key}"] = accepted / all_genuine
    # EER: where FNMR (genuine >= t) meets FMR (impostor < t).
    grid = np.unique(np.concatenate([genuine, impostor]))[:: max(1, (genuine.size + impostor.size) // 20000)]
    fnmr = 1 - np.searchsorted(genuine, grid, side="left") / genuine.size
    fmr_ = np.searchsorted(impostor, grid, side="left") / impostor.size
    i = int(np.argmin(np.abs(fnmr - fmr_)))
    out["eer"] = float((fnmr[i] + fmr_[i]) / 2)
    return out


# -- alignment-box fit -----------------------------------------------------------------------------


def fit_alignment(reference: dict[str, Record], mtcnn: dict[str, Record]) -> None:
    """Fit the map from MTCNN's five landmarks to the HOG box the shape predictor expects.

    In the face's own frame (``down`` from the eye midpoint to the mouth midpoint, ``right``
    perpendicular to it) and in units of ``s``, the mean distance of the five points from their
    centroid: HOG box centre = centroid + s * (a * right + b * down), HOG box side = c * s. The
    medians over photos where both pipelines found the same face (IoU >= 0.3) give a, b, c.
    """
    rows = []
    for path, ref in reference.items():
        got = mtcnn.get(path, {})
        if not ref.get("found") or not got.get("found"):
            continue
        rb = Box(*ref["box"])  # type: ignore[misc]
        mb = Box(*got["box"])  # type: ignore[misc]
        if rb.iou(mb) < 0.3:
            continue
        pts = np.asarray(got["landmarks"], dtype=np.float64)
        centroid = pts.mean(0)
        scale = np.sqrt(((pts - centroid) ** 2).sum(1)).mean()
        down = (pts[3:5].mean(0) - pts[0:2].mean(0)) / np.linalg.norm(pts[3:5].mean(0) - pts[0:2].mean(0))
        right = np.array([-down[1], down[0]]) * -1  # (1, 0) for an upright face
        offset = np.array([rb.left + rb.width / 2, rb.top + rb.height / 2]) - centroid
        rows.append((offset @ right / scale, offset @ down / scale, rb.width / scale))
    arr = np.asarray(rows)
    a, b, c = (float(v) for v in np.median(arr, axis=0))
    spread = np.median(np.abs(arr - [a, b, c]), axis=0)
    print(f"alignment fit on {len(rows)} photos: a={a:.4f} b={b:.4f} c={c:.4f}")
    print(f"  median absolute deviation: a {spread[0]:.4f}, b {spread[1]:.4f}, c {spread[2]:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets")
    parser.add_argument("--subjects-step", type=int, default=1, help="every n-th subject (all photos)")
    parser.add_argument("--fresh", action="store_true", help="ignore cached results")
    parser.add_argument("--stage", choices=["all", "fr", "mtcnn"], default="all", help="fill one cache only")
    parser.add_argument("--with-hog", action="store_true", help="also regard with the hog detector")
    parser.add_argument("--fit-alignment", action="store_true", help="print the MTCNN box-map fit")
    args = parser.parse_args()

    folder = args.datasets / "recognition" / "celeba_dev"
    rows = load_manifest(folder, args.subjects_step)
    subjects = dict(rows)
    engine = Engine()
    fr = FaceRecognitionPipeline()

    def image(path: str) -> np.ndarray:
        return engine.load_image(folder / path)

    def complete(record: Record) -> bool:
        if not record.get("found"):
            return True
        # A face below today's O-net threshold means the cached detection is stale.
        return ENGINE_KEY in record and float(record["confidence"]) >= 100 * THRESHOLDS[2]  # type: ignore[arg-type]

    # Detections depend on the smallest face and on the MTCNN detector's version, so both name the
    # caches: a change of either starts a new one instead of reusing stale detections.
    smallest = f"{engine.settings.min_face_size}px"
    mtcnn_cache = f"mtcnn-{smallest}-{engine.detector('mtcnn').version}"
    mtcnn_of = lambda p, old: mtcnn_record(engine, image(p), old)  # noqa: E731
    if args.stage == "mtcnn":  # fill only the MTCNN cache (e.g. in a second process)
        run_cached(mtcnn_cache, rows, args.fresh, mtcnn_of, complete)
        return
    reference = run_cached("face_recognition", rows, args.fresh, lambda p, old: fr(image(p)))
    if args.stage == "fr":  # fill only the face_recognition cache (e.g. in a second process)
        return
    mtcnn = run_cached(mtcnn_cache, rows, args.fresh, mtcnn_of, complete)
    results = {"face_recognition (dlib HOG up1, shape5)": reference}
    if DEFAULT_DETECTOR == "mtcnn":
        results["regard default (mtcnn)"] = view(mtcnn, ENGINE_KEY)
    else:
        name = f"regard default ({DEFAULT_DETECTOR})"
        compute = lambda p, old: regard_record(engine, image(p), "default")  # noqa: E731
        results[name] = run_cached(f"regard-{DEFAULT_DETECTOR}-{smallest}", rows, args.fresh, compute)
        results["regard, mtcnn"] = view(mtcnn, ENGINE_KEY)
    if args.with_hog and DEFAULT_DETECTOR != "hog":
        compute = lambda p, old: regard_record(engine, image(p), "hog")  # noqa: E731
        results["regard, hog detector"] = run_cached(f"regard-hog-{smallest}", rows, args.fresh, compute)
    results["mtcnn, aligned from the raw MTCNN box"] = view(mtcnn, "embedding_raw")
    if args.fit_alignment:
        fit_alignment(reference, mtcnn)

    # Like for like: only the photos every pipeline embedded.
    common = [p for p, _ in rows if all(r[p].get("found") for r in results.values())]
    header = (
        "| pipeline | photos | no face found | TAR @ FMR 1e-3 | TAR @ FMR 1e-4 | "
        "TAR @ 1e-3, FTA as reject | TAR @ 1e-4, FTA as reject | EER | "
        f"TAR @ 1e-3, common {len(common)} photos | TAR @ 1e-4, common | EER, common |"
    )
    print(header)
    print("|" + "---|" * 11)
    for name, records in results.items():
        m = verification(records, subjects)
        c = verification({p: records[p] for p in common}, subjects)
        print(
            f"| {name} | {m['photos']:.0f} | {m['failures']:.0f} | {m['tar@1e-3']:.4f} | "
            f"{m['tar@1e-4']:.4f} | {m['tar_fta@1e-3']:.4f} | {m['tar_fta@1e-4']:.4f} | {m['eer']:.4f} | "
            f"{c['tar@1e-3']:.4f} | {c['tar@1e-4']:.4f} | {c['eer']:.4f} |"
        )
    m = verification(reference, subjects)
    print(
        f"\n{len(set(subjects.values()))} subjects; pairs among embedded photos (face_recognition): "
        f"{m['genuine_pairs']:.0f} genuine, {m['impostor_pairs']:.0f} impostor; "
        f"all genuine pairs: {m['all_genuine_pairs']:.0f}"
    )


if __name__ == "__main__":
    main()
