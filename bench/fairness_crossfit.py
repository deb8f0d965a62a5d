"""A calibration table fitted in-sample against one fitted on out-of-fold scores (fitting folds only).

The shipped table is fitted on the normalizer's scores of the same photos the normalizer was
fitted on; on FairFace's crops that reads 1.5 times better than photos it never saw
(``bench/fairness_insample.py``). This measures the direct remedy on the sweep's folds
(``bench/fairness_sweep.py``; the held-apart parts are never read). Within each fold's fitting
half the normalizer is fitted on the whole half (as shipped), and two tables are built:

- in-sample: the normalizer's scores of the half's pairs (as shipped);
- cross-fitted: the half split again by subject; each inner half's pairs scored by the
  normalizer fitted on the other inner half.

Both are measured on the sweep's validation halves with the sweep's criteria (1.0 = issue 12's
limit), with each set's overall FMR as a multiple of nominal. Needs
``bench/fairness_templates.py`` first.

    .venv/bin/python bench/fairness_crossfit.py [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fairness_sweep import Folds, add, measure, rate
from regard.scoring.calibrate import CalibrationTable, Part, Scorer, _scored_pairs, build_table, fit_scoring
from regard.scoring.normalize import FitOptions, ScoreNormalizer


def inner_parts(data: Folds, side: bool, inner: dict[str, np.ndarray], which: bool) -> list[Part]:
    """One inner half (``inner == which``, whole subjects) of the fold's fitting half."""
    out = []
    for name, st in data.sets.items():
        sel = data.fit_part[name] & (data.folds[name] == side) & st.acquired & (inner[name] == which)
        if sel.any():  # a small set may have no image in an inner half
            out.append(Part(name, st.templates[sel], st.subjects[sel]))
    return out


def crossfitted_table(
    data: Folds, side: bool, inner: dict[str, np.ndarray], opts: FitOptions, full: ScoreNormalizer
) -> CalibrationTable:
    """The table of ``full``'s normalizer built from out-of-fold scores of the fold's fitting half."""
    norms = {
        w: fit_scoring(inner_parts(data, side, inner, w), model=data.model, version="x", options=opts)[0]
        for w in (True, False)
    }
    genuine, impostor, weights = [], [], []
    for which in (True, False):
        other = norms[not which]
        assert other is not None
        for part in inner_parts(data, side, inner, which):
            emb = np.asarray(part.templates, np.float32)
            g, i, w = _scored_pairs(emb, np.asarray(part.subjects).astype(str), other.half_offsets(emb))
            genuine.append(g)
            impostor.append(i)
            weights.append(w)
    table = build_table(
        np.concatenate(genuine),
        np.concatenate(impostor),
        model=data.model,
        dataset="cross-fitted",
        version="x",
        impostor_weights=np.concatenate(weights),
        normalizer=full.sha256,
    )
    return CalibrationTable.from_dict(table)


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
    ap.add_argument("--seed", type=int, default=0, help="k-means seed of the first clustering")
    args = ap.parse_args()
    opts = FitOptions(seed=args.seed)  # the shipped setting: 200 clusters x 5, FMR 1e-3, 2 rounds
    data = Folds()
    inner = {name: st.fold(f"inner{args.seed}") for name, st in data.sets.items()}
    insample, crossfit = [], []
    for side in (True, False):
        start = time.time()
        full, table, _ = fit_scoring(data.parts_of(side), model=data.model, version="x", options=opts)
        assert full is not None
        insample.append(Scorer(table, full))
        crossfit.append(Scorer(crossfitted_table(data, side, inner, opts, full), full))
        here, there = insample[-1].score_for_similarity(80), crossfit[-1].score_for_similarity(80)
        print(
            f"fold {int(side)} ({time.time() - start:.0f} s): score at similarity 80 "
            f"in-sample {here:.4f}, cross-fitted {there:.4f}",
            flush=True,
        )
    report(data, "in-sample table", insample)
    report(data, "cross-fitted table", crossfit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
