"""The audit, report and gates on synthetic templates (the engine is exercised in test_eval_cli)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from regard.errors import InvalidParameter
from regard.evaluation import scorer_for
from regard.evaluation.bias import BiasOptions, run_bias_audit
from regard.evaluation.dataset import NO_FACE, OK, Dataset, Templates
from regard.evaluation.gates import check_gates, load_gates
from regard.evaluation.metrics import bootstrap_fmr, bootstrap_fnmr, threshold_at_fmr
from regard.evaluation.report import SECTIONS, render_html, write_report
from regard.scoring.calibrate import CalibrationTable, Scorer, raw_scorer
from regard.scoring.normalize import ScoreNormalizer

SYSTEM = {"embedding_model": "synthetic", "detector": "none"}


def _synthetic(subjects: int = 60, per: int = 4, seed: int = 0) -> tuple[Dataset, Templates]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(subjects, 16))
    centres *= 0.55 / np.linalg.norm(centres, axis=1, keepdims=True)
    subj = np.repeat(np.arange(subjects), per)
    # Group "b" is noisier, so it has more false non-matches.
    race = np.where(subj % 3 == 0, "b", "a")
    noise = np.where(race == "b", 0.12, 0.07)[:, None]
    emb = (centres[subj] + rng.normal(size=(subj.size, 16)) * noise / 4).astype(np.float32)
    status = np.full(subj.size, OK)
    status[[5, 17]] = NO_FACE
    emb[[5, 17]] = np.nan
    n = subj.size
    ds = Dataset(
        Path("/synthetic"),
        "synthetic",
        [f"img{i}.jpg" for i in range(n)],
        [f"s{s}" for s in subj],
        True,
        {
            "race": race.tolist(),
            "sex": ["F" if s % 2 else "M" for s in subj],
            "age": [str(20 + s) for s in subj],
        },
    )
    t = Templates(emb, status, np.full(n, 80.0), np.full(n, 50.0), np.full(n, 50.0), 0.0, False)
    return ds, t


def _raw_table_dict() -> dict[str, Any]:
    """The shipped raw-distance table (celeba_dev) as a dict."""
    return json.loads(resources.files("regard").joinpath("data/calibration-raw.json").read_text())


def _scorer(t: Templates, offsets: Sequence[float] = (0.06, -0.05, 0.0, 0.03)) -> Scorer:
    """A normalized scorer for the synthetic 16-d templates: centroids at some of the templates,
    the given cluster offsets, and the shipped raw table re-labelled as made for its scores."""
    emb = t.embeddings[t.acquired]
    centroids = emb[np.linspace(0, len(emb) - 1, len(offsets)).astype(int)]
    norm = ScoreNormalizer(
        version="synthetic",
        model="synthetic-model",
        centroids=centroids,
        offsets=np.asarray(offsets, np.float64),
    )
    table = _raw_table_dict()
    table.update(model="synthetic-model", normalizer=norm.sha256, version="synthetic-table")
    return Scorer(CalibrationTable.from_dict(table), norm)


def _options(**kw: object) -> BiasOptions:
    base: dict[str, object] = {"groups": ["race", "sex"], "targets": [1e-2, 1e-3], "bootstrap": 200}
    base.update(kw)
    return BiasOptions(**base)  # type: ignore[arg-type]


def _per_subject(
    ds: Dataset, t: Templates, scorer: Scorer, tau: float, race: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One pair at a time, among the images of ``race`` (None: all): images per subject and the
    false-matching pairs as rows of subject indices (as :func:`bootstrap_fmr` takes them); false
    non-matches and genuine pairs per subject (as :func:`bootstrap_fnmr`). Subjects in name order."""
    acquired = [int(i) for i in np.nonzero(t.acquired)[0] if race is None or ds.labels["race"][i] == race]
    emb = t.embeddings[acquired].astype(np.float64)
    half = scorer.half_offsets(t.embeddings[acquired])
    names = sorted({ds.subjects[i] for i in acquired})
    index = {name: k for k, name in enumerate(names)}
    images = np.zeros(len(names))
    errors, genuine = np.zeros(len(names)), np.zeros(len(names))
    false_matches = []
    for i in acquired:
        images[index[ds.subjects[i]]] += 1
    for (a, i), (b, j) in itertools.combinations(enumerate(acquired), 2):
        score = float(np.linalg.norm(emb[a] - emb[b]) - half[a] - half[b])
        assert abs(score - tau) > 1e-5  # no pair so near the threshold that rounding could move it
        s, u = index[ds.subjects[i]], index[ds.subjects[j]]
        if s == u:
            errors[s] += score > tau
            genuine[s] += 1
        elif score <= tau:
            false_matches.append(sorted((s, u)))
    return images, np.array(false_matches, dtype=np.int64).reshape(-1, 2), errors, genuine


def test_audit_numbers_are_consistent() -> None:
    ds, t = _synthetic()
    rep = run_bias_audit(ds, t, SYSTEM, _options(), _scorer(t)).report
    card = rep["data_card"]
    assert card["acquired"] == 238
    assert card["not_acquired"] == 2
    n = card["acquired"]
    assert card["genuine_pairs"] + card["impostor_pairs"] == n * (n - 1) // 2
    kinds = [p["kind"] for p in rep["operating_points"]]
    assert kinds == ["target", "target", "similarity80", "similarity60", "floor"]
    p = rep["operating_points"][0]
    # The global threshold admits at most 1% of impostors.
    assert p["global"]["fmr"]["errors"] <= 0.01 * card["impostor_pairs"]
    # Per-group FMR trials are the same-group impostor pairs of the data card.
    for g, v in p["by_group"]["race"].items():
        assert v["fmr"]["trials"] == card["by_group"]["race"][g]["impostor_pairs_same_group"]
        lo, hi = v["fnmr"]["ci95_clopper_pearson"]
        assert v["fnmr"]["trials"] > 0 and v["fnmr"]["rate"] is not None, g  # every group has genuine pairs
        assert lo <= v["fnmr"]["rate"] <= hi
    diff = p["differentials"]["race"]["fnmr"]
    assert diff["worst_group"] == "b"
    assert diff["max_over_min"] >= diff["max_over_geomean"] >= 1.0
    # Every differential has a simultaneous interval around its estimate.
    for point in rep["operating_points"]:
        for spec, d in point["differentials"].items():
            for metric in ("fmr", "fnmr"):
                x = d[metric]
                if x["max_over_min"] is None:
                    assert x["ci95_simultaneous"] is None
                    continue
                for key in ("max_over_min", "max_over_geomean"):
                    lo, hi = x["ci95_simultaneous"][key]
                    where = (point["label"], spec, metric, key)
                    assert 1.0 <= lo <= x[key] * (1 + 1e-9) and x[key] <= hi * (1 + 1e-9), where
    # One set of replicates per group: a group's own FNMR interval is the percentile interval of
    # the resamples drawn with (seed, its index), those its differential reads; "all" keeps the seed.
    told = 0
    for point in rep["operating_points"]:
        for k, (g, v) in enumerate(sorted(point["by_group"]["race"].items())):
            images, false_matches, errs, pairs = _per_subject(ds, t, _scorer(t), point["score"], g)
            own_fmr = bootstrap_fmr(images, false_matches, replicates=200, seed=(0, k))
            own_fnmr = bootstrap_fnmr(errs, pairs, replicates=200, seed=(0, k))
            assert v["fmr"]["ci95_bootstrap_subjects"] == pytest.approx(own_fmr)
            assert v["fnmr"]["ci95_bootstrap_subjects"] == pytest.approx(own_fnmr)
            if len(false_matches):  # the seed tells (without errors the interval is (0, 0))
                told += own_fmr != pytest.approx(bootstrap_fmr(images, false_matches, replicates=200, seed=0))
    assert told >= 3
    images, false_matches, errs, pairs = _per_subject(ds, t, _scorer(t), p["score"], None)
    assert p["global"]["fmr"]["ci95_bootstrap_subjects"] == pytest.approx(
        bootstrap_fmr(images, false_matches, replicates=200, seed=0)
    )
    unbooted = run_bias_audit(ds, t, SYSTEM, _options(bootstrap=0), _scorer(t)).report
    assert unbooted["operating_points"][0]["differentials"]["race"]["fnmr"]["ci95_simultaneous"] is None
    cross = p["cross_group_fmr"]["race"]
    assert cross["groups"] == ["a", "b"]
    assert cross["impostor_pairs"][0][0] == card["by_group"]["race"]["a"]["impostor_pairs_same_group"]
    acq = rep["acquisition"]["by_group"]["all"]["all"]["failure_to_acquire"]
    assert (acq["errors"], acq["trials"]) == (2, 240)
    # 2 failures in 240 images: fewer than three are expected in either group (160 and 80 images
    # at 0.83%), so neither enters the failure-to-acquire differential.
    fta = rep["acquisition"]["differentials"]["race"]["failure_to_acquire"]
    assert fta["max_over_min"] is None and fta["ci95_simultaneous"] is None
    assert "all" not in rep["acquisition"]["differentials"]
    ident = rep["identification"]
    assert ident["gallery_size"] == 30
    assert ident["mated_probes"] + ident["nonmated_probes"] + ident["gallery_size"] == n
    for point in ident["operating_points"].values():
        w = point["watchlist"]
        assert w["innocent_probes"] == ident["nonmated_probes"]
        assert sum(v["matched"] for v in w["by_group"]["race"].values()) == w["matched"]


def test_failure_to_acquire_differential(tmp_path: Path) -> None:
    ds, t = _synthetic()
    race = np.array(ds.labels["race"])
    a, b = np.nonzero(race == "a")[0], np.nonzero(race == "b")[0]
    failed = np.concatenate([a[:8], b[:2]])
    status = np.full(len(race), OK)
    status[failed] = NO_FACE
    emb = t.embeddings.copy()
    emb[failed] = np.nan
    tiny = a[-3:]  # three images, none failed: too few to expect three failures at 10/240
    race[tiny] = "c"
    ds.labels["race"] = race.tolist()
    t = Templates(emb, status, t.face_height, t.sharpness, t.brightness, t.seconds, t.cached)
    rep = run_bias_audit(ds, t, SYSTEM, _options(), _scorer(t)).report
    by = rep["acquisition"]["by_group"]["race"]
    assert [by[g]["failure_to_acquire"]["errors"] for g in ("a", "b", "c")] == [8, 2, 0]
    fta = rep["acquisition"]["differentials"]["race"]["failure_to_acquire"]
    # c (0 of 3, which half a failure would make 17%) is left out: a 8/157 against b 2/80.
    assert fta["groups_compared"] == ["a", "b"]
    assert fta["max_over_min"] == pytest.approx((8 / 157) / (2 / 80))
    assert (fta["worst_group"], fta["best_group"]) == ("a", "b")
    lo, hi = fta["ci95_simultaneous"]["max_over_min"]
    assert lo == 1.0 and hi > 10  # two failures in b and eight in a cannot pin the ratio down
    f = tmp_path / "gates.toml"
    f.write_text(
        '[[gate]]\nname = "fta"\nmetric = "fta_max_over_min"\nbound = "upper95"\nmax = 1000\n',
        encoding="utf-8",
    )
    gate = check_gates(rep, load_gates(f), str(f))["results"][0]
    assert gate["passed"] and gate["value"] == pytest.approx(hi)


def test_audit_is_deterministic_for_a_seed() -> None:
    ds, t = _synthetic()
    a = run_bias_audit(ds, t, SYSTEM, _options(seed=3), _scorer(t)).report
    b = run_bias_audit(ds, t, SYSTEM, _options(seed=3), _scorer(t)).report
    c = run_bias_audit(ds, t, SYSTEM, _options(seed=4), _scorer(t)).report
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert json.dumps(a["identification"], sort_keys=True) != json.dumps(c["identification"], sort_keys=True)


def test_audit_without_shipped_table_uses_measured_points() -> None:
    ds, t = _synthetic()
    rep = run_bias_audit(ds, t, SYSTEM, _options(), None).report
    labels = [p["label"] for p in rep["operating_points"]]
    assert any("measured on this data" in x for x in labels)
    assert rep["system"]["calibration_table"] is None


def test_report_files_and_sections(tmp_path: Path) -> None:
    ds, t = _synthetic()
    data = run_bias_audit(ds, t, SYSTEM, _options(), _scorer(t))
    jpath, hpath = write_report(data, tmp_path)
    assert json.loads(jpath.read_text())["dataset"]["name"] == "synthetic"
    page = hpath.read_text()
    for sid, _ in SECTIONS:
        assert f'id="{sid}"' in page
    assert page.count("data:image/png;base64,") >= 5
    assert "<b>Summary.</b>" in page and "At similarity 80 (shipped table)" in page
    differentials = page.split('id="differentials"')[1].split("</section>")[0]
    assert "95% [" in differentials  # the ratios' intervals are shown
    assert "http://" not in page and "https://" not in page  # self-contained
    assert render_html(data) == page  # the file is the rendering, and rendering is deterministic


def test_gates_pass_and_fail(tmp_path: Path) -> None:
    ds, t = _synthetic()
    rep = run_bias_audit(ds, t, SYSTEM, _options(), _scorer(t)).report
    f = tmp_path / "gates.toml"
    f.write_text(
        """
[[gate]]
name = "FNMR differential by race"
metric = "fnmr_max_over_geomean"
grouping = "race"
at = "1e-2"
max = 1.0001

[[gate]]
name = "lenient FMR differential"
metric = "fmr_max_over_geomean"
at = "similarity80"
max = 1000
allow_missing = true

[[gate]]
name = "FTA"
metric = "failure_to_acquire"
grouping = "all"
max = 0.5

[[gate]]
name = "unmeasured point"
metric = "fmr"
at = "1e-7"
max = 1
""",
        encoding="utf-8",
    )
    result = check_gates(rep, load_gates(f), str(f))
    by_name = {r["name"]: r for r in result["results"]}
    assert not result["passed"]
    assert not by_name["FNMR differential by race"]["passed"]
    assert by_name["FNMR differential by race"]["value"] > 1.0001
    assert by_name["FTA"]["passed"]
    assert by_name["FTA"]["value"] == pytest.approx(2 / 240)
    assert by_name["lenient FMR differential"]["passed"]
    assert not by_name["unmeasured point"]["passed"]
    assert "not measured" in by_name["unmeasured point"]["reason"]


def test_gates_on_the_ends_of_a_differential_interval(tmp_path: Path) -> None:
    ds, t = _synthetic()
    rep = run_bias_audit(ds, t, SYSTEM, _options(), _scorer(t)).report
    point = next(p for p in rep["operating_points"] if p["kind"] == "similarity60")
    lo, hi = point["differentials"]["race"]["fmr"]["ci95_simultaneous"]["max_over_min"]
    assert lo < hi
    f = tmp_path / "gates.toml"
    f.write_text(
        f"""
[[gate]]
name = "upper"
metric = "fmr_max_over_min"
grouping = "race"
at = "similarity60"
bound = "upper95"
max = {hi * 0.999}

[[gate]]
name = "lower"
metric = "fmr_max_over_min"
grouping = "race"
at = "similarity60"
bound = "lower95"
max = {hi * 0.999}
""",
        encoding="utf-8",
    )
    gates = load_gates(f)
    by_name = {r["name"]: r for r in check_gates(rep, gates, str(f))["results"]}
    assert by_name["upper"]["value"] == pytest.approx(hi) and not by_name["upper"]["passed"]
    assert by_name["lower"]["value"] == pytest.approx(lo) and by_name["lower"]["passed"]
    # Without intervals the bound cannot be measured, and the gate fails.
    unbooted = run_bias_audit(ds, t, SYSTEM, _options(bootstrap=0), _scorer(t)).report
    missing = {r["name"]: r for r in check_gates(unbooted, gates, str(f))["results"]}["upper"]
    assert not missing["passed"] and "bootstrap" in missing["reason"]
    f.write_text(
        '[[gate]]\nname = "fta"\nmetric = "fta_max_over_min"\ngrouping = "race"\n'
        'bound = "upper95"\nmax = 1000\n',
        encoding="utf-8",
    )
    fta = check_gates(rep, load_gates(f), str(f))["results"][0]
    # Two failures in all: no group is large enough to compare, and the gate says why.
    assert not fta["passed"] and "fewer than two estimable groups" in fta["reason"]
    for bad in ('metric = "fmr"\nbound = "upper95"', 'metric = "fmr_max_over_min"\nbound = "upper90"'):
        f.write_text(f"[[gate]]\n{bad}\nmax = 1\n", encoding="utf-8")
        with pytest.raises(InvalidParameter, match="bound"):
            load_gates(f)


def test_gates_file_errors(tmp_path: Path) -> None:
    f = tmp_path / "g.toml"
    f.write_text('[[gate]]\nmetric = "nonsense"\nmax = 1\n', encoding="utf-8")
    with pytest.raises(InvalidParameter):
        load_gates(f)
    f.write_text('[[gate]]\nmetric = "fmr"\n', encoding="utf-8")
    with pytest.raises(InvalidParameter):
        load_gates(f)
    f.write_text("not toml [", encoding="utf-8")
    with pytest.raises(InvalidParameter):
        load_gates(f)


def test_audit_on_a_pairs_list() -> None:
    ds, t = _synthetic(subjects=20, per=3)
    pairs = [
        (0, 1, True),
        (0, 2, True),
        (3, 4, True),
        (0, 3, False),
        (1, 6, False),
        (2, 9, False),
        (5, 6, False),
    ]
    listed = Dataset(ds.root, "pairs", ds.paths, ds.subjects, True, ds.labels, pairs)
    rep = run_bias_audit(listed, t, SYSTEM, _options(targets=[0.5]), _scorer(t)).report
    card = rep["data_card"]
    # Image 5 has no face: its pair is dropped; the rest are scored as listed.
    assert (card["genuine_pairs"], card["impostor_pairs"]) == (3, 3)
    point = rep["operating_points"][0]
    assert point["global"]["fmr"]["trials"] == 3
    assert point["global"]["fmr"]["errors"] <= 1


def _brute_force(
    t: Templates, scorer: Scorer | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Genuine and impostor scores and distances of every acquired pair, one pair at a time."""
    ds, _ = _synthetic()
    acq = np.nonzero(t.acquired)[0]
    emb = t.embeddings[acq].astype(np.float64)
    half = scorer.half_offsets(t.embeddings[acq]) if scorer is not None else np.zeros(len(acq))
    gen_s, imp_s, gen_d, imp_d = [], [], [], []
    for a, b in itertools.combinations(range(len(acq)), 2):
        d = float(np.linalg.norm(emb[a] - emb[b]))
        s = d - half[a] - half[b]
        if ds.subjects[acq[a]] == ds.subjects[acq[b]]:
            gen_s.append(s)
            gen_d.append(d)
        else:
            imp_s.append(s)
            imp_d.append(d)
    return np.array(gen_s), np.array(imp_s), np.array(gen_d), np.array(imp_d)


def test_audit_measures_scores_not_distances() -> None:
    ds, t = _synthetic()
    scorer = _scorer(t)
    assert np.ptp(scorer.half_offsets(t.embeddings[t.acquired])) > 0.05  # the offsets do shift pairs
    gen_s, imp_s, gen_d, imp_d = _brute_force(t, scorer)
    options = _options()
    rep = run_bias_audit(ds, t, SYSTEM, options, scorer).report
    points = {p["kind"] + str(p["target_fmr"]): p for p in rep["operating_points"]}
    for target in (1e-2, 1e-3):
        assert points[f"target{target}"]["score"] == pytest.approx(threshold_at_fmr(imp_s, target))
    sim80 = next(p for p in rep["operating_points"] if p["kind"] == "similarity80")
    assert sim80["score"] == pytest.approx(scorer.score_for_similarity(80.0))
    sim60 = next(p for p in rep["operating_points"] if p["kind"] == "similarity60")
    assert sim60["score"] == pytest.approx(scorer.score_for_similarity(60.0))
    assert sim60["shipped_fmr"] == pytest.approx(1e-3, rel=1e-6) and sim60["score"] > sim80["score"]
    floor = next(p for p in rep["operating_points"] if p["kind"] == "floor")
    gallery = rep["identification"]["gallery_size"]
    floor_fmr = min(options.fmr_floor, options.fpir_floor / gallery)
    assert floor["score"] == pytest.approx(scorer.score_for_fmr(floor_fmr))
    assert floor["shipped_fmr"] == pytest.approx(floor_fmr, rel=1e-6)
    crossed = 0
    for p in rep["operating_points"]:
        tau = p["score"]
        assert p["global"]["fmr"]["errors"] == int((imp_s <= tau).sum())
        assert p["global"]["fnmr"]["errors"] == int((gen_s > tau).sum())
        assert p["shipped_similarity"] == pytest.approx(scorer.similarity(tau))
        crossed += int((imp_s <= tau).sum() != (imp_d <= tau).sum()) + int(
            (gen_s > tau).sum() != (gen_d > tau).sum()
        )
    assert crossed > 0  # at least one count depends on the offsets, so the test tells scores from distances
    # The calibration rows count impostor scores.
    for row in rep["calibration"]["rows"]:
        assert row["measured_false_matches"] == int((imp_s <= row["score"] + 1e-9).sum())
    # Watchlist examples give the score and the distance it came from.
    for point in rep["identification"]["operating_points"].values():
        for x in point["watchlist"]["closest_examples"]:
            i, j = ds.paths.index(x["probe"]), ds.paths.index(x["matched"])
            d = float(np.linalg.norm(t.embeddings[i].astype(np.float64) - t.embeddings[j]))
            h = scorer.half_offsets(t.embeddings[[i, j]])
            assert x["distance"] == pytest.approx(d, abs=1e-5)
            assert x["score"] == pytest.approx(d - h.sum(), abs=1e-5)


def test_raw_and_normalized_scoring_differ_and_raw_is_the_distance() -> None:
    ds, t = _synthetic()
    normalized = _scorer(t)
    raw = scorer_for("raw")
    assert raw is not None and not raw.normalized
    _, imp_s, _, imp_d = _brute_force(t, normalized)
    a = run_bias_audit(ds, t, SYSTEM, _options(), normalized).report
    b = run_bias_audit(ds, t, SYSTEM, _options(), raw).report
    ta = [p["score"] for p in a["operating_points"] if p["kind"] == "target"]
    tb = [p["score"] for p in b["operating_points"] if p["kind"] == "target"]
    assert tb == pytest.approx([threshold_at_fmr(imp_d, x) for x in (1e-2, 1e-3)])
    assert ta == pytest.approx([threshold_at_fmr(imp_s, x) for x in (1e-2, 1e-3)])
    assert ta != pytest.approx(tb)
    # Raw scoring: every watchlist example's score is its distance.
    for point in b["identification"]["operating_points"].values():
        for x in point["watchlist"]["closest_examples"]:
            assert x["score"] == x["distance"]


def test_report_records_the_scoring_identity(tmp_path: Path) -> None:
    ds, t = _synthetic()
    scorer = _scorer(t)
    data = run_bias_audit(ds, t, SYSTEM, _options(bootstrap=0), scorer)
    rec = data.report["system"]["scoring"]
    assert rec["mode"] == "normalized"
    assert {k: rec[k] for k in scorer.identity()} == scorer.identity()
    assert rec["normalizer_sha256"] == scorer.normalizer.sha256  # type: ignore[union-attr]
    assert rec["calibration_sha256"] == scorer.table.sha256 and len(rec["calibration_sha256"]) == 64
    assert data.report["system"]["embedding_model"] == "synthetic"  # next to the model identity
    jpath, hpath = write_report(data, tmp_path)
    assert json.loads(jpath.read_text())["system"]["scoring"] == rec
    page = hpath.read_text()
    assert scorer.normalizer.sha256 in page and scorer.table.sha256 in page  # type: ignore[union-attr]
    assert "fair score normalization" in page
    raw = run_bias_audit(
        ds, t, SYSTEM, _options(bootstrap=0), raw_scorer(CalibrationTable.from_dict(_raw_table_dict()))
    )
    rec = raw.report["system"]["scoring"]
    assert rec["mode"] == "raw" and rec["normalizer_sha256"] == "" and rec["scoring"] != scorer.key
    none = run_bias_audit(ds, t, SYSTEM, _options(bootstrap=0), None).report["system"]["scoring"]
    assert none["mode"] == "raw" and none["calibration_installed"] is False


def test_negative_scores_are_counted_and_drawn(tmp_path: Path) -> None:
    ds, t = _synthetic()
    scorer = _scorer(t, offsets=(0.7, -0.05, 0.0, 0.03))  # pairs in the first cluster shift by -0.7
    gen_s, imp_s, _, _ = _brute_force(t, scorer)
    assert gen_s.min() < 0  # the case under test
    data = run_bias_audit(ds, t, SYSTEM, _options(bootstrap=0), scorer)
    assert data.scores is not None
    assert np.sort(data.scores.genuine_s) == pytest.approx(np.sort(gen_s))
    assert int(data.scores.hist_all.sum()) == imp_s.size
    for p in data.report["operating_points"]:
        assert p["global"]["fnmr"]["errors"] == int((gen_s > p["score"]).sum())
        assert p["global"]["fmr"]["errors"] == int((imp_s <= p["score"]).sum())
    _, hpath = write_report(data, tmp_path)
    assert hpath.read_text().count("data:image/png;base64,") >= 5
