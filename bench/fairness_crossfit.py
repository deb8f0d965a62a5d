"""A calibration table fitted in-sample against one fitted on out-of-fold scores (fitting folds only).

The shipped table is fitted on the normalizer's scores of the same photos the normalizer was
fitted on; on FairFace's crops that reads 1.5 times better than photos it never saw
(``bench/fairness_insample.py``). This measures the direct remedy on the sweep's folds
(``bench/fairness_sweep.py``; the held-apart parts are never read). Within each fold's fitting
half the normalizer is fitted on the whole half (as shipped), and two tables are built:

- in-sample: the normalizer's scores of the half's pairs (as shipped);
- cross-fitted: the half split again by subject; each inner half's pairs scored by the
  normalizer fitted on the other inner half;
- out-of-fold: the half split into ``--folds`` parts by subject; each image's half offset comes
  from the normalizer fitted on the other parts (most of the half, so its clusters are nearly as
  large as the full normalizer's), and every pair of the half is scored with those offsets, so
  neither image's offset was fitted on the pair.

Both are measured on the sweep's validation halves with the sweep's criteria (1.0 = issue 12's
limit), with each set's overall FMR as a multiple of nominal. Needs
``bench/fairness_templates.py`` first.

    .venv/bin/python bench/fairness_crossfit.py [--seeds 0] [--folds 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fairness_data import subject_parts
from fairness_sweep import Folds, add, measure, rate
from regard.scoring.calibrate import CalibrationTable, Part, Scorer, _scored_pairs, build_table, fit_scoring
from regard.scoring.normalize import FitOptions, ScoreNormalizer, fit_normalizer


def inner_parts(data: Folds, side: bool, inner: dict[str, np.ndarray], which: bool) -> list[Part]:
    """One inner half (``inner == which``, whole subjects) of the fold's fitting half."""
    out = []
    for name, st in data.sets.items():
        sel = data.fit_part[name] & (data.folds[name] == side) & st.acquired & (inner[name] == which)
        if sel.any():  # a small set may have no image in an inner half
            out.append(Part(name, st.templates[sel], st.subjects[sel]))
    return out


Pairs = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


def crossfitted_table(
    data: Folds, side: bool, inner: dict[str, np.ndarray], opts: FitOptions, full: ScoreNormalizer
) -> CalibrationTable:
    """The table of ``full``'s normalizer built from out-of-fold scores of the fold's fitting half."""
    norms = {
        w: fit_scoring(inner_parts(data, side, inner, w), model=data.model, version="x", options=opts)[0]
        for w in (True, False)
    }
    pairs: Pairs = {}
    for which in (True, False):
        other = norms[not which]
        assert other is not None
        for part in inner_parts(data, side, inner, which):
            pairs[f"{part.name}/{which}"] = scored(part, other.half_offsets(part.templates))
    return table_of(pairs, full)


def out_of_fold_halves(data: Folds, side: bool, opts: FitOptions, folds: int) -> dict[str, np.ndarray]:
    """Each set's half offsets in the fold's fitting half, every image's from a normalizer fitted
    without its part (``folds`` parts by subject)."""
    emb, subj, dom = data.pooled(side)
    part = subject_parts(subj, f"oof{opts.seed}", folds)
    half = np.zeros(len(emb))
    for j in range(folds):
        rest = part != j
        norm = fit_normalizer(emb[rest], subj[rest], dom[rest], model=data.model, version="x", options=opts)
        half[~rest] = norm.half_offsets(emb[~rest])
    return {name: half[dom == name] for name in data.sets}


def scored(part: Part, half: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Genuine scores, impostor scores and impostor weights of one part under ``half`` offsets."""
    emb = np.asarray(part.templates, np.float32)
    return _scored_pairs(emb, np.asarray(part.subjects).astype(str), half)


def table_of(pairs: Pairs, full: ScoreNormalizer) -> CalibrationTable:
    """A table of ``full``'s scores built from these pairs (the pooled weights, as fitting builds it)."""
    g, i, w = (np.concatenate([v[k] for v in pairs.values()]) for k in range(3))
    table = build_table(
        g, i, model=full.model, dataset="x", version="x", impostor_weights=w, normalizer=full.sha256
    )
    return CalibrationTable.from_dict(table)


def by_set(pairs: Pairs, tau: float) -> str:
    """Each set's share of the pooled FMR at score ``tau`` (the table's weights), and its pairs there."""
    total = sum(float(v[2].sum()) for v in pairs.values())
    return ", ".join(
        f"{name} {float(w[i <= tau].sum()) / total:.1e} ({int((i <= tau).sum())} pairs)"
        for name, (_, i, w) in pairs.items()
    )


def report(data: Folds, label: str, scorers: list[Scorer]) -> None:
    worst, crit, tar = data.score(scorers)
    print(f"{label:20s} worst {worst:.2f} ({max(crit, key=lambda c: crit[c])})  celeba TAR@1e-3 {tar:.4f}")
    print("   " + ", ".join(f"{k} {v:.2f}" for k, v in crit.items()))
    total: dict[str, Any] = {}
    for side, scorer in zip((True, False), scorers, strict=True):
        for k, v in measure(scorer, data.sets, data.validation(side)).items():
            total[k] = add(total.get(k, {}), v)
    nominal = {"80": 1e-4, "60": 1e-3}
    print(
        "   overall FMR / nominal: "
        + ", ".join(f"{k} {rate(v['all']) / nominal[k[-2:]]:.2f}" for k, v in total.items())
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="0", help="comma-separated k-means seeds of the first clustering")
    ap.add_argument("--folds", type=int, default=10, help="parts of the out-of-fold offsets")
    args = ap.parse_args()
    data = Folds()
    for seed in (int(x) for x in args.seeds.split(",")):
        opts = FitOptions(seed=seed)  # the shipped setting: 200 clusters x 5, FMR 1e-3, 2 rounds
        inner = {name: st.fold(f"inner{seed}") for name, st in data.sets.items()}
        insample, crossfit, oof = [], [], []
        for side in (True, False):
            start = time.time()
            full, table, _ = fit_scoring(data.parts_of(side), model=data.model, version="x", options=opts)
            assert full is not None
            insample.append(Scorer(table, full))
            crossfit.append(Scorer(crossfitted_table(data, side, inner, opts, full), full))
            halves = out_of_fold_halves(data, side, opts, args.folds)
            pairs_in = {p.name: scored(p, full.half_offsets(p.templates)) for p in data.parts_of(side)}
            pairs_oof = {p.name: scored(p, halves[p.name]) for p in data.parts_of(side)}
            oof.append(Scorer(table_of(pairs_oof, full), full))
            print(
                f"seed {seed}, fold {int(side)} ({time.time() - start:.0f} s): score at similarity 80 "
                f"in-sample {insample[-1].score_for_similarity(80):.4f}, "
                f"cross-fitted {crossfit[-1].score_for_similarity(80):.4f}, "
                f"out-of-fold {oof[-1].score_for_similarity(80):.4f}",
                flush=True,
            )
            for sim in (80, 60):
                tau = insample[-1].score_for_similarity(sim)
                print(f"  pooled FMR by set at the in-sample table's similarity {sim} ({tau:.4f}):")
                print(f"    in-sample offsets:   {by_set(pairs_in, tau)}")
                print(f"    out-of-fold offsets: {by_set(pairs_oof, tau)}", flush=True)
        report(data, f"seed {seed}: in-sample table", insample)
        report(data, f"seed {seed}: cross-fitted table", crossfit)
        report(data, f"seed {seed}: out-of-fold table ({args.folds} parts)", oof)
    return 0


if __name__ == "__main__":
    sys.exit(main())
