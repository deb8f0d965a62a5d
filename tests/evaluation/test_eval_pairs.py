"""Block scoring against brute force, and the audit on synthetic templates."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from regard.evaluation.identification import split
from regard.evaluation.metrics import threshold_at_fmr, threshold_from_smallest
from regard.evaluation.pairs import BIN_EDGES, Grouping, score_all_pairs, score_listed_pairs


def _data(seed: int = 0, subjects: int = 12, per: int = 3) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(subjects, 8))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True) * 2.5
    subj = np.repeat(np.arange(subjects), per)
    emb = centres[subj] + rng.normal(scale=0.08, size=(subj.size, 8))
    groups = ["x" if s % 3 else "y" for s in subj]
    return emb, subj, groups


def test_block_scoring_matches_brute_force() -> None:
    emb, subj, groups = _data()
    g = Grouping.of("grp", groups)
    scores = score_all_pairs(emb, subj, [g], max_target=0.05, block=5)
    genuine, impostor, imp_groups = [], [], []
    for i, j in itertools.combinations(range(len(subj)), 2):
        d = float(np.linalg.norm(emb[i] - emb[j]))
        if subj[i] == subj[j]:
            genuine.append(d)
        else:
            impostor.append(d)
            imp_groups.append(tuple(sorted((g.codes[i], g.codes[j]))))
    assert np.sort(scores.genuine_d) == pytest.approx(np.sort(genuine))
    assert scores.n_impostor == len(impostor)
    assert int(scores.hist_all.sum()) == len(impostor)
    # The tail holds every impostor up to the cap, exactly.
    imp = np.array(impostor)
    assert np.sort(scores.tail_d) == pytest.approx(np.sort(imp[imp <= scores.cap]))
    for target in (0.05, 0.01):
        exact = threshold_at_fmr(imp, target)
        assert threshold_from_smallest(scores.tail_d, scores.n_impostor, target) == pytest.approx(exact)
    totals = scores.impostor_totals("grp")
    for a in range(2):
        for b in range(a, 2):
            assert totals[a, b] == imp_groups.count((a, b))
    # Histogram counts at bin edges give exact cumulative FMR.
    edge = BIN_EDGES[400]
    assert scores.hist_all[:400].sum() == int(np.sum(imp <= edge))


def test_fixed_thresholds_extend_the_tail() -> None:
    emb, subj, _ = _data(1)
    scores = score_all_pairs(emb, subj, [], max_target=1e-3, fixed_thresholds=[0.9])
    assert scores.cap >= 0.9


def test_listed_pairs() -> None:
    emb = np.array([[0.0, 0.0], [0.3, 0.4], [1.0, 0.0]])
    g = Grouping.of("grp", ["a", "a", "b"])
    s = score_listed_pairs(emb, [(0, 1, True), (0, 2, False), (1, 2, False)], [g])
    assert s.genuine_d == pytest.approx([0.5])
    assert sorted(s.tail_d) == pytest.approx(sorted([1.0, float(np.hypot(0.7, 0.4))]))
    assert s.n_impostor == 2
    assert s.impostor_totals("grp").tolist() == [[0, 2], [0, 0]]


def test_split_is_seeded_and_disjoint() -> None:
    subj = np.repeat(np.arange(10), 3)
    a, b = split(subj, 4), split(subj, 4)
    assert a.gallery.tolist() == b.gallery.tolist()
    assert len(a.gallery) == 5
    enrolled = set(subj[a.gallery].tolist())
    assert all(subj[i] in enrolled for i in a.mated)
    assert not any(subj[i] in enrolled for i in a.nonmated)
    assert (subj[a.gallery[a.mate_pos]] == subj[a.mated]).all()
    assert len(a.gallery) + len(a.mated) + len(a.nonmated) == subj.size


def test_group_names_sort_numbers_as_numbers() -> None:
    g = Grouping.of("age", ["20-29", "3-9", "0-2", "10-19", "70+", "3-9"])
    assert g.names == ["0-2", "3-9", "10-19", "20-29", "70+"]
    assert g.codes.tolist() == [3, 1, 0, 2, 4, 1]
