"""Error-rate arithmetic for verification audits: thresholds, rates, intervals, differentials.

Scores are dissimilarities: the Euclidean distance between two templates, shifted by fair score
normalization (``regard.scoring.calibrate.Scorer``; the plain distance when scoring is raw). A pair
*matches* at threshold ``t`` when its score is at most ``t``. A normalized score can be slightly
negative. Following NIST's demographic-effects method (NISTIR 8280) one global
threshold is fixed for a target false-match rate over all impostor pairs, and every group's
rates are then measured at that same threshold.

Nothing here knows about images or models; every function takes plain arrays and is
deterministic for a fixed seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import sparse
from scipy.stats import beta

#: Fewest genuine pairs for which a false non-match rate is reported as estimated.
MIN_GENUINE_PAIRS = 30
#: A false-match rate near ``target`` needs at least this many expected false matches to be seen.
MIN_EXPECTED_ERRORS = 3.0

FloatArray = npt.NDArray[np.float64]


def threshold_at_fmr(impostor: np.ndarray, target: float) -> float:
    """The largest score threshold whose false-match rate on ``impostor`` is at most ``target``.

    With ``n`` impostor scores sorted ascending as ``d[0..n-1]``, at most ``k = floor(target*n)``
    pairs may match. The threshold is the midpoint between ``d[k-1]`` and ``d[k]``, or, when ``k``
    is 0 (no false match is allowed), below the closest impostor: half of ``d[0]``, or ``d[0] -
    0.001`` when that is lower (a score at or below 0.002, which normalization can make negative).
    Ties at the boundary push it down until at most ``k`` pairs are at or below it.
    """
    d = np.sort(np.asarray(impostor, dtype=np.float64).ravel())
    n = d.size
    if n == 0:
        raise ValueError("no impostor pairs to set a threshold on")
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target FMR must be in (0, 1], got {target}")
    k = math.floor(target * n + 1e-9)
    if k >= n:
        return float(d[-1])
    upper = d[k]
    below = d[d < upper]  # ties with d[k] cannot be admitted without admitting d[k]
    if below.size == 0:
        return _below(float(upper))
    return float((below[-1] + upper) / 2.0)


def _below(closest: float) -> float:
    """A threshold that admits no impostor when the closest one scores ``closest``."""
    return min(closest / 2.0, closest - 1e-3)


def threshold_from_smallest(smallest: np.ndarray, n_total: int, target: float) -> float:
    """:func:`threshold_at_fmr` over ``n_total`` impostors, given only the smallest of them.

    ``smallest`` must hold every impostor score up to and including the ``floor(target *
    n_total)``-th smallest one plus the next distinct value (callers keep a generous lower tail).
    """
    d = np.sort(np.asarray(smallest, dtype=np.float64).ravel())
    k = math.floor(target * n_total + 1e-9)
    if k >= d.size:
        raise ValueError("the kept lower tail is too short for this target")
    upper = d[k]
    below = d[d < upper]
    if below.size == 0:
        return _below(float(upper))
    return float((below[-1] + upper) / 2.0)


def clopper_pearson(errors: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval for ``errors`` out of ``trials`` (0..1 both ends when ``trials`` is 0)."""
    if trials <= 0:
        return (0.0, 1.0)
    alpha = 1.0 - confidence
    lo = 0.0 if errors <= 0 else float(beta.ppf(alpha / 2.0, errors, trials - errors + 1))
    hi = 1.0 if errors >= trials else float(beta.ppf(1.0 - alpha / 2.0, errors + 1, trials - errors))
    return (lo, hi)


@dataclass(frozen=True)
class Rate:
    """An error rate with its counts, its exact interval and, when computed, a bootstrap interval."""

    errors: int
    trials: int
    ci: tuple[float, float]
    estimable: bool
    bootstrap_ci: tuple[float, float] | None = None
    note: str = ""

    @property
    def value(self) -> float | None:
        return self.errors / self.trials if self.trials else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rate": self.value,
            "errors": self.errors,
            "trials": self.trials,
            "ci95_clopper_pearson": list(self.ci),
            "ci95_bootstrap_subjects": list(self.bootstrap_ci) if self.bootstrap_ci else None,
            "estimable": self.estimable,
            "note": self.note,
        }


def make_rate(errors: int, trials: int, *, min_trials: int) -> Rate:
    """A :class:`Rate`, marked not estimable when ``trials`` is below ``min_trials``."""
    ok = trials >= max(1, min_trials)
    note = "" if ok else f"too few pairs to estimate (n={trials}, need {min_trials})"
    return Rate(int(errors), int(trials), clopper_pearson(int(errors), int(trials)), ok, None, note)


def min_impostors_for(target: float) -> int:
    """Impostor pairs needed before an FMR near ``target`` is reported as estimated."""
    return math.ceil(MIN_EXPECTED_ERRORS / target)


def fmr_fnmr(genuine: np.ndarray, impostor: np.ndarray, threshold: float) -> tuple[Rate, Rate]:
    """False-match and false non-match counts of explicit score arrays at ``threshold``."""
    g = np.asarray(genuine, dtype=np.float64)
    i = np.asarray(impostor, dtype=np.float64)
    fm = int(np.count_nonzero(i <= threshold))
    fnm = int(np.count_nonzero(g > threshold))
    return make_rate(fm, i.size, min_trials=1), make_rate(fnm, g.size, min_trials=1)


# -- differentials -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Differential:
    """How far apart the groups' rates are: max/min and max/geometric mean."""

    max_min: float | None
    max_geomean: float | None
    worst: str | None
    best: str | None
    groups: list[str]
    zero_adjusted: list[str] = field(default_factory=list)
    note: str = ""
    #: Simultaneous 95% intervals of both ratios (:func:`differential_interval`), when computed.
    interval: Mapping[str, tuple[float, float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_over_min": self.max_min,
            "max_over_geomean": self.max_geomean,
            "ci95_simultaneous": {k: list(v) for k, v in self.interval.items()} if self.interval else None,
            "worst_group": self.worst,
            "best_group": self.best,
            "groups_compared": self.groups,
            "zero_count_groups": self.zero_adjusted,
            "note": self.note,
        }


def differential(rates: Mapping[str, Rate]) -> Differential:
    """Max/min and max/geomean over the estimable groups.

    A group with zero errors would make max/min infinite and the geometric mean zero. Its rate
    is replaced, for the ratios only, by half an error over its trials (``0.5 / n``: the
    usual continuity correction), and the group is listed in ``zero_adjusted``. The worst and
    best group are ranked on the same adjusted rates. With fewer than two estimable groups the
    ratios are ``None``.
    """
    usable = {g: r for g, r in rates.items() if r.estimable and r.trials > 0}
    if len(usable) < 2:
        return Differential(None, None, None, None, sorted(usable), [], "fewer than two estimable groups")
    adjusted: dict[str, float] = {}
    zeros: list[str] = []
    for g, r in usable.items():
        if r.errors == 0:
            adjusted[g] = 0.5 / r.trials
            zeros.append(g)
        else:
            adjusted[g] = r.errors / r.trials
    values = np.array(list(adjusted.values()))
    names = list(adjusted)
    worst = names[int(np.argmax(values))]
    best = names[int(np.argmin(values))]
    geomean = float(np.exp(np.mean(np.log(values))))
    note = "zero-error groups counted as 0.5 errors" if zeros else ""
    return Differential(
        float(values.max() / values.min()),
        float(values.max() / geomean),
        worst,
        best,
        sorted(names),
        sorted(zeros),
        note,
    )


# -- subject-resampling bootstrap -----------------------------------------------------------------


def _resample_weights(n_subjects: int, replicates: int, rng: np.random.Generator) -> FloatArray:
    """``replicates x n_subjects`` multiplicities of a with-replacement draw of the subjects."""
    if n_subjects == 0:
        return np.zeros((replicates, 0))
    draws = rng.integers(0, n_subjects, size=(replicates, n_subjects))
    draws += (np.arange(replicates) * n_subjects)[:, None]
    counts = np.bincount(draws.ravel(), minlength=replicates * n_subjects)
    return counts.reshape(replicates, n_subjects).astype(np.float64)


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float] | None:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return None
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(v, [alpha, 1.0 - alpha])
    return (float(lo), float(hi))


def replicate_interval(
    errors: np.ndarray, trials: np.ndarray, confidence: float = 0.95
) -> tuple[float, float] | None:
    """Percentile interval of a rate from its replicates' (errors, trials), as
    :func:`fmr_replicates` and :func:`subject_rate_replicates` give them; replicates without
    trials are left out (None when none has any)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        rates = np.asarray(errors, dtype=np.float64) / np.asarray(trials, dtype=np.float64)
    return _percentiles(rates, confidence)


def differential_interval(
    observed: Mapping[str, tuple[int, int]],
    replicates: Mapping[str, tuple[np.ndarray, np.ndarray]],
    confidence: float = 0.95,
) -> dict[str, tuple[float, float]] | None:
    """Simultaneous intervals of max/min and max/geomean across groups.

    ``observed[group]`` is the group's ``(errors, trials)``; ``replicates[group]`` the same counts
    in each bootstrap replicate, the group's subjects resampled on their own. Each group's rate
    gets an interval at level ``1 - (1 - confidence) / groups`` (Bonferroni), so that all of them
    hold together with about ``confidence``: at each end the wider of the bootstrap's percentile
    and the exact binomial (Clopper-Pearson) interval, so a group whose every replicate has no
    errors still gets an upper end above zero. The true max then lies between the largest lower
    and the largest upper end, the true min between the smallest ends, and the ratios between
    what those allow (never below 1). Ends below half an error count as half an error, as the
    estimate counts a group without errors (:func:`differential`).

    Why not the percentile interval of the replicates' own max/min: max/min is an order statistic,
    biased upwards when groups are close, and its bootstrap inherits the bias. Simulated with
    seven groups (``bench/differential_coverage.py``), it held the true ratio in 0% of datasets
    where every group had the same rate. ``None`` with fewer than two groups or when a group has
    no trials.
    """
    groups = [g for g in replicates if g in observed]
    if len(groups) < 2:
        return None
    level = (1.0 - confidence) / len(groups)
    lows, highs = [], []
    for g in groups:
        errors, trials = observed[g]
        e = np.asarray(replicates[g][0], dtype=np.float64)
        n = np.asarray(replicates[g][1], dtype=np.float64)
        ok = n > 0
        if trials <= 0 or not ok.any():
            return None
        b_lo, b_hi = np.quantile(e[ok] / n[ok], [level / 2.0, 1.0 - level / 2.0])
        cp_lo, cp_hi = clopper_pearson(errors, trials, 1.0 - level)
        floor = 0.5 / trials
        lows.append(max(min(float(b_lo), cp_lo), floor))
        highs.append(max(float(b_hi), cp_hi, floor))
    lo_g, hi_g = np.array(lows), np.array(highs)
    geo_lo, geo_hi = float(np.exp(np.log(lo_g).mean())), float(np.exp(np.log(hi_g).mean()))
    return {
        "max_over_min": (max(1.0, lo_g.max() / hi_g.min()), hi_g.max() / lo_g.min()),
        "max_over_geomean": (max(1.0, lo_g.max() / geo_hi), hi_g.max() / geo_lo),
    }


def subject_rate_replicates(
    errors_per_subject: np.ndarray, pairs_per_subject: np.ndarray, replicates: int, seed: int | Sequence[int]
) -> tuple[FloatArray, FloatArray]:
    """(errors, trials) of each of ``replicates`` subject resamples, for a rate whose trials
    belong to one subject each: false non-matches over genuine pairs, failures to acquire over
    images."""
    e = np.asarray(errors_per_subject, dtype=np.float64)
    n = np.asarray(pairs_per_subject, dtype=np.float64)
    w = _resample_weights(n.size, replicates, np.random.default_rng(seed))
    result: tuple[FloatArray, FloatArray] = (w @ e, w @ n)
    return result


def fmr_replicates(
    images_per_subject: np.ndarray, false_match_pairs: np.ndarray, replicates: int, seed: int | Sequence[int]
) -> tuple[FloatArray, FloatArray]:
    """(false matches, impostor pairs) of each of ``replicates`` subject resamples (see
    :func:`bootstrap_fmr` for the arguments)."""
    n = np.asarray(images_per_subject, dtype=np.float64)
    w = _resample_weights(n.size, replicates, np.random.default_rng(seed))
    return resampled_fmr_counts(n, false_match_pairs, w)


def bootstrap_fnmr(
    errors_per_subject: np.ndarray,
    pairs_per_subject: np.ndarray,
    *,
    replicates: int = 1000,
    seed: int | Sequence[int] = 0,
    confidence: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile interval of a false non-match rate, resampling subjects with replacement.

    Genuine pairs live inside one subject, so a replicate's rate is
    ``sum(w_s * errors_s) / sum(w_s * pairs_s)`` with ``w_s`` the subject's multiplicity.
    """
    e = np.asarray(errors_per_subject, dtype=np.float64)
    n = np.asarray(pairs_per_subject, dtype=np.float64)
    keep = n > 0
    if not keep.any():
        return None
    return replicate_interval(*subject_rate_replicates(e[keep], n[keep], replicates, seed), confidence)


def bootstrap_fmr(
    images_per_subject: np.ndarray,
    false_match_pairs: np.ndarray,
    *,
    replicates: int = 1000,
    seed: int | Sequence[int] = 0,
    confidence: float = 0.95,
) -> tuple[float, float] | None:
    """Percentile interval of a false-match rate among all impostor pairs of a set of subjects.

    ``images_per_subject[s]`` is the number of usable images of subject ``s``; every pair of
    images of two different subjects is an impostor pair, so a replicate with multiplicities
    ``w`` has ``(sum(w n)^2 - sum(w^2 n^2)) / 2`` impostor pairs. ``false_match_pairs`` is an
    ``(m, 2)`` array of subject indices, one row per false-matching image pair, and a
    replicate counts ``w_s * w_t`` of each. Copies of one drawn subject are not paired with
    each other (they would be the same person), matching the denominator.
    """
    if np.asarray(images_per_subject).size < 2:
        return None
    draws = fmr_replicates(images_per_subject, false_match_pairs, replicates, seed)
    return replicate_interval(*draws, confidence)


def resampled_fmr_counts(
    images_per_subject: np.ndarray, false_match_pairs: np.ndarray, weights: np.ndarray
) -> tuple[FloatArray, FloatArray]:
    """(false matches, impostor pairs) of each replicate (row of subject multiplicities ``weights``)."""
    n = np.asarray(images_per_subject, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    s = n.size
    wn = w * n[None, :]
    den = (wn.sum(axis=1) ** 2 - (wn**2).sum(axis=1)) / 2.0
    fm = np.asarray(false_match_pairs, dtype=np.int64).reshape(-1, 2)
    if fm.shape[0] == 0:
        num = np.zeros(w.shape[0])
    else:
        a = sparse.coo_matrix((np.ones(fm.shape[0]), (fm[:, 0], fm[:, 1])), shape=(s, s)).tocsr()
        # sum_k w[b, s_k] * w[b, t_k] for every replicate b.
        num = np.asarray((a @ w.T).T * w).sum(axis=1)
    return np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)


# -- curves -----------------------------------------------------------------------------------------


def det_points(
    genuine: np.ndarray,
    impostor_hist: np.ndarray,
    bin_edges: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DET curve (FMR, FNMR, score thresholds) with scikit-learn's ``det_curve``.

    Impostor scores come as a histogram over ``bin_edges`` (each bin enters once, weighted by
    its count, at its upper edge, so FMR is never underestimated); genuine scores enter
    one by one. scikit-learn gets negated scores, so a higher value means "more alike".
    """
    from sklearn.metrics import det_curve

    counts = np.asarray(impostor_hist, dtype=np.float64)
    nz = counts > 0
    g = np.asarray(genuine, dtype=np.float64)
    scores = np.concatenate([-g, -bin_edges[1:][nz]])
    labels = np.concatenate([np.ones(g.size), np.zeros(int(nz.sum()))])
    weights = np.concatenate([np.ones(g.size), counts[nz]])
    fpr, fnr, thr = det_curve(labels, scores, sample_weight=weights)
    return np.asarray(fpr), np.asarray(fnr), -np.asarray(thr)


def group_rates(values: Sequence[bool], groups: Sequence[str]) -> dict[str, tuple[int, int]]:
    """Per-group (count of True, total) with fairlearn's MetricFrame."""
    from fairlearn.metrics import MetricFrame, count

    y = np.asarray(values, dtype=np.int64)
    if y.size == 0:
        return {}

    def positives(y_true: np.ndarray, y_pred: np.ndarray) -> int:
        return int(np.sum(y_true))

    frame = MetricFrame(
        metrics={"errors": positives, "total": count},
        y_true=y,
        y_pred=y,
        sensitive_features=np.asarray(groups, dtype=object),
    )
    table = frame.by_group
    return {str(g): (int(row["errors"]), int(row["total"])) for g, row in table.iterrows()}
