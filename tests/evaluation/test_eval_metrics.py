"""Metrics against hand-computed small cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from regard.evaluation.metrics import (
    Rate,
    bootstrap_fmr,
    bootstrap_fnmr,
    clopper_pearson,
    det_points,
    differential,
    differential_interval,
    fmr_fnmr,
    fmr_replicates,
    group_rates,
    make_rate,
    min_impostors_for,
    replicate_interval,
    resampled_fmr_counts,
    subject_rate_replicates,
    threshold_at_fmr,
    threshold_from_smallest,
)

IMPOSTOR = np.array([0.5, 0.2, 0.9, 0.7, 0.3, 0.8, 0.6, 0.4, 1.0, 0.1])


def test_threshold_admits_at_most_target_share_of_impostors() -> None:
    # 10 impostors, target 0.2 -> at most 2 may match: midway between the 2nd (0.2) and 3rd (0.3).
    assert threshold_at_fmr(IMPOSTOR, 0.2) == pytest.approx(0.25)
    assert threshold_at_fmr(IMPOSTOR, 0.25) == pytest.approx(0.25)  # floor(2.5) = 2
    # target below 1/n: no false match allowed, half the closest impostor.
    assert threshold_at_fmr(IMPOSTOR, 0.05) == pytest.approx(0.05)
    assert threshold_at_fmr(IMPOSTOR, 1.0) == pytest.approx(1.0)


def test_threshold_with_ties_stays_below_the_tie() -> None:
    d = np.array([0.2, 0.2, 0.2, 0.5])
    # k = 2, but admitting the tied 0.2s would admit 3; nothing smaller exists -> half of 0.2.
    assert threshold_at_fmr(d, 0.5) == pytest.approx(0.1)
    d = np.array([0.1, 0.2, 0.2, 0.5])
    assert threshold_at_fmr(d, 0.5) == pytest.approx(0.15)


def test_threshold_from_lower_tail_matches_full_computation() -> None:
    rng = np.random.default_rng(3)
    d = rng.uniform(0.3, 1.2, size=20_000)
    for target in (1e-2, 1e-3, 1e-4):
        tail = np.sort(d)[:300]
        assert threshold_from_smallest(tail, d.size, target) == threshold_at_fmr(d, target)
    with pytest.raises(ValueError):
        threshold_from_smallest(np.sort(d)[:3], d.size, 1e-2)


def test_threshold_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        threshold_at_fmr(np.array([]), 0.1)
    with pytest.raises(ValueError):
        threshold_at_fmr(IMPOSTOR, 0.0)


def test_fmr_fnmr_counts() -> None:
    fmr, fnmr = fmr_fnmr(np.array([0.1, 0.3, 0.6]), IMPOSTOR, 0.35)
    assert (fmr.errors, fmr.trials, fmr.value) == (3, 10, 0.3)
    assert (fnmr.errors, fnmr.trials) == (1, 3)
    assert fnmr.value == pytest.approx(1 / 3)
    # At exactly a score, the pair matches (distance <= threshold).
    fmr, _ = fmr_fnmr(np.array([0.1]), IMPOSTOR, 0.3)
    assert fmr.errors == 3


def test_clopper_pearson_known_values() -> None:
    lo, hi = clopper_pearson(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(1 - 0.025 ** (1 / 10), rel=1e-9)  # 0.30850
    lo, hi = clopper_pearson(10, 10)
    assert lo == pytest.approx(0.025 ** (1 / 10), rel=1e-9)
    assert hi == 1.0
    lo, hi = clopper_pearson(5, 10)
    assert lo == pytest.approx(0.187086, abs=1e-6)
    assert hi == pytest.approx(0.812914, abs=1e-6)
    assert clopper_pearson(0, 0) == (0.0, 1.0)


def test_make_rate_flags_too_few_pairs() -> None:
    assert min_impostors_for(1e-4) == 30_000
    r = make_rate(0, 1000, min_trials=min_impostors_for(1e-4))
    assert not r.estimable
    assert "too few" in r.note
    assert make_rate(3, 30_000, min_trials=30_000).estimable
    assert make_rate(0, 0, min_trials=1).value is None


def _rate(errors: int, trials: int, estimable: bool = True) -> Rate:
    return Rate(errors, trials, clopper_pearson(errors, trials), estimable)


def test_differential_ratios_with_a_zero_count_group() -> None:
    d = differential({"A": _rate(2, 100), "B": _rate(1, 100), "C": _rate(0, 50), "D": _rate(9, 10, False)})
    # C counts as 0.5/50 = 0.01; rates 0.02, 0.01, 0.01; D is not estimable and left out.
    assert d.max_min == pytest.approx(2.0)
    assert d.max_geomean == pytest.approx(0.02 / (0.02 * 0.01 * 0.01) ** (1 / 3))  # 1.5874
    assert d.worst == "A"
    assert d.best == "B"
    assert d.zero_adjusted == ["C"]
    assert d.groups == ["A", "B", "C"]


def test_differential_all_zero_and_too_few_groups() -> None:
    d = differential({"A": _rate(0, 100), "B": _rate(0, 200)})
    # 0.5/100 vs 0.5/200: the ratio reflects only the different denominators.
    assert d.max_min == pytest.approx(2.0)
    assert d.max_geomean == pytest.approx(0.005 / math.sqrt(0.005 * 0.0025))
    single = differential({"A": _rate(1, 100), "B": _rate(0, 0)})
    assert single.max_min is None
    assert single.max_geomean is None
    assert "fewer than two" in single.note


def test_bootstrap_fnmr_is_deterministic_and_degenerate_for_equal_subjects() -> None:
    assert bootstrap_fnmr(np.array([1, 1, 1]), np.array([2, 2, 2]), seed=5) == (0.5, 0.5)
    e, n = np.array([0, 3, 1, 0, 2]), np.array([4, 4, 6, 2, 5])
    a = bootstrap_fnmr(e, n, replicates=500, seed=1)
    b = bootstrap_fnmr(e, n, replicates=500, seed=1)
    assert a == b
    assert a is not None
    assert 0.0 <= a[0] <= e.sum() / n.sum() <= a[1] <= 1.0
    assert bootstrap_fnmr(np.array([]), np.array([])) is None


def _brute_fmr(n: list[int], fm: list[tuple[int, int]], w: list[int]) -> float:
    """Expand the replicate into copies and count image pairs between copies of different subjects."""
    copies = [s for s, k in enumerate(w) for _ in range(k)]
    fm_count = {tuple(sorted(p)): fm.count(p) + fm.count((p[1], p[0])) for p in fm}
    pairs = errors = 0
    for a, b in itertools.combinations(range(len(copies)), 2):
        s, t = copies[a], copies[b]
        if s == t:
            continue
        pairs += n[s] * n[t]
        errors += fm_count.get(tuple(sorted((s, t))), 0)
    return errors / pairs


def test_resampled_fmr_matches_brute_force() -> None:
    n = [1, 2, 3, 1]
    fm = [(0, 1), (1, 2), (1, 2), (2, 3)]
    for w in ([1, 1, 1, 1], [2, 0, 1, 1], [0, 3, 1, 0], [1, 1, 0, 2]):
        num, den = resampled_fmr_counts(np.array(n), np.array(fm), np.array([w]))
        assert num[0] / den[0] == pytest.approx(_brute_fmr(n, fm, w))


def test_bootstrap_fmr_extremes_and_determinism() -> None:
    n = np.array([1, 1, 1, 1])
    every = np.array(list(itertools.combinations(range(4), 2)))
    assert bootstrap_fmr(n, every, replicates=200, seed=0) == (1.0, 1.0)
    assert bootstrap_fmr(n, np.zeros((0, 2)), replicates=200, seed=0) == (0.0, 0.0)
    one = np.array([[0, 1]])
    assert bootstrap_fmr(n, one, seed=9) == bootstrap_fmr(n, one, seed=9)
    assert bootstrap_fmr(np.array([3]), np.zeros((0, 2))) is None


def test_differential_interval_known_answers() -> None:
    # Large counts: the exact binomial intervals are narrow and the bootstrap's decide. A's rate
    # lies in [1, 2]%, B's in [1, 4]%, so max/min can be anything from 1 (both near 1-2%) to 4
    # (B at 4%, A at 1%); the ends come from quantiles just inside those.
    spread = {
        "A": (np.linspace(1000.0, 2000.0, 1001), np.full(1001, 1e5)),
        "B": (np.linspace(1000.0, 4000.0, 1001), np.full(1001, 1e5)),
    }
    got = differential_interval({"A": (1500, 100_000), "B": (2500, 100_000)}, spread)
    assert got is not None
    lo, hi = got["max_over_min"]
    assert lo == 1.0 and 3.9 < hi < 4.0
    # Each end is the wider of the bootstrap's and Clopper-Pearson's at level 1 - 0.05/2: a group
    # whose every replicate has no errors gets Clopper-Pearson's upper end, and its lower end
    # counts half an error (0.5/100), as the estimate does.
    b = 40
    zero = {"A": (np.zeros(b), np.full(b, 100.0)), "B": (np.full(b, 20.0), np.full(b, 100.0))}
    got = differential_interval({"A": (0, 100), "B": (20, 100)}, zero)
    assert got is not None
    a_hi = clopper_pearson(0, 100, 1 - 0.025)[1]
    b_lo, b_hi = clopper_pearson(20, 100, 1 - 0.025)
    assert got["max_over_min"] == pytest.approx((b_lo / a_hi, b_hi / 0.005))
    assert got["max_over_geomean"] == pytest.approx(
        (b_lo / math.sqrt(a_hi * b_hi), b_hi / math.sqrt(0.005 * b_lo))
    )
    assert differential_interval({"A": (0, 100)}, {"A": zero["A"]}) is None
    assert differential_interval({"A": (0, 0), "B": (20, 100)}, zero) is None
    assert (
        differential_interval(
            {"A": (0, 100), "B": (20, 100)}, {"A": (np.ones(b), np.zeros(b)), "B": zero["B"]}
        )
        is None
    )


def test_differential_interval_covers_the_true_ratio() -> None:
    """Seven groups of 350 independent trials, each resampled on its own (the binomial stands in
    for a one-image-per-subject bootstrap). The interval should hold the true max/min in at least
    95% of datasets; the percentile interval of the replicates' own max/min held it in none of
    them when the rates were equal (an order statistic is biased upwards)."""
    rng = np.random.default_rng(0)
    n, replicates, datasets = 350, 400, 150
    for true in ([0.013] * 7, [0.005, 0.008, 0.01, 0.012, 0.015, 0.018, 0.02]):
        p = np.array(true)
        ratio = p.max() / p.min()
        held = 0
        for _ in range(datasets):
            e = rng.binomial(n, p)
            boot = rng.binomial(n, e / n, size=(replicates, len(p)))
            reps = {str(g): (boot[:, g].astype(float), np.full(replicates, float(n))) for g in range(len(p))}
            got = differential_interval({str(g): (int(e[g]), n) for g in range(len(p))}, reps)
            assert got is not None
            lo, hi = got["max_over_min"]
            held += lo <= ratio * (1 + 1e-12) and ratio <= hi
        assert held / datasets >= 0.95, (true, held)


def test_replicates_are_the_resamples_behind_the_rate_intervals() -> None:
    n = np.array([1, 2, 3, 1, 2])
    fm = np.array([[0, 1], [1, 2], [2, 4]])
    num, den = fmr_replicates(n, fm, 300, 7)
    assert num.shape == den.shape == (300,)
    rates = num[den > 0] / den[den > 0]
    assert bootstrap_fmr(n, fm, replicates=300, seed=7) == pytest.approx(
        tuple(np.quantile(rates, [0.025, 0.975]))
    )
    e, pairs = np.array([0.0, 3, 1, 0, 2]), np.array([4.0, 4, 6, 2, 5])
    num, den = subject_rate_replicates(e, pairs, 300, 7)
    assert bootstrap_fnmr(e, pairs, replicates=300, seed=7) == pytest.approx(
        tuple(np.quantile(num / den, [0.025, 0.975]))
    )
    # replicate_interval reads those replicates back into the same interval.
    assert replicate_interval(num, den) == bootstrap_fnmr(e, pairs, replicates=300, seed=7)
    assert replicate_interval(np.zeros(3), np.zeros(3)) is None  # no replicate has a trial
    # Each replicate draws as many subjects as the group has.
    assert set(np.round(subject_rate_replicates(np.zeros(5), np.ones(5), 50, 1)[1])) == {5.0}


def test_det_points_from_histogram() -> None:
    edges = np.linspace(0.0, 1.0, 11)  # bins of 0.1
    hist = np.zeros(10)
    hist[2] = 1  # one impostor in (0.2, 0.3]
    hist[7] = 3  # three in (0.7, 0.8]
    fmr, fnmr, thr = det_points(np.array([0.05, 0.15, 0.55]), hist, edges)
    table = dict(zip(np.round(thr, 6), zip(fmr, fnmr, strict=True), strict=True))
    # At threshold 0.3: the impostor at 0.3 matches (1/4), genuine 0.55 does not (1/3).
    assert table[0.3] == (pytest.approx(0.25), pytest.approx(1 / 3))
    # At 0.55: still 1/4 impostors, every genuine pair matches.
    assert table[0.55] == (pytest.approx(0.25), pytest.approx(0.0))


def test_group_rates_with_fairlearn() -> None:
    got = group_rates([True, False, True, False, False], ["a", "a", "b", "b", "b"])
    assert got == {"a": (1, 2), "b": (1, 3)}
    assert group_rates([], []) == {}
