"""Genuine and impostor scores of a labelled set, computed in vectorised blocks.

All image pairs of a set are compared (or the pairs of a pairs file). Genuine pairs are few and
kept one by one. Impostor pairs can number tens of millions, so they are summarised: a fine
histogram of scores per pair of groups (for curves, distributions and the cross-group
matrix) and the exact list of every impostor pair at or below a cap score (for exact
thresholds, counts and the subject bootstrap at every operating point under the cap).

A pair's *score* is the Euclidean distance between its templates minus the two templates'
half offsets, ``score = distance(a, b) - h(a) - h(b)`` (fair score normalization, see
``regard.scoring.calibrate.Scorer``); the half offsets come in as a plain array (zeros, or None, for
raw distances), so nothing here depends on how they were made.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from regard.scoring.calibrate import pair_blocks

#: Histogram bins (0.0005 wide) over scores -0.5..2.5. Templates are near unit length, so distances
#: stay within 0..2; the half offsets shift a score by a few tenths at most either way. A score
#: outside the range is counted in the first or last bin, so cumulative counts at every edge
#: above the first and below the last stay exact.
BIN_EDGES = np.linspace(-0.5, 2.5, 6001)
NBINS = BIN_EDGES.size - 1
BLOCK = 512


def natural_key(name: str) -> list[tuple[int, int | str]]:
    """Sort key that puts "3-9" before "10-19" (numbers compare as numbers)."""
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name) if part]


@dataclass(frozen=True)
class Grouping:
    """Group codes of the acquired images under one group spec (e.g. ``race``)."""

    spec: str
    names: list[str]
    codes: np.ndarray  # (m,) int, index into names

    @classmethod
    def of(cls, spec: str, values: Sequence[str]) -> Grouping:
        names = sorted(set(values), key=natural_key)
        lookup = {n: i for i, n in enumerate(names)}
        return cls(spec, names, np.array([lookup[v] for v in values], dtype=np.int64))


@dataclass
class PairScores:
    """Scores of every compared pair, indices into the acquired images."""

    genuine_s: np.ndarray  # score of every genuine pair
    genuine_ij: np.ndarray  # (g, 2)
    n_impostor: int
    tail_s: np.ndarray  # every impostor score <= cap
    tail_ij: np.ndarray  # (t, 2)
    cap: float
    hist_all: np.ndarray  # (NBINS,) impostor counts
    hist_by: dict[str, np.ndarray] = field(default_factory=dict)  # spec -> (G, G, NBINS), a <= b

    def impostor_totals(self, spec: str) -> np.ndarray:
        """(G, G) impostor pair counts between groups (upper triangle and diagonal)."""
        return np.asarray(self.hist_by[spec].sum(axis=2))


def _bins(s: np.ndarray) -> np.ndarray:
    """Bin ``k`` holds scores in ``(BIN_EDGES[k], BIN_EDGES[k + 1]]``; out-of-range scores are clipped."""
    return np.clip(np.searchsorted(BIN_EDGES, s, side="left") - 1, 0, NBINS - 1)


def _pair_hist(codes_a: np.ndarray, codes_b: np.ndarray, bins: np.ndarray, n_groups: int) -> np.ndarray:
    lo = np.minimum(codes_a, codes_b)
    hi = np.maximum(codes_a, codes_b)
    flat = (lo * n_groups + hi) * NBINS + bins
    counts = np.bincount(flat, minlength=n_groups * n_groups * NBINS)
    return counts.reshape(n_groups, n_groups, NBINS)


def _half(half_offsets: np.ndarray | None, n: int) -> np.ndarray:
    if half_offsets is None:
        return np.zeros(n, dtype=np.float64)
    h = np.asarray(half_offsets, dtype=np.float64).reshape(-1)
    if h.shape != (n,):
        raise ValueError(f"need one half offset per template: {h.size} for {n}")
    return h


def score_all_pairs(
    emb: np.ndarray,
    subjects: np.ndarray,
    groupings: Sequence[Grouping],
    *,
    max_target: float,
    fixed_thresholds: Sequence[float] = (),
    half_offsets: np.ndarray | None = None,
    block: int = BLOCK,
) -> PairScores:
    """Score every pair of rows of ``emb`` (acquired images); ``subjects`` are integer codes and
    ``half_offsets`` one per row (None: scores are raw distances).

    Two passes over the blocks: the first builds the impostor histogram, from which the cap is
    chosen so that the exact lower tail covers ``max_target`` and every ``fixed_thresholds``;
    the second keeps the tail pairs and the per-group histograms.
    """
    emb = np.asarray(emb, dtype=np.float64)
    half = _half(half_offsets, emb.shape[0])
    subj = np.asarray(subjects)
    hist_all = np.zeros(NBINS, dtype=np.int64)
    gen_s: list[np.ndarray] = []
    gen_ij: list[np.ndarray] = []
    for i, j, s in pair_blocks(emb, half, block):
        same = subj[i] == subj[j]
        gen_s.append(s[same])
        gen_ij.append(np.stack([i[same], j[same]], axis=1))
        hist_all += np.bincount(_bins(s[~same]), minlength=NBINS)
    n_imp = int(hist_all.sum())
    cap = _cap(hist_all, n_imp, max_target, fixed_thresholds)
    tail_s: list[np.ndarray] = []
    tail_ij: list[np.ndarray] = []
    hist_by = {g.spec: np.zeros((len(g.names), len(g.names), NBINS), dtype=np.int64) for g in groupings}
    for i, j, s in pair_blocks(emb, half, block):
        imp = subj[i] != subj[j]
        i, j, s = i[imp], j[imp], s[imp]
        keep = s <= cap
        tail_s.append(s[keep])
        tail_ij.append(np.stack([i[keep], j[keep]], axis=1))
        b = _bins(s)
        for g in groupings:
            hist_by[g.spec] += _pair_hist(g.codes[i], g.codes[j], b, len(g.names))
    return PairScores(
        _cat(gen_s),
        _cat_ij(gen_ij),
        n_imp,
        _cat(tail_s),
        _cat_ij(tail_ij),
        cap,
        hist_all,
        hist_by,
    )


def score_listed_pairs(
    emb: np.ndarray,
    pairs: Sequence[tuple[int, int, bool]],
    groupings: Sequence[Grouping],
    *,
    half_offsets: np.ndarray | None = None,
) -> PairScores:
    """Score an explicit pair list (indices into the acquired images); every impostor is in the tail.
    ``half_offsets``: one per row of ``emb`` (None: scores are raw distances)."""
    emb = np.asarray(emb, dtype=np.float64)
    half = _half(half_offsets, emb.shape[0])
    if pairs:
        arr = np.array([(a, b) for a, b, _ in pairs], dtype=np.int64)
        same = np.array([s for _, _, s in pairs], dtype=bool)
        score = np.linalg.norm(emb[arr[:, 0]] - emb[arr[:, 1]], axis=1) - half[arr[:, 0]] - half[arr[:, 1]]
    else:
        arr, same, score = np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=bool), np.zeros(0)
    imp_s, imp_ij = score[~same], arr[~same]
    b = _bins(imp_s)
    hist_by = {
        g.spec: _pair_hist(g.codes[imp_ij[:, 0]], g.codes[imp_ij[:, 1]], b, len(g.names)) for g in groupings
    }
    return PairScores(
        score[same],
        arr[same],
        int(imp_s.size),
        imp_s,
        imp_ij,
        float(imp_s.max()) if imp_s.size else 0.0,
        np.bincount(b, minlength=NBINS).astype(np.int64),
        hist_by,
    )


def _cap(hist: np.ndarray, n: int, max_target: float, fixed: Sequence[float]) -> float:
    if n == 0:
        return 0.0
    need = min(n, int(np.floor(max_target * n + 1e-9)) + 1)
    cum = np.cumsum(hist)
    idx = int(np.searchsorted(cum, need, side="left"))
    # One more bin so the next distinct score above the k-th is in the tail too.
    cap = float(BIN_EDGES[min(idx + 2, NBINS)])
    return max([cap, *[float(t) for t in fixed if np.isfinite(t)]])


def _cat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0)


def _cat_ij(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros((0, 2), dtype=np.int64)


def group_hist(scores: PairScores, spec: str, group: int) -> np.ndarray:
    """Impostor histogram of pairs with both images in ``group``."""
    return np.asarray(scores.hist_by[spec][group, group])


def cumulative_fmr(hist: np.ndarray) -> np.ndarray:
    """FMR at each bin's upper edge (share of impostors at or below it)."""
    total = hist.sum()
    return np.cumsum(hist) / total if total else np.zeros_like(hist, dtype=np.float64)
