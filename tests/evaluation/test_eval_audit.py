"""The audit, report and gates on synthetic templates (the engine is exercised in test_eval_cli)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from regard.calibrate import default_table
from regard.errors import InvalidParameter
from regard.evaluation.audit import AuditOptions, run_audit
from regard.evaluation.dataset import NO_FACE, OK, Dataset, Templates
from regard.evaluation.gates import check_gates, load_gates
from regard.evaluation.report import SECTIONS, render_html, write_report

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


def _options(**kw: object) -> AuditOptions:
    base: dict[str, object] = {"groups": ["race", "sex"], "targets": [1e-2, 1e-3], "bootstrap": 200}
    base.update(kw)
    return AuditOptions(**base)  # type: ignore[arg-type]


def test_audit_numbers_are_consistent() -> None:
    ds, t = _synthetic()
    rep = run_audit(ds, t, SYSTEM, _options(), default_table()).report
    card = rep["data_card"]
    assert card["acquired"] == 238
    assert card["not_acquired"] == 2
    n = card["acquired"]
    assert card["genuine_pairs"] + card["impostor_pairs"] == n * (n - 1) // 2
    kinds = [p["kind"] for p in rep["operating_points"]]
    assert kinds == ["target", "target", "similarity80", "floor"]
    p = rep["operating_points"][0]
    # The global threshold admits at most 1% of impostors.
    assert p["global"]["fmr"]["errors"] <= 0.01 * card["impostor_pairs"]
    # Per-group FMR trials are the same-group impostor pairs of the data card.
    for g, v in p["by_group"]["race"].items():
        assert v["fmr"]["trials"] == card["by_group"]["race"][g]["impostor_pairs_same_group"]
        lo, hi = v["fnmr"]["ci95_clopper_pearson"]
        assert lo <= (v["fnmr"]["rate"] or 0) <= hi
    diff = p["differentials"]["race"]["fnmr"]
    assert diff["worst_group"] == "b"
    assert diff["max_over_min"] >= diff["max_over_geomean"] >= 1.0
    cross = p["cross_group_fmr"]["race"]
    assert cross["groups"] == ["a", "b"]
    assert cross["impostor_pairs"][0][0] == card["by_group"]["race"]["a"]["impostor_pairs_same_group"]
    acq = rep["acquisition"]["by_group"]["all"]["all"]["failure_to_acquire"]
    assert (acq["errors"], acq["trials"]) == (2, 240)
    ident = rep["identification"]
    assert ident["gallery_size"] == 30
    assert ident["mated_probes"] + ident["nonmated_probes"] + ident["gallery_size"] == n
    for point in ident["operating_points"].values():
        w = point["watchlist"]
        assert w["innocent_probes"] == ident["nonmated_probes"]
        assert sum(v["matched"] for v in w["by_group"]["race"].values()) == w["matched"]


def test_audit_is_deterministic_for_a_seed() -> None:
    ds, t = _synthetic()
    a = run_audit(ds, t, SYSTEM, _options(seed=3), default_table()).report
    b = run_audit(ds, t, SYSTEM, _options(seed=3), default_table()).report
    c = run_audit(ds, t, SYSTEM, _options(seed=4), default_table()).report
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert json.dumps(a["identification"], sort_keys=True) != json.dumps(c["identification"], sort_keys=True)


def test_audit_without_shipped_table_uses_measured_points() -> None:
    ds, t = _synthetic()
    rep = run_audit(ds, t, SYSTEM, _options(), None).report
    labels = [p["label"] for p in rep["operating_points"]]
    assert any("measured on this data" in x for x in labels)
    assert rep["system"]["calibration_table"] is None


def test_report_files_and_sections(tmp_path: Path) -> None:
    ds, t = _synthetic()
    data = run_audit(ds, t, SYSTEM, _options(), default_table())
    jpath, hpath = write_report(data, tmp_path)
    assert json.loads(jpath.read_text())["dataset"]["name"] == "synthetic"
    page = hpath.read_text()
    for sid, _ in SECTIONS:
        assert f'id="{sid}"' in page
    assert page.count("data:image/png;base64,") >= 5
    assert "<b>Summary.</b>" in page and "At similarity 80 (shipped table)" in page
    assert "http://" not in page and "https://" not in page  # self-contained
    assert render_html(data) == page  # the file is the rendering, and rendering is deterministic


def test_gates_pass_and_fail(tmp_path: Path) -> None:
    ds, t = _synthetic()
    rep = run_audit(ds, t, SYSTEM, _options(), default_table()).report
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
    rep = run_audit(listed, t, SYSTEM, _options(targets=[0.5]), default_table()).report
    card = rep["data_card"]
    # Image 5 has no face: its pair is dropped; the rest are scored as listed.
    assert (card["genuine_pairs"], card["impostor_pairs"]) == (3, 3)
    point = rep["operating_points"][0]
    assert point["global"]["fmr"]["trials"] == 3
    assert point["global"]["fmr"]["errors"] <= 1
