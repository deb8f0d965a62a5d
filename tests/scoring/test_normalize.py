"""Fair score normalization: known answers on synthetic clusters, determinism, stale parameters."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from regard.errors import InvalidParameter, ScoringMismatch
from regard.scoring.calibrate import (
    CalibrationTable,
    Part,
    Scorer,
    default_scorer,
    fit_scoring,
    is_held_apart,
)
from regard.scoring.normalize import (
    FitOptions,
    ScoreNormalizer,
    default_normalizer,
    fit_normalizer,
    histogram_threshold,
)

PINNED_UTK = [False, False, True, True, True, False, True, False]
PINNED_CELEBA = [False, True, False, True, False, False, False, False]


def two_populations(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two far-apart populations, every sample a different person: in ``dense`` impostors sit
    about 0.35 apart, in ``sparse`` about 0.7 apart (the way dlib's descriptor packs some
    populations tighter than others). Returns templates, subjects and the true population."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(2, 128))
    centre *= 3.0 / np.linalg.norm(centre, axis=1, keepdims=True)
    spread = np.array([0.35, 0.7]) / np.sqrt(2 * 128)
    truth = np.repeat([0, 1], n)
    emb = centre[truth] + rng.normal(size=(2 * n, 128)) * spread[truth, None]
    subjects = np.array([f"s{i}" for i in range(2 * n)])
    return emb.astype(np.float32), subjects, truth


def impostor_fmr(emb: np.ndarray, half: np.ndarray, members: np.ndarray, threshold: float) -> float:
    """Share of the impostor comparisons of ``members`` (against everyone) at or under ``threshold``."""
    d = np.linalg.norm(emb[:, None, :] - emb[None, :, :], axis=2) - half[:, None] - half[None, :]
    np.fill_diagonal(d, np.inf)
    rows = d[members]
    return float((rows <= threshold).sum() / (rows.size - len(rows)))


def test_histogram_threshold_is_the_weighted_quantile() -> None:
    hist = np.zeros(100)
    hist[10] = 1.0
    hist[20] = 3.0
    # A quarter of the weight sits in bin 10: FMR 0.125 is halfway through that bin.
    assert histogram_threshold(hist, 0.125) == pytest.approx(10.5 * 0.0005)
    assert histogram_threshold(hist, 0.25) == pytest.approx(11 * 0.0005)
    with pytest.raises(InvalidParameter):
        histogram_threshold(np.zeros(10), 0.1)


def fit_one_set(emb: np.ndarray, subjects: np.ndarray, **options: float) -> ScoreNormalizer:
    """A normalizer fitted on one dataset (every impostor pair counts); one clustering unless
    ``members`` says otherwise, so cluster indices are the populations'."""
    opts = FitOptions(**{"clusters": 2, "iterations": 1, "members": 1, **options})  # type: ignore[arg-type]
    return fit_normalizer(emb, subjects, np.zeros(len(emb)), model="m", version="t", options=opts)


def test_clusters_found_and_offsets_have_the_right_sign() -> None:
    emb, subjects, truth = two_populations()
    norm = fit_one_set(emb, subjects)
    clusters = norm.clusters(emb)[:, 0]
    # k-means recovers the two populations exactly (labels may be swapped).
    assert len(set(zip(clusters.tolist(), truth.tolist(), strict=True))) == 2
    dense = int(np.bincount(clusters[truth == 0]).argmax())
    sparse = 1 - dense
    # The dense population's local threshold is below the global one, the sparse one's above.
    assert norm.offsets[dense] < 0 < norm.offsets[sparse]


@pytest.mark.parametrize("target", [1e-2, 3e-2])
def test_normalized_scores_give_each_population_the_target_fmr(target: float) -> None:
    """The defining property: after normalization one threshold gives both populations the same FMR."""
    emb, subjects, truth = two_populations()
    domains = np.zeros(len(emb))
    raw = np.zeros(len(emb))
    norm = fit_normalizer(
        emb,
        subjects,
        domains,
        model="m",
        version="t",
        options=FitOptions(clusters=2, target_fmr=target, iterations=3, strength=1.0),
    )
    half = norm.half_offsets(emb)
    # Before: at the global threshold for the target, the dense population takes nearly all errors.
    d = np.linalg.norm(emb[:, None] - emb[None, :], axis=2)
    global_raw = float(np.quantile(d[np.triu_indices(len(emb), 1)], target))
    before = [impostor_fmr(emb, raw, truth == g, global_raw) for g in (0, 1)]
    assert before[0] > 10 * max(before[1], 1e-6)
    # After: the normalized threshold for the same overall FMR gives both about the target.
    s = d - half[:, None] - half[None, :]
    global_norm = float(np.quantile(s[np.triu_indices(len(emb), 1)], target))
    after = [impostor_fmr(emb, half, truth == g, global_norm) for g in (0, 1)]
    for fmr in after:
        assert fmr == pytest.approx(target, rel=0.35)


def test_fit_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    emb, subjects, _ = two_populations(n=120)
    domains = np.zeros(len(emb))
    opts = FitOptions(clusters=4, iterations=2)
    a = fit_normalizer(emb, subjects, domains, model="m", version="t", options=opts)
    b = fit_normalizer(emb, subjects, domains, model="m", version="t", options=opts)
    assert a.to_dict() == b.to_dict() and a.sha256 == b.sha256
    # The libraries that fitted it are recorded (a refit elsewhere need not give the same clusters).
    import sklearn

    assert a.provenance["libraries"] == {"numpy": np.__version__, "scikit-learn": sklearn.__version__}
    again = ScoreNormalizer.from_dict(json.loads(json.dumps(a.to_dict())))
    assert again.sha256 == a.sha256
    np.testing.assert_allclose(again.half_offsets(emb), a.half_offsets(emb), atol=1e-6)
    # Another seed gives other parameters, and a different hash.
    c = fit_normalizer(emb, subjects, domains, model="m", version="t", options=replace(opts, seed=1))
    assert c.sha256 != a.sha256


def test_impostors_stay_within_their_domain() -> None:
    """Two copies of one population in two domains: cross-domain pairs (identical templates,
    different subjects) must not count as impostors, or every threshold would collapse to 0."""
    emb, subjects, _ = two_populations(n=80)
    both = np.concatenate([emb, emb])
    subj = np.concatenate([subjects, np.char.add(subjects, "b")])
    dom = np.repeat(["a", "b"], len(emb))
    norm = fit_normalizer(
        both, subj, dom, model="m", version="t", options=FitOptions(clusters=2, iterations=1, members=1)
    )
    alone = fit_one_set(emb, subjects)
    np.testing.assert_allclose(np.sort(norm.offsets), np.sort(alone.offsets), atol=2e-3)


def test_fit_scoring_table_maps_scores_to_fmr_per_image_weighted() -> None:
    emb, subjects, truth = two_populations()
    rng = np.random.default_rng(1)
    copies = np.repeat(emb[truth == 1][:30], 3, axis=0) + rng.normal(size=(90, 128)).astype(np.float32) * 0.01
    parts = [
        Part("dense", emb[truth == 0], subjects[truth == 0]),
        Part("sparse", emb[truth == 1], subjects[truth == 1]),
        Part("identities", copies, np.repeat(np.arange(30).astype(str), 3)),  # genuine pairs for FNMR
    ]
    opts = FitOptions(clusters=3, target_fmr=1e-2, iterations=3, strength=1.0)
    norm, table, data = fit_scoring(parts, model="m", version="t", options=opts)
    assert norm is not None and data["normalizer"] == norm.sha256
    scorer = Scorer(table, norm)
    # One score threshold gives both populations (pairs within each part) about the same FMR.
    tau = scorer.score_for_fmr(1e-2)
    rates = []
    for g in (0, 1):
        e = emb[truth == g]  # pairs within each part
        h = norm.half_offsets(e)
        s = np.linalg.norm(e[:, None] - e[None, :], axis=2) - h[:, None] - h[None, :]
        rates.append(float((s[np.triu_indices(len(e), 1)] <= tau).mean()))
    assert max(rates) / min(rates) < 2.0
    assert 0.5e-2 < np.mean(rates) < 2e-2


def test_offsets_are_limited_to_the_range_most_templates_fall_in() -> None:
    """A cluster of a few images far from the rest (here 3 of 603, impostors 2.0 apart) gets an
    offset far above the others; the limit brings it back to the 99th percentile of the
    templates' offsets, which here is the sparse population's, and leaves the others alone."""
    emb, subjects, _ = two_populations()
    rng = np.random.default_rng(2)
    far = rng.normal(size=128)
    far *= 6.0 / np.linalg.norm(far)
    outliers = (far + rng.normal(size=(3, 128)) * (2.0 / np.sqrt(2 * 128))).astype(np.float32)
    pool = np.concatenate([emb, outliers])
    subj = np.concatenate([subjects, ["o1", "o2", "o3"]])
    fit = {"clusters": 3, "iterations": 1, "target_fmr": 1e-2, "strength": 1.0}
    free = fit_one_set(pool, subj, offset_quantile=1.0, **fit)
    limited = fit_one_set(pool, subj, **fit)  # the default limit, 0.99
    assert FitOptions().offset_quantile == 0.99
    tiny = int(free.clusters(outliers[:1])[0, 0])
    others = [c for c in range(3) if c != tiny]
    assert free.offsets[tiny] > 2 * max(free.offsets[others])
    # Capped at the largest offset of the clusters that hold the other 600 templates ...
    assert limited.offsets[tiny] == pytest.approx(max(free.offsets[others]))
    np.testing.assert_allclose(limited.offsets[others], free.offsets[others])
    # ... which is also the widest slack a 1:N search must allow for.
    assert limited.half_offset_range[1] == pytest.approx(max(free.offsets[others]) / 2)
    assert limited.provenance["offset_quantile"] == 0.99
    with pytest.raises(InvalidParameter, match="offset_quantile"):
        fit_one_set(pool, subj, offset_quantile=0.4)


def test_an_ensemble_averages_its_clusterings_and_still_equalises() -> None:
    """Several clusterings: a template's half offset is the mean over them of its cluster's half
    offset, the bounds a search relies on hold, and one threshold still gives both populations
    about the target FMR. Stored exactly (format 2), and a single clustering keeps format 1."""
    emb, subjects, truth = two_populations()
    target = 1e-2
    ens = fit_one_set(emb, subjects, members=3, iterations=3, target_fmr=target, strength=1.0)
    assert ens.members == 3 and ens.k == 2 and ens.centroids.shape == (6, 128)
    rows = ens.clusters(emb)
    assert rows.shape == (len(emb), 3)
    assert all(set(rows[:, j]) <= {2 * j, 2 * j + 1} for j in range(3))  # each in its own clustering
    half = ens.half_offsets(emb)
    np.testing.assert_allclose(half, 0.5 * ens.offsets[rows].mean(axis=1))
    lo, hi = ens.half_offset_range
    assert lo <= half.min() and half.max() <= hi
    d = np.linalg.norm(emb[:, None] - emb[None, :], axis=2)
    s = d - half[:, None] - half[None, :]
    tau = float(np.quantile(s[np.triu_indices(len(emb), 1)], target))
    for g in (0, 1):
        assert impostor_fmr(emb, half, truth == g, tau) == pytest.approx(target, rel=0.35)
    stored = ens.to_dict()
    assert stored["format"] == "regard-normalizer/2" and "centroids" not in stored
    again = ScoreNormalizer.from_dict(json.loads(json.dumps(stored)))
    np.testing.assert_array_equal(again.centroids, ens.centroids)
    assert again.members == 3 and again.sha256 == ens.sha256
    assert fit_one_set(emb, subjects).to_dict()["format"] == "regard-normalizer/1"
    with pytest.raises(InvalidParameter, match="do not fit together"):
        replace(ens, members=4)
    # Known answer: two clusterings of the same two centroids whose largest offsets differ. A
    # template at the first centroid takes the mean of both, which is what a search must allow for.
    axis = np.zeros((1, 128), np.float32)
    axis[0, 0] = 1.0
    made = ScoreNormalizer(
        "t", "m", np.concatenate([axis, -axis, axis, -axis]), np.array([0.2, -0.1, 0.1, 0.0]), members=2
    )
    assert made.half_offsets(np.concatenate([axis, -axis])).tolist() == pytest.approx([0.075, -0.025])
    assert made.half_offset_range == pytest.approx((-0.025, 0.075))
    with pytest.raises(InvalidParameter, match="unreadable centroids"):
        ScoreNormalizer.from_dict({**stored, "centroids_float32": "not base64!"})


def test_an_ensemble_depends_less_on_the_seed_than_one_clustering() -> None:
    """Why several clusterings: where the pool has no natural clusters, k-means cuts it differently
    for every seed, and one clustering's offsets move with the cut. Averaging five moves less."""
    rng = np.random.default_rng(5)
    # One population whose spread grows steadily along one direction: no clusters to find.
    n = 600
    axis = rng.normal(size=128)
    axis /= np.linalg.norm(axis)
    position = rng.uniform(-1.0, 1.0, size=n)
    spread = (0.35 + 0.2 * position) / np.sqrt(2 * 128)
    emb = (3.0 * position[:, None] * axis + rng.normal(size=(n, 128)) * spread[:, None]).astype(np.float32)
    subjects = np.array([f"s{i}" for i in range(n)])
    fit = {"clusters": 6, "iterations": 2, "target_fmr": 1e-2, "strength": 1.0}

    def seed_change(members: int) -> float:
        a = fit_one_set(emb, subjects, members=members, seed=0, **fit).half_offsets(emb)
        b = fit_one_set(emb, subjects, members=members, seed=100, **fit).half_offsets(emb)
        return float(np.sqrt(np.mean((a - b) ** 2)))

    assert seed_change(5) < 0.7 * seed_change(1)


def test_too_few_templates_for_the_clusters_is_a_typed_error() -> None:
    emb, subjects, _ = two_populations(n=5)
    with pytest.raises(InvalidParameter, match="too few templates"):
        fit_normalizer(
            emb, subjects, np.zeros(len(emb)), model="m", version="t", options=FitOptions(clusters=50)
        )


def test_stale_parameters_are_refused() -> None:
    """A normalizer (or table) made for another model, or a table made on another normalizer's
    scores, is refused with an error that says what to do."""
    shipped = default_scorer()
    assert shipped.normalizer is not None
    other_model = replace(shipped.normalizer, model="some_other_model:1:0000")
    with pytest.raises(ScoringMismatch, match="regard calibrate"):
        other_model.check_model(shipped.table.model)
    with pytest.raises(ScoringMismatch):
        Scorer(shipped.table, replace(shipped.normalizer, offsets=shipped.normalizer.offsets + 0.01))
    with pytest.raises(ScoringMismatch):
        Scorer(shipped.table, None)  # the shipped table maps normalized scores, not raw distances
    with pytest.raises(ScoringMismatch, match="fitted for"):
        shipped.check_model("dlib_face_recognition_resnet_model_v1:2:ffffffffffffffff")


def test_engine_refuses_shipped_scoring_for_templates_made_without_the_flip() -> None:
    from regard.config import Settings
    from regard.face.engine import Engine

    with pytest.raises(ScoringMismatch, match="flip"):
        _ = Engine(Settings.from_env(embed_flip=False)).scorer
    assert Engine(Settings.from_env(embed_flip=True)).scorer.identity() == default_scorer().identity()


def test_unreadable_scoring_folders_are_deployment_errors(tmp_path: Path) -> None:
    """REGARD_SCORING_DIR pointing at nothing, or at files that are not parameters, fails with
    ModelUnavailable naming the file (a server-side fault), never a KeyError or a silent default."""
    from regard.errors import ModelUnavailable
    from regard.scoring.calibrate import load_scorer

    with pytest.raises(ModelUnavailable, match=r"calibration\.json"):
        load_scorer(tmp_path / "missing")
    (tmp_path / "calibration.json").write_text("{not json")
    with pytest.raises(ModelUnavailable, match="not a calibration table"):
        load_scorer(tmp_path)
    (tmp_path / "calibration.json").write_text("{}")
    with pytest.raises(ModelUnavailable, match="not a calibration table"):
        load_scorer(tmp_path)
    shipped = default_scorer()
    (tmp_path / "calibration.json").write_text(json.dumps({**_table_dict(shipped.table)}))
    (tmp_path / "normalizer.json").write_text("[1, 2]")
    with pytest.raises(ModelUnavailable, match="not a score normalizer"):
        load_scorer(tmp_path)
    assert shipped.normalizer is not None
    shipped.normalizer.save(tmp_path / "normalizer.json")
    assert load_scorer(tmp_path).identity()["normalizer_sha256"] == shipped.normalizer.sha256


def _table_dict(table: CalibrationTable) -> dict[str, object]:
    from importlib import resources

    data: dict[str, object] = json.loads(
        resources.files("regard").joinpath("data/calibration.json").read_text()
    )
    assert data["version"] == table.version
    return data


def test_engine_refuses_a_normalizer_for_another_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from regard.face import engine as engine_module
    from regard.face.engine import Engine

    shipped = default_scorer()
    assert shipped.normalizer is not None
    stale_norm = replace(shipped.normalizer, model="another_model:1:abcdef0123456789")
    data = {
        "version": "stale",
        "model": "another_model:1:abcdef0123456789",
        "dataset": "x",
        "normalizer": stale_norm.sha256,
        "rows": [{"distance": 0.5, "fmr": 1e-3, "fnmr": 0.1}, {"distance": 1.0, "fmr": 1.0, "fnmr": 0.0}],
        "tail": {"slope": 10.0, "distance": 0.5, "log10_fmr": -3.0},
        "counts": {"genuine": 1, "impostor": 1},
    }
    stale = Scorer(CalibrationTable.from_dict(data), stale_norm)
    monkeypatch.setattr(engine_module, "default_scorer", lambda: stale)
    with pytest.raises(ScoringMismatch, match="another_model"):
        _ = Engine().scorer


def test_shipped_parameters_carry_provenance() -> None:
    norm = default_normalizer()
    scorer = default_scorer()
    assert scorer.table.normalizer == norm.sha256
    assert norm.model == scorer.table.model
    prov = norm.provenance
    assert prov["clusters"] == norm.k and prov["members"] == norm.members == 5
    assert len(norm.centroids) == norm.k * norm.members and "datasets" in prov and "method" in prov
    ident = scorer.identity()
    assert ident["normalizer_sha256"] == norm.sha256 and ident["calibration_sha256"] == scorer.table.sha256
    # Similarity 80 means a stricter score than 60, and the scale round-trips.
    assert scorer.score_for_similarity(80) < scorer.score_for_similarity(60)
    assert scorer.similarity(scorer.score_for_similarity(70)) == pytest.approx(70, abs=0.01)


def test_held_apart_splits_are_stable() -> None:
    # celeba_dev keeps its third, other sets half.
    ids = [f"id{i}" for i in range(3000)]
    celeba = np.mean([is_held_apart("celeba_dev", s) for s in ids])
    other = np.mean([is_held_apart("fairface_train", s) for s in ids])
    assert 0.30 < celeba < 0.37 and 0.46 < other < 0.54
    # Pinned: a changed hash would silently mix fitting data into every held-apart figure.
    assert [is_held_apart("utkface", f"img{i}.jpg") for i in range(8)] == PINNED_UTK
    assert [is_held_apart("celeba_dev", str(i)) for i in range(8)] == PINNED_CELEBA


@pytest.mark.dataset
def test_fitting_parts_are_the_ones_the_shipped_parameters_saw(datasets: Path) -> None:
    """The split here gives exactly the image and subject counts the shipped normalizer records."""
    import csv

    shipped = default_normalizer().provenance["datasets"]
    folders = {"celeba_dev": "recognition", "fairface_train": "demographics", "orl": "recognition"}
    for name, kind in folders.items():
        with open(datasets / kind / name / "manifest.csv") as f:
            rows = list(csv.DictReader(f))
        key = "subject" if "subject" in rows[0] else "path"
        fitting = [r for r in rows if not is_held_apart(name, r[key])]
        # Shipped counts are of images with a face found: at most the fitting rows, nearly all.
        assert 0.98 * len(fitting) <= shipped[name]["images"] <= len(fitting), name
        if key == "subject":
            assert shipped[name]["subjects"] == len({r["subject"] for r in fitting}), name
