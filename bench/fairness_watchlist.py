"""The watchlist test before and after, on the same people: the scoring's effect alone.

``regard evaluate``'s watchlist test splits the images a pipeline *acquired*, so a pipeline that
finds more faces (the detector fallback) searches a larger gallery with more probes, and its
count of innocent people matched is not comparable one for one with a run that found fewer. Here
both runs search the same gallery with the same probes: the held-apart images that MTCNN alone
acquires (every pipeline acquires those), split as ``regard evaluate`` splits them (same seed).

- **before**: MTCNN templates without the flip, raw distance, the celeba-only table of regard
  before 0.2 (``data/calibration-raw.json``);
- **deployed**: the same faces' flip-mean templates scored by the shipped normalizer and table.

Counts are innocent probes (people never enrolled) with any gallery entry at or above similarity
80, with Clopper-Pearson 95% intervals. Needs ``bench/fairness_templates.py`` first.

    .venv/bin/python bench/fairness_watchlist.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fairness_data import load
from regard.evaluation.identification import evaluate_identification
from regard.evaluation.metrics import clopper_pearson
from regard.evaluation.pairs import Grouping
from regard.scoring.calibrate import Scorer, default_scorer, raw_table

SETS = {"fairface_train": "race", "utkface": "age"}


def watchlist(emb: np.ndarray, subjects: np.ndarray, groups: np.ndarray, scorer: Scorer) -> dict[str, int]:
    codes = np.unique(subjects, return_inverse=True)[1]
    half = scorer.half_offsets(emb) if scorer.normalized else None
    tau = scorer.score_for_similarity(80)
    ident = evaluate_identification(
        emb,
        codes,
        [Grouping.of("group", [str(g) for g in groups])],
        {"80": tau},
        seed=0,
        names=[str(i) for i in range(len(emb))],
        similarity=scorer.similarity,
        half_offsets=half,
    )
    w = ident["operating_points"]["80"]["watchlist"]
    out = {"all": (w["matched"], w["innocent_probes"])}
    out.update({k: (v["matched"], v["innocent_probes"]) for k, v in w["by_group"]["group"].items()})
    return out


def cell(c: tuple[int, int]) -> str:
    lo, hi = clopper_pearson(*c)
    return f"{c[0]}/{c[1]} ({100 * c[0] / max(c[1], 1):.0f}%, {100 * lo:.0f}-{100 * hi:.0f}%)"


def main() -> None:
    before_scorer = Scorer(raw_table())
    deployed_scorer = default_scorer()
    for name, column in SETS.items():
        plain = load(name, cascade=("mtcnn",))
        deployed = load(name)
        both = plain.test & plain.acquired  # MTCNN alone found a face: so does every pipeline
        groups = plain.labels[column][both]
        before = watchlist(plain.plain[both], plain.subjects[both], groups, before_scorer)
        after = watchlist(deployed.templates[both], deployed.subjects[both], groups, deployed_scorer)
        print(f"\n{name} (held apart, {int(both.sum())} images MTCNN alone acquires), similarity 80:\n")
        print(f"| {column} | before | deployed |\n|---|---:|---:|")
        for g in before:
            print(f"| {g} | {cell(before[g])} | {cell(after[g])} |")


if __name__ == "__main__":
    main()
