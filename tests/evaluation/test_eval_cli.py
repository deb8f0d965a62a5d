"""``regard evaluate`` end to end with the real engine, and the HTML report in headless Chromium."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from chromium import CHROMIUM, run_chromium
from regard.cli.main import main
from regard.evaluation import scorer_for
from regard.evaluation.metrics import threshold_at_fmr
from regard.scoring.calibrate import default_scorer


@pytest.fixture(scope="module")
def small_set(fr_images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four public-domain portraits (three of one person) with an invented camera label."""
    folder = tmp_path_factory.mktemp("evalset")
    rows = ["path,subject,camera"]
    for name, subject, camera in (
        ("obama.jpg", "obama", "A"),
        ("obama2.jpg", "obama", "B"),
        ("obama3.jpg", "obama", "A"),
        ("biden.jpg", "biden", "B"),
    ):
        shutil.copy(fr_images / name, folder / name)
        rows.append(f"{name},{subject},{camera}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def evaluated(small_set: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    args = ["evaluate", str(small_set), "--out", str(out), "--workers", "1", "--bootstrap", "50", "--quiet"]
    assert main([*args, "--groups", "camera", "--targets", "0.5,0.34"]) == 0
    return out


def test_report_from_real_templates(evaluated: Path) -> None:
    rep = json.loads((evaluated / "report.json").read_text())
    card = rep["data_card"]
    assert (card["images"], card["acquired"], card["genuine_pairs"], card["impostor_pairs"]) == (4, 4, 3, 3)
    assert rep["system"]["embedding_model"] == "dlib_face_recognition_resnet_model_v1"
    assert len(rep["system"]["embedding_weights_sha256"]) == 64
    assert rep["timing"]["templates_from_cache"] is False
    scoring = rep["system"]["scoring"]
    assert (scoring["mode"], scoring["requested"]) == ("normalized", "normalized")
    assert {k: scoring[k] for k in default_scorer().identity()} == default_scorer().identity()
    # Obama's three photos are closer to each other than to Biden's: at the FMR-0.34 threshold
    # (one impostor pair may match) no genuine pair is rejected.
    point = next(p for p in rep["operating_points"] if p["target_fmr"] == 0.34)
    assert point["global"]["fmr"]["errors"] <= 1
    assert point["global"]["fnmr"]["errors"] == 0
    assert list(point["by_group"]["camera"]) == ["A", "B"]


def test_rerun_uses_the_cache_and_is_deterministic(small_set: Path, evaluated: Path) -> None:
    first = json.loads((evaluated / "report.json").read_text())
    args = [
        "evaluate",
        str(small_set),
        "--out",
        str(evaluated),
        "--workers",
        "1",
        "--bootstrap",
        "50",
        "--quiet",
    ]
    assert main([*args, "--groups", "camera", "--targets", "0.5,0.34"]) == 0
    second = json.loads((evaluated / "report.json").read_text())
    assert second["timing"]["templates_from_cache"] is True
    first.pop("timing")
    second.pop("timing")
    assert first == second


def test_gate_failure_exits_non_zero(small_set: Path, evaluated: Path, tmp_path: Path) -> None:
    shutil.copytree(evaluated / "cache", tmp_path / "out" / "cache")  # templates are not the subject here
    gates = tmp_path / "gates.toml"
    base = ["evaluate", str(small_set), "--out", str(tmp_path / "out"), "--workers", "1", "--bootstrap", "0"]
    gates.write_text(
        '[[gate]]\nmetric = "failure_to_acquire"\ngrouping = "all"\nmax = 0.25\n', encoding="utf-8"
    )
    assert main([*base, "--quiet", "--gate", str(gates)]) == 0
    gates.write_text(
        '[[gate]]\nmetric = "failure_to_acquire"\ngrouping = "all"\nmin = 0.5\n', encoding="utf-8"
    )
    assert main([*base, "--quiet", "--gate", str(gates)]) == 1
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["gates"]["passed"] is False


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_html_report_renders_in_headless_chromium(evaluated: Path, tmp_path: Path) -> None:
    url = (evaluated / "report.html").resolve().as_uri()
    dom = run_chromium(["--dump-dom", url], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "chrome-error://" not in dom.stdout
    assert "Uncaught" not in dom.stderr and ":CONSOLE(" not in dom.stderr
    for sid in (
        "system",
        "data-card",
        "thresholds",
        "groups",
        "differentials",
        "curves",
        "identification",
        "watchlist",
        "acquisition",
        "gates",
    ):
        assert f'id="{sid}"' in dom.stdout
    assert "regard evaluation: " in dom.stdout
    shot = tmp_path / "report.png"
    result = run_chromium(["--window-size=1200,2400", f"--screenshot={shot}", url], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a page with tables and plots, not a blank one


@pytest.mark.dataset
@pytest.mark.slow
def test_fairface_subset_by_race_and_sex(datasets: Path, tmp_path: Path) -> None:
    folder = datasets / "demographics" / "fairface_train"
    out = tmp_path / "ff"
    args = ["evaluate", str(folder), "--out", str(out), "--limit", "48", "--workers", "1", "--quiet"]
    assert main([*args, "--groups", "race,sex", "--targets", "1e-2", "--bootstrap", "100"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["data_card"]["genuine_pairs"] == 0  # every image a different person
    assert set(rep["data_card"]["by_group"]) == {"all", "race", "sex"}
    point = rep["operating_points"][0]
    assert set(point["cross_group_fmr"]) == {"race", "sex"}
    assert set(rep["acquisition"]["by_group"]["race"]) <= {
        "Black",
        "East Asian",
        "Indian",
        "Latino_Hispanic",
        "Middle Eastern",
        "Southeast Asian",
        "White",
    }
    assert point["differentials"]["sex"]["fnmr"]["max_over_min"] is None  # no genuine pairs


def test_subset_run_reuses_the_full_runs_templates(small_set: Path, evaluated: Path, tmp_path: Path) -> None:
    shutil.copytree(evaluated / "cache", tmp_path / "out" / "cache")
    args = ["evaluate", str(small_set), "--out", str(tmp_path / "out"), "--workers", "1", "--bootstrap", "0"]
    assert main([*args, "--quiet", "--limit", "3", "--seed", "1"]) == 0
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    assert rep["timing"]["templates_from_cache"] is True
    # Seed 1 picks whole subjects until 3 images: Obama's three photos, and not Biden's.
    assert rep["data_card"]["images"] == 3 and rep["data_card"]["subjects"] == 1


def _impostor_templates(cache: Path) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The cached templates (dataset order) and the index pairs of Biden against each Obama photo."""
    (npz,) = sorted(p for p in cache.glob("templates-*.npz") if not p.name.endswith(".tmp.npz"))
    with np.load(npz) as data:
        paths = [str(x) for x in data["paths"]]
        emb = np.asarray(data["embeddings"], dtype=np.float32)
    b = paths.index("biden.jpg")
    return emb, [(paths.index(o), b) for o in ("obama.jpg", "obama2.jpg", "obama3.jpg")]


def test_raw_scoring_reuses_the_templates_and_scores_plain_distances(
    small_set: Path, evaluated: Path, tmp_path: Path
) -> None:
    shutil.copytree(evaluated / "cache", tmp_path / "out" / "cache")
    args = ["evaluate", str(small_set), "--out", str(tmp_path / "out"), "--workers", "1", "--bootstrap", "0"]
    assert main([*args, "--quiet", "--groups", "camera", "--targets", "0.5", "--scoring", "raw"]) == 0
    raw = json.loads((tmp_path / "out" / "report.json").read_text())
    normalized = json.loads((evaluated / "report.json").read_text())
    assert raw["timing"]["templates_from_cache"] is True  # the cache key does not depend on the scoring
    assert len(list((tmp_path / "out" / "cache").glob("templates-*.npz"))) == 1
    emb, pairs = _impostor_templates(tmp_path / "out" / "cache")
    dist = np.array([np.linalg.norm(emb[i].astype(np.float64) - emb[j]) for i, j in pairs])
    scorer = default_scorer()
    half = scorer.half_offsets(emb)
    score = np.array([d - half[i] - half[j] for d, (i, j) in zip(dist, pairs, strict=True)])
    raw_tau = next(p["score"] for p in raw["operating_points"] if p["target_fmr"] == 0.5)
    norm_tau = next(p["score"] for p in normalized["operating_points"] if p["target_fmr"] == 0.5)
    assert raw_tau == pytest.approx(threshold_at_fmr(dist, 0.5), abs=1e-6)
    assert norm_tau == pytest.approx(threshold_at_fmr(score, 0.5), abs=1e-6)
    assert abs(raw_tau - norm_tau) > 1e-4
    # similarity 80 sits where each mode's table puts it.
    raw_scorer = scorer_for("raw")
    assert raw_scorer is not None
    raw80 = next(p["score"] for p in raw["operating_points"] if p["kind"] == "similarity80")
    norm80 = next(p["score"] for p in normalized["operating_points"] if p["kind"] == "similarity80")
    assert raw80 == pytest.approx(raw_scorer.score_for_similarity(80.0))
    assert norm80 == pytest.approx(scorer.score_for_similarity(80.0))
    rec = raw["system"]["scoring"]
    assert (rec["mode"], rec["requested"], rec["normalizer_sha256"]) == ("raw", "raw", "")
    assert rec["calibration_sha256"] == raw_scorer.table.sha256
    assert rec["scoring"] != normalized["system"]["scoring"]["scoring"]
    assert raw["system"]["model_key"] == normalized["system"]["model_key"]


def test_held_apart_with_nothing_held_apart_is_an_input_error(small_set: Path, tmp_path: Path) -> None:
    from regard.scoring.calibrate import is_held_apart

    # Neither "obama" nor "biden" is among the samples kept out of fitting, in any dataset folder.
    assert not any(is_held_apart(small_set.name, s) for s in ("obama", "biden"))
    args = ["evaluate", str(small_set), "--out", str(tmp_path / "out"), "--workers", "1", "--quiet"]
    assert main([*args, "--held-apart"]) == 2
    assert not (tmp_path / "out" / "report.json").exists()
