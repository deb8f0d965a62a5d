"""Genuine and impostor scores of a labelled set, computed in vectorised blocks.

All image pairs of a set are compared (or the pairs of a pairs file). Genuine pairs are few and
kept one by one. Impostor pairs can number tens of millions, so they are summarised: a fine
histogram of distances per pair of groups (for curves, distributions and the cross-group
matrix) and the exact list of every impostor pair at or below a cap distance (for exact
thresholds, counts and the subject bootstrap at every operating point under the cap).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

#: Histogram bins over distances 0..2 (templates are near unit length, so distances stay below 2).
BIN_EDGES = np.linspace(0.0, 2.0, 4001)
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

    genuine_d: np.ndarray
    genuine_ij: np.ndarray  # (g, 2)
    n_impostor: int
    tail_d: np.ndarray  # every impostor distance <= cap
    tail_ij: np.ndarray  # (t, 2)
    cap: float
    hist_all: np.ndarray  # (NBINS,) impostor counts
    hist_by: dict[str, np.ndarray] = field(default_factory=dict)  # spec -> (G, G, NBINS), a <= b

    def impostor_totals(self, spec: str) -> np.ndarray:
        """(G, G) impostor pair counts between groups (upper triangle and diagonal)."""
        return np.asarray(self.hist_by[spec].sum(axis=2))


def _bins(d: np.ndarray) -> np.ndarray:
    return np.clip(np.searchsorted(BIN_EDGES, d, side="left") - 1, 0, NBINS - 1)


def _pair_hist(codes_a: np.ndarray, codes_b: np.ndarray, bins: np.ndarray, n_groups: int) -> np.ndarray:
    lo = np.minimum(codes_a, codes_b)
    hi = np.maximum(codes_a, codes_b)
    flat = (lo * n_groups + hi) * NBINS + bins
    counts = np.bincount(flat, minlength=n_groups * n_groups * NBINS)
    return counts.reshape(n_groups, n_groups, NBINS)


def _blocks(emb: np.ndarray, block: int) -> Iterator[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]]:
    """Yield (start, stop, i, j, d) for the upper-triangle pairs of each row block."""
    n = emb.shape[0]
    sq = np.einsum("ij,ij->i", emb, emb)
    for start in range(0, n, block):
        stop = min(n, start + block)
        d2 = sq[start:stop, None] + sq[None, start:] - 2.0 * (emb[start:stop] @ emb[start:].T)
        rows = np.arange(start, stop)[:, None]
        cols = np.arange(start, n)[None, :]
        ii, jj = np.nonzero(cols > rows)
        d = np.sqrt(np.maximum(d2[ii, jj], 0.0))
        yield start, stop, ii + start, jj + start, d


def score_all_pairs(
    emb: np.ndarray,
    subjects: np.ndarray,
    groupings: Sequence[Grouping],
    *,
    max_target: float,
    fixed_thresholds: Sequence[float] = (),
    block: int = BLOCK,
) -> PairScores:
    """Score every pair of rows of ``emb`` (acquired images); ``subjects`` are integer codes.

    Two passes over the blocks: the first builds the impostor histogram, from which the cap is
    chosen so that the exact lower tail covers ``max_target`` and every ``fixed_thresholds``;
    the second keeps the tail pairs and the per-group histograms.
    """
    emb = np.asarray(emb, dtype=np.float64)
    subj = np.asarray(subjects)
    hist_all = np.zeros(NBINS, dtype=np.int64)
    gen_d: list[np.ndarray] = []
    gen_ij: list[np.ndarray] = []
    for _s, _e, i, j, d in _blocks(emb, block):
        same = subj[i] == subj[j]
        gen_d.append(d[same])
        gen_ij.append(np.stack([i[same], j[same]], axis=1))
        hist_all += np.bincount(_bins(d[~same]), minlength=NBINS)
    n_imp = int(hist_all.sum())
    cap = _cap(hist_all, n_imp, max_target, fixed_thresholds)
    tail_d: list[np.ndarray] = []
    tail_ij: list[np.ndarray] = []
    hist_by = {g.spec: np.zeros((len(g.names), len(g.names), NBINS), dtype=np.int64) for g in groupings}
    for _s, _e, i, j, d in _blocks(emb, block):
        imp = subj[i] != subj[j]
        i, j, d = i[imp], j[imp], d[imp]
        keep = d <= cap
        tail_d.append(d[keep])
        tail_ij.append(np.stack([i[keep], j[keep]], axis=1))
        b = _bins(d)
        for g in groupings:
            hist_by[g.spec] += _pair_hist(g.codes[i], g.codes[j], b, len(g.names))
    return PairScores(
        _cat(gen_d),
        _cat_ij(gen_ij),
        n_imp,
        _cat(tail_d),
        _cat_ij(tail_ij),
        cap,
        hist_all,
        hist_by,
    )


def score_listed_pairs(
    emb: np.ndarray,
    pairs: Sequence[tuple[int, int, bool]],
    groupings: Sequence[Grouping],
) -> PairScores:
    """Score an explicit pair list (indices into the acquired images); every impostor is in the tail."""
    emb = np.asarray(emb, dtype=np.float64)
    if pairs:
        arr = np.array([(a, b) for a, b, _ in pairs], dtype=np.int64)
        same = np.array([s for _, _, s in pairs], dtype=bool)
        d = np.linalg.norm(emb[arr[:, 0]] - emb[arr[:, 1]], axis=1)
    else:
        arr, same, d = np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=bool), np.zeros(0)
    imp_d, imp_ij = d[~same], arr[~same]
    b = _bins(imp_d)
    hist_by = {
        g.spec: _pair_hist(g.codes[imp_ij[:, 0]], g.codes[imp_ij[:, 1]], b, len(g.names)) for g in groupings
    }
    return PairScores(
        d[same],
        arr[same],
        int(imp_d.size),
        imp_d,
        imp_ij,
        float(imp_d.max()) if imp_d.size else 0.0,
        np.bincount(b, minlength=NBINS).astype(np.int64),
        hist_by,
    )


def _cap(hist: np.ndarray, n: int, max_target: float, fixed: Sequence[float]) -> float:
    if n == 0:
        return 0.0
    need = min(n, int(np.floor(max_target * n + 1e-9)) + 1)
    cum = np.cumsum(hist)
    idx = int(np.searchsorted(cum, need, side="left"))
    # One more bin so the next distinct distance above the k-th is in the tail too.
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
