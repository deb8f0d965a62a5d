"""Calibration lookups on a hand-made table whose every answer is known exactly.

One decade of FMR per 0.1 of distance, measured from 0.4 (FMR 1e-5, the tail's anchor) up, and
extrapolated below it along the same slope. Kills the mutants of scripts/mutation_check.py that
the statistical tests of test_calibration.py cannot see: linear instead of log interpolation
(calib-linear-interp), the anchor row left out of the measured part (calib-skip-anchor-row),
and Scorer.score_for_similarity reading a similarity as an FMR (calib-score-for-similarity).
"""

from __future__ import annotations

import math

import pytest

from regard.scoring.calibrate import CalibrationTable, Scorer

ROWS = [  # distance, FMR, FNMR; the row under the anchor is measured as 0 (too few impostors)
    (0.3, 0.0, 0.9),
    (0.4, 1e-5, 0.5),
    (0.5, 1e-4, 0.2),
    (0.6, 1e-3, 0.1),
    (0.7, 1e-2, 0.05),
    (0.8, 1e-1, 0.02),
    (0.9, 0.5, 0.01),
    (1.0, 1.0, 0.0),
]


def table() -> CalibrationTable:
    return CalibrationTable.from_dict(
        {
            "version": "lookup-test",
            "model": "synthetic",
            "dataset": "hand-made",
            "rows": [{"distance": d, "fmr": f, "fnmr": n} for d, f, n in ROWS],
            "tail": {"distance": 0.4, "log10_fmr": -5.0, "slope": 10.0},
            "counts": {"genuine": 1, "impostor": 1},
        }
    )


@pytest.mark.parametrize(("distance", "log10_fmr"), [(0.45, -4.5), (0.55, -3.5), (0.62, -2.8), (0.75, -1.5)])
def test_fmr_between_rows_is_interpolated_in_log(distance: float, log10_fmr: float) -> None:
    assert math.log10(table().fmr_at(distance)) == pytest.approx(log10_fmr, abs=1e-9)


@pytest.mark.parametrize(("distance", "fmr"), [(d, f) for d, f, _ in ROWS if d >= 0.4])
def test_fmr_at_a_row_is_the_row(distance: float, fmr: float) -> None:
    assert table().fmr_at(distance) == pytest.approx(fmr, rel=1e-9)


def test_fmr_is_continuous_at_the_anchor() -> None:
    t = table()
    for d in (0.4 - 1e-9, 0.4, 0.4 + 1e-9, 0.4 + 1e-4):
        assert math.log10(t.fmr_at(d)) == pytest.approx(-5.0 + 10 * (d - 0.4), abs=1e-6)


def test_tail_is_extrapolated_beyond_similarity_100() -> None:
    t = table()
    assert t.fmr_at(0.3) == pytest.approx(1e-6)  # not the measured 0 of that row
    assert t.fmr_at(0.2) == pytest.approx(1e-7)
    assert t.fmr_at(0.1) == pytest.approx(1e-8)


def test_beyond_the_last_row_is_the_last_row() -> None:
    t = table()
    assert t.fmr_at(1.0) == 1.0 and t.fmr_at(1.7) == 1.0
    assert t.fmr_at(0.95) == pytest.approx(10 ** (0.5 * math.log10(0.5)))


@pytest.mark.parametrize(
    ("fmr", "distance"), [(1e-8, 0.1), (1e-6, 0.3), (1e-5, 0.4), (10**-3.5, 0.55), (1e-2, 0.7), (0.5, 0.9)]
)
def test_distance_for_fmr_inverts_fmr_at(fmr: float, distance: float) -> None:
    t = table()
    assert t.distance_for_fmr(fmr) == pytest.approx(distance, abs=1e-9)
    assert t.fmr_at(t.distance_for_fmr(fmr)) == pytest.approx(fmr, rel=1e-6)


@pytest.mark.parametrize(
    ("distance", "similarity"),
    [(0.1, 100.0), (0.4, 100.0), (0.5, 80.0), (0.55, 70.0), (0.6, 60.0), (1.0, 0.0)],
)
def test_similarity_is_minus_20_log10_fmr(distance: float, similarity: float) -> None:
    t = table()
    assert t.similarity(distance) == pytest.approx(similarity, abs=1e-9)
    assert t.distance_for_similarity(similarity) == pytest.approx(max(distance, 0.4), abs=1e-9)


def test_scorer_reads_scores_through_the_table() -> None:
    scorer = Scorer(table())
    assert scorer.score_for_similarity(60.0) == pytest.approx(0.6)
    assert scorer.score_for_similarity(80.0) == pytest.approx(0.5)
    assert scorer.score_for_fmr(1e-2) == pytest.approx(0.7)
    assert scorer.similarity(0.55) == pytest.approx(70.0)
    assert scorer.fmr_at(0.55) == pytest.approx(10**-3.5)
