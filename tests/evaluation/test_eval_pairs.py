"""Block scoring against brute force, and the audit on synthetic templates."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from regard.evaluation.identification import evaluate_identification, split
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
    assert np.sort(scores.genuine_s) == pytest.approx(np.sort(genuine))
    assert scores.n_impostor == len(impostor)
    assert int(scores.hist_all.sum()) == len(impostor)
    # The tail holds every impostor up to the cap, exactly.
    imp = np.array(impostor)
    assert np.sort(scores.tail_s) == pytest.approx(np.sort(imp[imp <= scores.cap]))
    for target in (0.05, 0.01):
        exact = threshold_at_fmr(imp, target)
        assert threshold_from_smallest(scores.tail_s, scores.n_impostor, target) == pytest.approx(exact)
    totals = scores.impostor_totals("grp")
    for a in range(2):
        for b in range(a, 2):
            assert totals[a, b] == imp_groups.count((a, b))
    # Histogram counts at bin edges give exact cumulative FMR.
    k = int(np.searchsorted(BIN_EDGES, np.median(imp)))
    assert 0 < scores.hist_all[:k].sum() == int(np.sum(imp <= BIN_EDGES[k])) < imp.size


def test_fixed_thresholds_extend_the_tail() -> None:
    emb, subj, _ = _data(1)
    scores = score_all_pairs(emb, subj, [], max_target=1e-3, fixed_thresholds=[0.9])
    assert scores.cap >= 0.9


def test_listed_pairs() -> None:
    emb = np.array([[0.0, 0.0], [0.3, 0.4], [1.0, 0.0]])
    g = Grouping.of("grp", ["a", "a", "b"])
    s = score_listed_pairs(emb, [(0, 1, True), (0, 2, False), (1, 2, False)], [g])
    assert s.genuine_s == pytest.approx([0.5])
    assert sorted(s.tail_s) == pytest.approx(sorted([1.0, float(np.hypot(0.7, 0.4))]))
    assert s.n_impostor == 2
    assert s.impostor_totals("grp").tolist() == [[0, 2], [0, 0]]


def test_split_is_seeded_and_disjoint() -> None:
    subj = np.repeat(np.arange(10), 3)
    a, b = split(subj, 4), split(subj, 4)
    assert a.gallery.tolist() == b.gallery.tolist()
    assert 1 <= len(a.gallery) <= 9  # about half: each subject's hash decides
    assert split(subj, 5).gallery.tolist() != a.gallery.tolist()  # another seed, another split
    enrolled = set(subj[a.gallery].tolist())
    assert all(subj[i] in enrolled for i in a.mated)
    assert not any(subj[i] in enrolled for i in a.nonmated)
    assert (subj[a.gallery[a.mate_pos]] == subj[a.mated]).all()
    assert len(a.gallery) + len(a.mated) + len(a.nonmated) == subj.size


def test_split_keeps_everyone_s_role_when_other_images_come_or_go() -> None:
    """The split hashes names: dropping or adding images (a detector that finds fewer or more
    faces) changes no one else's role, and the gallery image of an enrolled person stays put."""
    rng = np.random.default_rng(0)
    people = [f"person{k}" for k in range(400)]
    who = [p for p in people for _ in range(3)]
    images = [f"{p}/{i}.jpg" for p in people for i in range(3)]
    full = _roles(who, images, seed=7)
    keep = rng.random(len(images)) > 0.2  # a detector that misses a fifth of the images
    part = _roles(
        [w for w, k in zip(who, keep, strict=True) if k],
        [m for m, k in zip(images, keep, strict=True) if k],
        7,
    )
    assert 0.4 < sum(r == "gallery" for r in full.values()) / len(people) < 0.6
    for image, role in part.items():
        if role != "gallery" or full[image] == "gallery":  # a gallery image lost promotes another
            assert full[image] == role, image
    enrolled = {m.split("/")[0] for m, r in full.items() if r != "probe"}
    assert enrolled >= {m.split("/")[0] for m, r in part.items() if r != "probe"}
    # With two subjects, whatever their draws: one is enrolled, one is not.
    for seed in range(20):
        sp = split(np.array([0, 0, 1]), seed)
        assert len(sp.gallery) == 1 and len(sp.nonmated) >= 1


def _roles(who: list[str], images: list[str], seed: int) -> dict[str, str]:
    codes = np.unique(who, return_inverse=True)[1]
    sp = split(codes, seed, subject_names=who, image_names=images)
    roles = {images[i]: "gallery" for i in sp.gallery}
    roles.update({images[i]: "mated" for i in sp.mated})
    roles.update({images[i]: "probe" for i in sp.nonmated})
    assert len(roles) == len(images)
    return roles


def test_split_refuses_mismatched_names() -> None:
    with pytest.raises(ValueError, match="one subject name"):
        split(np.array([0, 1]), 0, subject_names=["a"])
    with pytest.raises(ValueError, match="two codes"):
        split(np.array([0, 1]), 0, subject_names=["a", "a"])


def test_group_names_sort_numbers_as_numbers() -> None:
    g = Grouping.of("age", ["20-29", "3-9", "0-2", "10-19", "70+", "3-9"])
    assert g.names == ["0-2", "3-9", "10-19", "20-29", "70+"]
    assert g.codes.tolist() == [3, 1, 0, 2, 4, 1]


def _brute_scores(
    emb: np.ndarray, subj: np.ndarray, half: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """Genuine scores, impostor scores, impostor distances and impostor pairs, one pair at a time."""
    gen, imp, imp_d, imp_ij = [], [], [], []
    for i, j in itertools.combinations(range(len(subj)), 2):
        d = float(np.linalg.norm(emb[i] - emb[j]))
        if subj[i] == subj[j]:
            gen.append(d - half[i] - half[j])
        else:
            imp.append(d - half[i] - half[j])
            imp_d.append(d)
            imp_ij.append((i, j))
    return np.array(gen), np.array(imp), np.array(imp_d), imp_ij


def test_block_scoring_with_half_offsets_matches_brute_force() -> None:
    emb, subj, groups = _data(2)
    rng = np.random.default_rng(5)
    half = rng.uniform(-0.12, 0.12, size=len(subj))
    half[[0, 1]] = 0.3  # subject 0's first two images: a genuine pair with a negative score
    g = Grouping.of("grp", groups)
    scores = score_all_pairs(emb, subj, [g], max_target=0.05, half_offsets=half, block=7)
    gen, imp, imp_d, imp_ij = _brute_scores(emb, subj, half)
    assert gen.min() < 0
    assert np.sort(scores.genuine_s) == pytest.approx(np.sort(gen))
    assert scores.n_impostor == imp.size == int(scores.hist_all.sum())
    assert np.sort(scores.tail_s) == pytest.approx(np.sort(imp[imp <= scores.cap]))
    # The tail pairs carry their own scores.
    for (i, j), s in zip(scores.tail_ij, scores.tail_s, strict=True):
        assert s == pytest.approx(np.linalg.norm(emb[i] - emb[j]) - half[i] - half[j])
    for target in (0.05, 0.01):
        exact = threshold_at_fmr(imp, target)
        assert threshold_from_smallest(scores.tail_s, scores.n_impostor, target) == pytest.approx(exact)
    # Pairs that the offsets push across a threshold: counted by score, not by distance.
    tau = threshold_at_fmr(imp, 0.05)
    pulled_in = (imp <= tau) & (imp_d > tau)
    pushed_out = (imp > tau) & (imp_d <= tau)
    assert pulled_in.any() and pushed_out.any()
    assert int((scores.tail_s <= tau).sum()) == int((imp <= tau).sum()) != int((imp_d <= tau).sum())
    totals = scores.impostor_totals("grp")
    codes = [tuple(sorted((g.codes[i], g.codes[j]))) for i, j in imp_ij]
    for a in range(2):
        for b in range(a, 2):
            assert totals[a, b] == codes.count((a, b))
            # The per-group histograms bin scores, too.
            same = np.array([c == (a, b) for c in codes])
            edge = int(np.searchsorted(BIN_EDGES, tau))
            assert scores.hist_by["grp"][a, b, :edge].sum() == int((imp[same] <= BIN_EDGES[edge]).sum())


def test_negative_and_large_scores_are_binned_by_clipping() -> None:
    # Three images of three people; offsets push one impostor score below zero and one above 2.5.
    emb = np.array([[0.0, 0.0], [0.3, 0.4], [2.2, 0.0]])
    half = np.array([0.45, 0.3, -0.8])
    g = Grouping.of("grp", ["a", "a", "b"])
    s = score_listed_pairs(emb, [(0, 1, False), (0, 2, False), (1, 2, False)], [g], half_offsets=half)
    expected = [0.5 - 0.75, 2.2 + 0.35, float(np.hypot(1.9, 0.4)) + 0.5]
    assert sorted(s.tail_s) == pytest.approx(sorted(expected))
    assert expected[0] < 0 and expected[1] > BIN_EDGES[-1] > expected[2]
    # -0.25 lies inside its bin (lower edge excluded, upper included); 2.55 is clipped into the last bin.
    k = int(np.nonzero(s.hist_all)[0][0])
    assert BIN_EDGES[k] < expected[0] <= BIN_EDGES[k + 1]
    assert s.hist_all[-1] == 1 and s.hist_all.sum() == 3
    # Cumulative counts at bin edges stay exact on both sides of zero.
    for edge in (-0.3, -0.1, 0.0, 2.45):
        idx = int(np.searchsorted(BIN_EDGES, edge - 1e-12))
        assert s.hist_all[:idx].sum() == sum(e <= BIN_EDGES[idx] for e in expected)
    # A score far below the range lands in the first bin rather than wrapping around.
    low = score_listed_pairs(emb, [(0, 1, False)], [g], half_offsets=np.array([0.6, 0.6, 0.0]))
    assert low.tail_s[0] < BIN_EDGES[0] and low.hist_all[0] == 1


def test_threshold_below_a_negative_closest_impostor() -> None:
    # No false match allowed: the threshold must stay below the closest impostor even when it is negative.
    imp = np.array([-0.2, 0.3, 0.5])
    tau = threshold_at_fmr(imp, 0.1)
    assert tau < -0.2
    assert threshold_from_smallest(imp, imp.size, 0.1) == tau
    assert threshold_at_fmr(np.array([0.0, 0.4]), 0.1) < 0.0


def test_listed_pairs_with_half_offsets() -> None:
    emb = np.array([[0.0, 0.0], [0.3, 0.4], [1.0, 0.0]])
    half = np.array([0.1, -0.05, 0.2])
    g = Grouping.of("grp", ["a", "a", "b"])
    s = score_listed_pairs(emb, [(0, 1, True), (0, 2, False), (1, 2, False)], [g], half_offsets=half)
    assert s.genuine_s == pytest.approx([0.5 - 0.05])
    assert sorted(s.tail_s) == pytest.approx(sorted([1.0 - 0.3, float(np.hypot(0.7, 0.4)) - 0.15]))
    with pytest.raises(ValueError):
        score_listed_pairs(emb, [(0, 1, True)], [g], half_offsets=np.zeros(2))


def test_identification_searches_by_score() -> None:
    emb, subj, groups = _data(3, subjects=16, per=3)
    rng = np.random.default_rng(9)
    half = rng.uniform(-0.15, 0.15, size=len(subj))
    g = Grouping.of("grp", groups)
    names = [f"img{i}" for i in range(len(subj))]
    sp = split(subj, 2, image_names=names)  # as evaluate_identification splits
    score = np.array(
        [[np.linalg.norm(emb[p] - emb[q]) - half[p] - half[q] for q in sp.gallery] for p in range(len(subj))]
    )
    dist = np.array([[np.linalg.norm(emb[p] - emb[q]) for q in sp.gallery] for p in range(len(subj))])
    best_n = score[sp.nonmated].min(axis=1)
    taus = {"low": float(np.quantile(best_n, 0.3)), "high": float(np.quantile(best_n, 0.7))}
    out = evaluate_identification(
        emb, subj, [g], taus, seed=2, names=names, similarity=lambda s: None, half_offsets=half
    )
    mate = score[sp.mated, sp.mate_pos]
    rank1 = score[sp.mated].argmin(axis=1) == sp.mate_pos
    assert out["rank1_identification_rate"] == pytest.approx(rank1.mean())
    crossed = 0
    for label, tau in taus.items():
        p = out["operating_points"][label]
        assert p["score"] == tau
        assert p["fpir"]["errors"] == int((best_n <= tau).sum())
        assert p["fnir"]["errors"] == int((mate > tau).sum())
        assert p["false_candidate_lists"]["candidates_total"] == int((score[sp.nonmated] <= tau).sum())
        crossed += int((dist[sp.nonmated] <= tau).sum() != (score[sp.nonmated] <= tau).sum())
        for x in p["watchlist"]["closest_examples"]:
            i, k = names.index(x["probe"]), list(sp.gallery).index(names.index(x["matched"]))
            assert x["score"] == pytest.approx(score[i, k], abs=1e-5)
            assert x["distance"] == pytest.approx(dist[i, k], abs=1e-5)
            assert x["score"] == pytest.approx(score[i].min(), abs=1e-5)  # the closest by score
    assert crossed > 0
