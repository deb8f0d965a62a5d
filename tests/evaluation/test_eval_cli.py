"""``regard evaluate`` end to end with the real engine, and the HTML report in headless Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from regard.cli.main import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


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


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_html_report_renders_in_headless_chromium(evaluated: Path, tmp_path: Path) -> None:
    url = (evaluated / "report.html").resolve().as_uri()
    dom = _chromium(["--enable-logging=stderr", "--dump-dom", url], tmp_path)
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
    result = _chromium(["--window-size=1200,2400", f"--screenshot={shot}", url], tmp_path)
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
    assert rep["data_card"]["images"] in (3, 4)  # whole subjects: Obama's three, maybe Biden too
