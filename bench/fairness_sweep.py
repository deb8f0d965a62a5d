"""Choose the fair score normalizer's details by measurement, never on the held-apart data.

Every candidate setting (clusters, target FMR of the local thresholds, iterations, clusterings
averaged, pool) is
fitted on one half of the *fitting* part of the pooled sets and measured on the other half, and
the other way round (2-fold cross-validation; the halves are whole subjects). The held-apart
parts (``regard.scoring.calibrate.is_held_apart``) are never read here. Each setting is scored by its
worst criterion, each criterion scaled so that 1.0 is the acceptance limit of issue 12:

- FairFace: FMR by race at similarity 80 and 60, max/min <= 4 and max/geomean <= 2;
- overall FMR within 2x of nominal (1e-4 at 80, 1e-3 at 60) on FairFace, UTKFace and celeba_dev;
- UTKFace: FMR of ages 0-12 within 5x of ages 20-39 at similarity 80;

- celeba_dev: TAR at FMR 1e-3 (its own impostors' threshold; no face = rejection) not below
  today's pipeline's (no flip, raw distances) on the same folds; 1.0 at equality, +1 per 2 points lost;

and the setting with the smallest worst criterion wins. Worst criteria within ``TIE`` (0.05) of
the smallest count as ties: neighbouring strengths of one setting swing it by 0.3 or more (celeba_dev's
rates at similarity 80 rest on about ten impostor pairs per fold), so smaller differences are
noise. Ties go to fewer clusters (more images behind each offset, a cheaper search), then fewer
iterations, then the stronger shift. The offsets' strength is swept on each fitted normalizer (the table is
refitted); every candidate's offsets are then limited as fitting limits them
(``FitOptions.offset_quantile``). Needs ``bench/fairness_templates.py`` first.

    .venv/bin/python bench/fairness_sweep.py [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fairness_data import Set, load
from regard.face.embed import resnet_identity
from regard.scoring.calibrate import Part, Scorer, fit_scoring
from regard.scoring.normalize import FitOptions, limit_offsets

#: Worst criteria closer than this count as ties (see the module's docstring).
TIE = 0.05
POOL = ("celeba_dev", "fairface_train", "utkface", "orl", "yale", "bbt", "deepface", "fr_examples")


def score_matrix(scorer: Scorer | None, emb: np.ndarray) -> np.ndarray:
    emb = emb.astype(np.float64)
    sq = (emb * emb).sum(1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * emb @ emb.T, 0.0))
    if scorer is not None and scorer.normalizer is not None:
        h = scorer.half_offsets(emb)
        d = d - h[:, None] - h[None, :]
    return d


def fmr_by_group(
    s: np.ndarray, subj: np.ndarray, groups: np.ndarray | None, tau: float
) -> dict[str, tuple[int, int]]:
    """(false matches, impostor pairs) overall and per group (both images in the group)."""
    iu = np.triu_indices(len(s), 1)
    imp = subj[iu[0]] != subj[iu[1]]
    hit = s[iu] <= tau
    out = {"all": (int((hit & imp).sum()), int(imp.sum()))}
    if groups is not None:
        for g in np.unique(groups):
            both = (groups[iu[0]] == g) & (groups[iu[1]] == g) & imp
            out[str(g)] = (int((hit & both).sum()), int(both.sum()))
    return out


def add(a: dict[str, tuple[int, int]], b: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    return {k: (a.get(k, (0, 0))[0] + v[0], a.get(k, (0, 0))[1] + v[1]) for k, v in b.items()}


def rate(c: tuple[int, int]) -> float:
    return (c[0] if c[0] else 0.5) / max(c[1], 1)


def measure(
    scorer: Scorer, sets: dict[str, Set], select: dict[str, np.ndarray]
) -> dict[str, dict[str, tuple[int, int]]]:
    """Counts at similarity 80 and 60 on the selected images of FairFace, UTKFace and celeba_dev."""
    out: dict[str, dict[str, tuple[int, int]]] = {}
    taus = {80: scorer.score_for_similarity(80), 60: scorer.score_for_similarity(60)}
    for name, col in (("fairface_train", "race"), ("utkface", "age"), ("celeba_dev", None)):
        st = sets[name]
        sel = select[name] & st.acquired
        s = score_matrix(scorer, st.templates[sel])
        groups = st.labels[col][sel] if col else None
        for sim, tau in taus.items():
            out[f"{name}@{sim}"] = fmr_by_group(s, st.subjects[sel], groups, tau)
    return out


def tar_at(scorer: Scorer | None, st: Set, select: np.ndarray, fmr: float = 1e-3) -> tuple[float, int, int]:
    """TAR at the threshold where this data's own FMR is ``fmr``; unacquired images count as rejections."""
    sel = select & st.acquired
    s = score_matrix(scorer, st.templates[sel])
    subj = st.subjects[sel]
    iu = np.triu_indices(len(s), 1)
    same = subj[iu[0]] == subj[iu[1]]
    imp = np.sort(s[iu][~same])
    tau = imp[max(0, math.floor(fmr * len(imp)) - 1)]
    _, counts = np.unique(st.subjects[select], return_counts=True)
    total = int(sum(c * (c - 1) // 2 for c in counts))
    accepted = int((s[iu][same] <= tau).sum())
    return accepted / total, accepted, total


def criteria(counts: dict[str, dict[str, tuple[int, int]]]) -> dict[str, float]:
    """Each acceptance criterion scaled so that 1.0 sits on its limit (log scale)."""
    c: dict[str, float] = {}
    for sim, nominal in ((80, 1e-4), (60, 1e-3)):
        ff = counts[f"fairface_train@{sim}"]
        races = [rate(v) for k, v in ff.items() if k != "all"]
        geo = math.exp(np.mean(np.log(races)))
        c[f"race max/min @{sim}"] = math.log(max(races) / min(races)) / math.log(4)
        c[f"race max/geomean @{sim}"] = math.log(max(races) / geo) / math.log(2)
        for name in ("fairface_train", "utkface", "celeba_dev"):
            r = rate(counts[f"{name}@{sim}"]["all"]) / nominal
            c[f"{name} FMR/nominal @{sim}"] = abs(math.log(r)) / math.log(2)
    utk = counts["utkface@80"]
    c["utk 0-12 / 20-39 @80"] = max(0.0, math.log(rate(utk["0-12"]) / rate(utk["20-39"])) / math.log(5))
    return c


class Folds:
    """The sweep's 2-fold cross-validation on the fitting parts of the pool (held-apart parts unread)."""

    def __init__(self) -> None:
        self.model = resnet_identity().key
        self.sets = {n: load(n) for n in POOL}
        self.folds = {n: st.fold("sweep") for n, st in self.sets.items()}
        self.fit_part = {n: ~st.test for n, st in self.sets.items()}
        # Today's pipeline (regard before 0.2: MTCNN alone, no flip, aligned on the bare picture,
        # raw distances) sets the TAR bar on the same folds.
        mtcnn_only = load("celeba_dev", cascade=("mtcnn",))
        if mtcnn_only.before is None:
            raise SystemExit(
                "the template cache has no regard-before-0.2 templates; rerun bench/fairness_templates.py"
            )
        plain = Set(
            mtcnn_only.name,
            mtcnn_only.before,
            mtcnn_only.before,
            mtcnn_only.subjects,
            {},
            mtcnn_only.test,
            mtcnn_only.step,
        )
        today = [tar_at(None, plain, self.validation(side)["celeba_dev"])[0] for side in (True, False)]
        self.tar_bar = float(np.mean(today))

    def parts_of(self, side: bool) -> list[Part]:
        parts = []
        for n, st in self.sets.items():
            sel = self.fit_part[n] & (self.folds[n] == side) & st.acquired
            parts.append(Part(n, st.templates[sel], st.subjects[sel]))
        return parts

    def pooled(self, side: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The fold's fitting half as one pool: templates, subjects and each one's dataset."""
        parts = self.parts_of(side)
        emb = np.concatenate([np.asarray(p.templates, np.float32) for p in parts])
        subj = np.concatenate([np.asarray(p.subjects).astype(str) for p in parts])
        dom = np.concatenate([np.full(len(p.templates), p.name) for p in parts])
        return emb, subj, dom

    def validation(self, side: bool) -> dict[str, np.ndarray]:
        return {n: self.fit_part[n] & (self.folds[n] != side) for n in self.sets}

    def fit(self, opts: FitOptions) -> list[Any]:
        """One normalizer per fold, fitted at full strength without the offset limit (``refit``
        applies both, so a swept strength is absolute)."""
        opts = replace(opts, strength=1.0, offset_quantile=1.0)
        return [
            fit_scoring(self.parts_of(side), model=self.model, version="sweep", options=opts)[0]
            for side in (True, False)
        ]

    def refit(self, norms: list[Any], strength: float) -> list[Scorer]:
        """The fold normalizers scaled to ``strength`` and limited as fitting limits them, each
        with a table refitted on its scores."""
        scorers = []
        for side, norm in zip((True, False), norms, strict=True):
            emb = np.concatenate([p.templates for p in self.parts_of(side)])
            limited = limit_offsets(norm.offsets * strength, norm.clusters(emb), FitOptions.offset_quantile)
            scaled = replace(norm, offsets=limited)
            _, table, _ = fit_scoring(
                self.parts_of(side), model=self.model, version="sweep", normalizer=scaled
            )
            scorers.append(Scorer(table, scaled))
        return scorers

    def raw(self) -> list[Scorer]:
        return [
            Scorer(fit_scoring(self.parts_of(side), model=self.model, version="sweep", normalize=False)[1])
            for side in (True, False)
        ]

    def score(self, scorers: list[Scorer]) -> tuple[float, dict[str, float], float]:
        """Worst criterion, every criterion and celeba_dev TAR@1e-3 of one scorer per fold."""
        total: dict[str, dict[str, tuple[int, int]]] = {}
        tars = []
        for side, scorer in zip((True, False), scorers, strict=True):
            for k, v in measure(scorer, self.sets, self.validation(side)).items():
                total[k] = add(total.get(k, {}), v)
            tars.append(tar_at(scorer, self.sets["celeba_dev"], self.validation(side)["celeba_dev"])[0])
        crit = criteria(total)
        tar = float(np.mean(tars))
        crit["celeba TAR@1e-3 vs today"] = 1.0 + (self.tar_bar - tar) / 0.02
        return max(crit.values()), crit, tar


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small grid (smoke run)")
    ap.add_argument("--clusters", help="comma-separated cluster counts instead of the grid's (to extend it)")
    ap.add_argument("--targets", help="comma-separated local-threshold FMRs instead of the grid's")
    ap.add_argument("--iterations", help="comma-separated iteration counts instead of the grid's")
    ap.add_argument("--strengths", help="comma-separated strengths instead of the grid's")
    ap.add_argument("--members", help="comma-separated numbers of clusterings averaged instead of the grid's")
    args = ap.parse_args()
    data = Folds()
    grid = {
        "clusters": [int(k) for k in args.clusters.split(",")]
        if args.clusters
        else [50]
        if args.quick
        else [50, 100, 200, 300, 400, 500, 600],
        "target_fmr": [float(t) for t in args.targets.split(",")]
        if args.targets
        else [1e-3]
        if args.quick
        else [1e-3, 1e-4],
        "iterations": [int(i) for i in args.iterations.split(",")]
        if args.iterations
        else [2]
        if args.quick
        else [2, 3],
        "members": [int(m) for m in args.members.split(",")] if args.members else [1, 5],
    }
    strengths = (
        [float(x) for x in args.strengths.split(",")]
        if args.strengths
        else [0.8, 1.0]
        if args.quick
        else [0.7, 0.85, 0.9, 0.95, 1.0]
    )
    print(
        f"today's pipeline (MTCNN alone, no flip, raw distances): TAR@1e-3 {data.tar_bar:.4f} "
        "on the validation folds"
    )

    rows: list[Any] = []
    fitted: dict[tuple[int, float, int, int], list[Any]] = {}

    def record(label: str, key: tuple[float, ...], scorers: list[Scorer]) -> None:
        worst, crit, tar = data.score(scorers)
        rows.append((worst, *key, label, crit, tar))
        print(
            f"{label:48s} worst {worst:5.2f} ({max(crit, key=lambda c: crit[c])})  TAR {tar:.4f}", flush=True
        )

    record("raw distance, pooled table", (0, 0, 0), data.raw())
    for clusters, target, iterations, members in itertools.product(*grid.values()):
        # Fitted at full strength: ``refit`` scales the offsets, so the strengths below are absolute
        # (with the default strength here they would multiply it). The offset limit applies after
        # scaling, as in fitting.
        full = data.fit(
            FitOptions(clusters=clusters, target_fmr=target, iterations=iterations, members=members)
        )
        fitted[(clusters, target, iterations, members)] = full
        for strength in strengths:
            label = f"k={clusters}x{members} fmr={target:g} it={iterations} strength={strength:g}"
            record(label, (clusters, iterations, -strength), data.refit(full, strength))
    # Stage 2, around the best of stage 1: finer strengths.
    rows.sort(key=lambda r: r[:4])
    best = next(r for r in rows if r[1])
    key = next(k for k in fitted if f"k={k[0]}x{k[3]} fmr={k[1]:g} it={k[2]} " in best[4])
    base = -best[3]
    done = {r[4] for r in rows}
    for strength in sorted({round(base + d, 2) for d in (-0.1, -0.05, 0.05, 0.1)} - {base}):
        label = f"k={key[0]}x{key[3]} fmr={key[1]:g} it={key[2]} strength={strength:g}"
        if label not in done:  # the grid's own strengths are already measured
            record(label, (key[0], key[2], -strength), data.refit(fitted[key], strength))
    rows.sort(key=lambda r: r[:4])
    smallest = rows[0][0]
    chosen = min((r for r in rows if r[0] <= smallest + TIE), key=lambda r: r[1:4])
    print(f"\nchosen (worst criterion within {TIE} of the smallest, then fewest clusters): {chosen[4]}")
    print("\nbest by worst criterion (1.0 = acceptance limit):")
    for row in rows[:6]:
        worst, label, crit, tar = row[0], row[4], row[5], row[6]
        print(
            f"  {label:48s} worst {worst:.2f}  TAR {tar:.4f}  "
            + ", ".join(f"{k} {v:.2f}" for k, v in crit.items())
        )


if __name__ == "__main__":
    main()
