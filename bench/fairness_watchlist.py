"""The watchlist test before and after, on the same people: the scoring's effect alone.

``regard evaluate``'s watchlist test splits the images a pipeline *acquired*, so a pipeline that
finds more faces (the detector fallback) searches a larger gallery with more probes, and its
count of innocent people matched is not comparable one for one with a run that found fewer. Here
both runs search the same gallery with the same probes: the held-apart images that MTCNN alone
acquires (every pipeline acquires those), split as ``regard evaluate`` splits them (same seed).

- **before**: regard before 0.2: MTCNN templates without the flip, aligned on the bare picture
  (0.2 aligns a face whose box crosses the frame on the picture extended with its mean colour;
  ``regard evaluate`` run with the flip and the cascade off still does), raw distance, the
  celeba-only table (``data/calibration-raw.json``);
- **deployed**: the same faces' flip-mean templates scored by the shipped normalizer and table.

Counts are innocent probes (people never enrolled) with any gallery entry at or above similarity
80, with Clopper-Pearson 95% intervals. Since the probes are the same people, the last column
compares the two runs pair by pair (exact McNemar test): probes matched only before, only as
deployed, and the two-sided p-value that the difference between those two counts is chance.
Needs ``bench/fairness_templates.py`` first.

    .venv/bin/python bench/fairness_watchlist.py [--seeds 20]

With ``--seeds N`` it also repeats the paired comparison on the splits of seeds 0 to N-1 and
says, per group, in how many the deployed scoring matched fewer of the same innocent probes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy.stats import binomtest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fairness_data import load
from regard.evaluation.identification import evaluate_identification, split
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
        names=[str(s) for s in subjects],  # the paths: each image its own person
        subject_names=[str(s) for s in subjects],
        similarity=scorer.similarity,
        half_offsets=half,
    )
    w = ident["operating_points"]["80"]["watchlist"]
    out = {"all": (w["matched"], w["innocent_probes"])}
    out.update({k: (v["matched"], v["innocent_probes"]) for k, v in w["by_group"]["group"].items()})
    return out


def matched_probes(emb: np.ndarray, subjects: np.ndarray, scorer: Scorer, seed: int = 0) -> np.ndarray:
    """Innocent probe -> matched at similarity 80, for the split ``watchlist`` uses (its indices)."""
    codes = np.unique(subjects, return_inverse=True)[1]
    names = [str(s) for s in subjects]  # each image its own person (and its path)
    sp = split(codes, seed, subject_names=names, image_names=names)
    gallery, probes = emb[sp.gallery].astype(np.float64), emb[sp.nonmated].astype(np.float64)
    d = np.sqrt(
        np.maximum((probes**2).sum(1)[:, None] + (gallery**2).sum(1)[None, :] - 2 * probes @ gallery.T, 0)
    )
    half_g = scorer.half_offsets(emb[sp.gallery]) if scorer.normalized else np.zeros(len(gallery))
    half_p = scorer.half_offsets(emb[sp.nonmated]) if scorer.normalized else np.zeros(len(probes))
    hit: np.ndarray = ((d - half_p[:, None] - half_g[None, :]) <= scorer.score_for_similarity(80)).any(axis=1)
    return np.stack([sp.nonmated, hit], axis=1)


def mcnemar(before: np.ndarray, after: np.ndarray) -> str:
    only_before, only_after = int((before & ~after).sum()), int((after & ~before).sum())
    p = binomtest(only_before, only_before + only_after, 0.5).pvalue if only_before + only_after else 1.0
    return f"{only_before} / {only_after}, p = {p:.2g}"


def cell(c: tuple[int, int]) -> str:
    lo, hi = clopper_pearson(*c)
    return f"{c[0]}/{c[1]} ({100 * c[0] / max(c[1], 1):.0f}%, {100 * lo:.0f}-{100 * hi:.0f}%)"


def over_seeds(
    before: tuple[np.ndarray, np.ndarray, Scorer],
    after: tuple[np.ndarray, np.ndarray, Scorer],
    groups: np.ndarray,
    seeds: int,
) -> None:
    """Per group, over ``seeds`` splits: how often the deployed scoring matched fewer of the same
    innocent probes than before, and the spread of the two counts."""
    tally: dict[str, list[tuple[int, int]]] = {}
    for seed in range(seeds):
        hb, ha = matched_probes(*before, seed=seed), matched_probes(*after, seed=seed)
        g = groups[hb[:, 0]]
        for name in ["all", *sorted(set(g.tolist()))]:
            sel = np.ones(len(g), bool) if name == "all" else g == name
            tally.setdefault(name, []).append((int(hb[sel, 1].sum()), int(ha[sel, 1].sum())))
    print(f"\nOver seeds 0-{seeds - 1} (each a different split into gallery and innocent probes):\n")
    print("| group | deployed fewer / same / more | before: median (range) | deployed: median (range) |")
    print("|---|---|---|---|")
    for name, counts in tally.items():
        b, a = np.array([c[0] for c in counts]), np.array([c[1] for c in counts])
        verdict = f"{int((a < b).sum())} / {int((a == b).sum())} / {int((a > b).sum())}"
        spread = [f"{np.median(x):.0f} ({x.min()}-{x.max()})" for x in (b, a)]
        print(f"| {name} | {verdict} | {spread[0]} | {spread[1]} |")


def main() -> None:
    seeds = int(sys.argv[sys.argv.index("--seeds") + 1]) if "--seeds" in sys.argv else 0
    before_scorer = Scorer(raw_table())
    deployed_scorer = default_scorer()
    for name, column in SETS.items():
        plain = load(name, cascade=("mtcnn",))
        deployed = load(name)
        if plain.before is None:
            raise SystemExit(
                "the template cache predates regard-before-0.2 templates; rerun bench/fairness_templates.py"
            )
        both = plain.test & plain.acquired  # MTCNN alone found a face: so does every pipeline
        groups = plain.labels[column][both]
        old = plain.before[both]
        before = watchlist(old, plain.subjects[both], groups, before_scorer)
        after = watchlist(deployed.templates[both], deployed.subjects[both], groups, deployed_scorer)
        hit_before = matched_probes(old, plain.subjects[both], before_scorer)
        hit_after = matched_probes(deployed.templates[both], deployed.subjects[both], deployed_scorer)
        assert (hit_before[:, 0] == hit_after[:, 0]).all()  # the same probes
        probe_group = groups[hit_before[:, 0]]
        print(f"\n{name} (held apart, {int(both.sum())} images MTCNN alone acquires), similarity 80:\n")
        print(
            f"| {column} | before | deployed | matched only before / only deployed (McNemar) |\n"
            "|---|---:|---:|---|"
        )
        for g in before:
            sel = np.ones(len(probe_group), bool) if g == "all" else probe_group == g
            b, a = hit_before[sel, 1].astype(bool), hit_after[sel, 1].astype(bool)
            # The same counts as regard's own watchlist test, from the same split.
            assert (int(b.sum()), int(sel.sum())) == before[g] and (int(a.sum()), int(sel.sum())) == after[
                g
            ], g
            print(f"| {g} | {cell(before[g])} | {cell(after[g])} | {mcnemar(b, a)} |")
        if seeds:
            over_seeds(
                (old, plain.subjects[both], before_scorer),
                (deployed.templates[both], deployed.subjects[both], deployed_scorer),
                groups,
                seeds,
            )


if __name__ == "__main__":
    main()
