"""What Rekognition's usual thresholds mean in regard: nominal and measured FMR, and FNMR.

For each SimilarityThreshold / FaceMatchThreshold a migrating client may use (70, 80, 90, 95, 99)
it reports the false-match rate regard's calibration says the threshold stands for
(similarity = -20 log10 FMR), the false-match rate measured on held-apart impostor pairs of the
shared datasets, and the false non-match rate measured on held-apart genuine pairs, each with a
95% Clopper-Pearson interval. Only samples the shipped normalizer and table never saw are used
(:func:`regard.scoring.calibrate.is_held_apart`). Impostor pairs are sampled (``--max-impostors``
per dataset) to keep the run short; genuine pairs are all used. A second table shows the floors of
the default policy profiles: the least threshold each allows, by collection size for 1:N search.

Templates come from ``regard evaluate``'s cache (``<cache_dir>/templates``) when present, otherwise
they are computed once (minutes per thousand photos) and cached there.

    .venv/bin/python bench/bench_thresholds.py                       # print the tables
    .venv/bin/python bench/bench_thresholds.py --write docs/migrating.md

``--write`` replaces the text between ``<!-- bench_thresholds:begin -->`` and
``<!-- bench_thresholds:end -->`` in the given file.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regard.accountability.policy import DEFAULT_PROFILES
from regard.config import Settings
from regard.evaluation import held_apart_keep
from regard.evaluation.dataset import Dataset, TemplateSource, compute_templates, read_dataset
from regard.evaluation.metrics import clopper_pearson
from regard.face.engine import Engine
from regard.scoring.calibrate import Scorer, fmr_from_similarity, similarity_from_fmr
from regard.scoring.versions import face_model_version

THRESHOLDS = (70.0, 80.0, 90.0, 95.0, 99.0)
#: Sets with several photos per person: genuine and impostor pairs.
IDENTITY_SETS = ("recognition/celeba_dev", "recognition/orl", "recognition/yale")
#: Sets where every photo is a different person: impostor pairs only.
IMPOSTOR_SETS = ("demographics/fairface_train", "demographics/utkface")
GALLERIES = (100, 1_000, 10_000, 100_000)
BEGIN, END = "<!-- bench_thresholds:begin -->", "<!-- bench_thresholds:end -->"


@dataclass
class Scores:
    """Normalized scores of one dataset's held-apart pairs (lower = more alike)."""

    name: str
    images: int
    subjects: int
    genuine: np.ndarray
    impostor: np.ndarray


def held_apart_templates(engine: Engine, root: Path, cache: Path) -> tuple[Dataset, np.ndarray, np.ndarray]:
    dataset = read_dataset(root, keep_subject=held_apart_keep(root))
    templates = compute_templates(TemplateSource(engine), dataset, cache)
    ok = templates.acquired
    subjects = np.array(dataset.subjects)[ok]
    return dataset, templates.embeddings[ok].astype(np.float32), subjects


def pair_scores(scorer: Scorer, emb: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    half = scorer.half_offsets(emb)
    out = np.empty(len(a), dtype=np.float64)
    for start in range(0, len(a), 200_000):
        i, j = a[start : start + 200_000], b[start : start + 200_000]
        d = np.linalg.norm(emb[i].astype(np.float64) - emb[j].astype(np.float64), axis=1)
        out[start : start + 200_000] = d - half[i] - half[j]
    return out


def dataset_scores(
    engine: Engine, scorer: Scorer, root: Path, cache: Path, max_impostors: int, rng: np.random.Generator
) -> Scores:
    dataset, emb, subjects = held_apart_templates(engine, root, cache)
    n = len(emb)
    codes = np.unique(subjects, return_inverse=True)[1]
    genuine = np.zeros(0)
    if dataset.has_identities:
        ga, gb = [], []
        for code in np.unique(codes):
            idx = np.flatnonzero(codes == code)
            for x in range(len(idx)):
                for y in range(x + 1, len(idx)):
                    ga.append(idx[x])
                    gb.append(idx[y])
        genuine = pair_scores(scorer, emb, np.array(ga, dtype=np.int64), np.array(gb, dtype=np.int64))
    all_pairs = n * (n - 1) // 2
    if all_pairs <= max_impostors:
        a, b = np.triu_indices(n, 1)
    else:  # a sample of distinct unordered pairs
        a = rng.integers(0, n, size=max_impostors * 2)
        b = rng.integers(0, n, size=max_impostors * 2)
        keep = a < b
        pairs = np.unique(np.stack([a[keep], b[keep]], axis=1), axis=0)
        pairs = pairs[rng.permutation(len(pairs))[:max_impostors]]
        a, b = pairs[:, 0], pairs[:, 1]
    different = codes[a] != codes[b]
    impostor = pair_scores(scorer, emb, a[different], b[different])
    return Scores(dataset.name, n, len(np.unique(codes)), genuine, impostor)


def fmt_rate(errors: int, trials: int) -> str:
    if trials == 0:
        return "n/a"
    lo, hi = clopper_pearson(errors, trials)
    return f"{errors / trials:.2g} [{lo:.2g}, {hi:.2g}]"


def thresholds_table(scorer: Scorer, sets: list[Scores]) -> list[str]:
    impostor = np.concatenate([s.impostor for s in sets])
    genuine = np.concatenate([s.genuine for s in sets])
    lines = [
        "| Threshold | FMR it stands for | FMR measured (95% CI) | FNMR measured (95% CI) "
        "| 1 false match in (nominal) |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for t in THRESHOLDS:
        cut = scorer.score_for_similarity(t)
        fm = int(np.count_nonzero(impostor <= cut))
        fnm = int(np.count_nonzero(genuine > cut))
        nominal = fmr_from_similarity(t)
        lines.append(
            f"| {t:g} | {nominal:.2g} | {fmt_rate(fm, impostor.size)} | {fmt_rate(fnm, genuine.size)} "
            f"| {1 / nominal:,.0f} |"
        )
    return lines


def per_set_table(scorer: Scorer, sets: list[Scores]) -> list[str]:
    head = " / ".join(f"{t:g}" for t in THRESHOLDS)
    lines = [
        f"| Held-apart set | images | people | genuine pairs | impostor pairs | FNMR at {head} |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in sets:
        fnmr = []
        for t in THRESHOLDS:
            cut = scorer.score_for_similarity(t)
            fnmr.append(
                f"{np.count_nonzero(s.genuine > cut) / s.genuine.size:.3f}" if s.genuine.size else "-"
            )
        people = f"{s.subjects:,}" if s.genuine.size else "(each photo a different person)"
        lines.append(
            f"| {s.name} | {s.images:,} | {people} | {s.genuine.size:,} | {s.impostor.size:,} "
            f"| {' / '.join(fnmr)} |"
        )
    return lines


def floors_table() -> list[str]:
    lines = [
        "| Profile | 1:1 (CompareFaces) | " + " | ".join(f"1:N, {g:,} faces" for g in GALLERIES) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in GALLERIES) + " |",
    ]
    for name in ("verification", "identification", "admin"):
        p = DEFAULT_PROFILES[name]

        def least(operation: str, gallery: int | None, profile: object = p) -> str:
            assert hasattr(profile, "allows_operation") and hasattr(profile, "floor_fmr")
            if not profile.allows_operation(operation):
                return "not allowed"
            fmr = profile.floor_fmr(operation, gallery)
            sim = similarity_from_fmr(fmr)
            return "none" if fmr >= 1.0 else f"{sim:.1f} (FMR {fmr:.2g})"

        cells = [least("CompareFaces", None)] + [least("SearchFacesByImage", g) for g in GALLERIES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def render(scorer: Scorer, model_version: str, sets: list[Scores], seconds: float, max_imp: int) -> str:
    genuine = sum(s.genuine.size for s in sets)
    impostor = sum(s.impostor.size for s in sets)
    out = [
        BEGIN,
        "",
        f"Made by `bench/bench_thresholds.py` (FaceModelVersion {model_version}, scoring "
        f"{scorer.key}; {genuine:,} genuine and {impostor:,} impostor pairs of held-apart photos, "
        f"impostors sampled up to {max_imp:,} per set; {seconds:.0f} s). Rerun it after any change "
        "of model or scoring.",
        "",
        *thresholds_table(scorer, sets),
        "",
        *per_set_table(scorer, sets),
        "",
        "The least threshold each default profile accepts (`max_fmr`, and for 1:N `max_fpir` over "
        "the collection's size); a lower one answers AccessDeniedException naming this value:",
        "",
        *floors_table(),
        "",
        END,
    ]
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--datasets", type=Path, default=Path(__file__).resolve().parents[2] / "shared/datasets"
    )
    parser.add_argument("--max-impostors", type=int, default=1_000_000, help="impostor pairs per dataset")
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--write", type=Path, help="replace the marked tables in this file")
    args = parser.parse_args()
    started = time.perf_counter()
    settings = Settings.from_env()
    engine = Engine(settings)
    scorer = engine.scorer
    cache = settings.cache_dir / "templates"
    rng = np.random.default_rng(args.seed)
    sets = []
    for name in (*IDENTITY_SETS, *IMPOSTOR_SETS):
        root = args.datasets / name
        if not root.is_dir():
            print(f"skipping {name}: {root} is absent", file=sys.stderr)
            continue
        sets.append(dataset_scores(engine, scorer, root, cache, args.max_impostors, rng))
        print(f"{name}: {sets[-1].genuine.size} genuine, {sets[-1].impostor.size} impostor", file=sys.stderr)
    if not sets:
        print("no dataset found", file=sys.stderr)
        return 1
    version = face_model_version(engine.model_identity, scorer)
    text = render(scorer, version, sets, math.ceil(time.perf_counter() - started), args.max_impostors)
    if args.write:
        doc = args.write.read_text()
        pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
        if not pattern.search(doc):
            print(f"{args.write} has no {BEGIN} ... {END} section", file=sys.stderr)
            return 1
        args.write.write_text(pattern.sub(lambda _: text, doc))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
