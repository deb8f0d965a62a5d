"""``regard evaluate --detector``, ``--backend`` and ``--held-apart`` take effect (docs/evaluation.md):
the templates are made with the detector and backend asked for, the report says so, and a
held-apart run uses only the samples the shipped scoring never saw."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from regard.cli.main import main
from regard.config import Settings
from regard.evaluation import held_apart_keep
from regard.evaluation.dataset import read_dataset
from regard.face.engine import Engine
from regard.scoring.calibrate import is_held_apart


def _cached(out: Path) -> dict[str, np.ndarray]:
    """The evaluation's cached templates, by image path."""
    (npz,) = sorted(p for p in (out / "cache").glob("templates-*.npz") if not p.name.endswith(".tmp.npz"))
    with np.load(npz) as data:
        return {
            str(p): np.asarray(e, dtype=np.float32)
            for p, e in zip(data["paths"], data["embeddings"], strict=True)
        }


@pytest.mark.slow
def test_detector_and_backend_options_make_the_templates(
    fr_images: Path, tmp_path: Path, engine: Engine
) -> None:
    folder = tmp_path / "portraits"
    folder.mkdir()
    rows = ["path,subject"]
    for name, subject in (("obama.jpg", "obama"), ("obama2.jpg", "obama"), ("biden.jpg", "biden")):
        shutil.copy(fr_images / name, folder / name)
        rows.append(f"{name},{subject}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    args = ["evaluate", str(folder), "--out", str(out), "--workers", "1", "--bootstrap", "0", "--quiet"]
    assert main([*args, "--detector", "hog", "--backend", "dlib", "--targets", "0.5"]) == 0

    system = json.loads((out / "report.json").read_text())["system"]
    assert (system["detector"], system["detector_version"]) == ("hog", "dlib-hog-1")
    assert system["embed_backend"] == "dlib"
    assert system["detect_fallback"] == "none"  # a detector asked for by name never falls back

    # The templates are those of an engine with that detector and backend, not the default's.
    asked = Engine(Settings.from_env(detector="hog", embed_backend="dlib"))
    image = asked.load_image(folder / "obama.jpg")
    expected = asked.embed(image, asked.detect(image, max_faces=1))[0]
    default = engine.embed(image, engine.detect(image, max_faces=1))[0]
    got = _cached(out)["obama.jpg"]
    assert np.abs(got - expected).max() < 1e-5
    assert np.abs(got - default).max() > 1e-3  # MTCNN's box aligns the face differently

    # An unknown detector or backend is an input error (exit status 2), before any work is done.
    assert main([*args, "--detector", "nonesuch"]) == 2
    assert main([*args, "--backend", "nonesuch"]) == 2


@pytest.mark.dataset
@pytest.mark.slow
def test_held_apart_keeps_only_samples_the_shipped_scoring_never_saw(datasets: Path, tmp_path: Path) -> None:
    folder = datasets / "recognition" / "celeba_dev"
    with (folder / "manifest.csv").open(newline="", encoding="utf-8") as fh:
        subject_of = {r["path"]: r["subject"] for r in csv.DictReader(fh)}
    # The held-apart part docs/evaluation.md describes: a third of the subjects, 364 photos of 38 people.
    held = read_dataset(folder, keep_subject=held_apart_keep(folder))
    assert (len(held.paths), len(set(held.subjects))) == (364, 38)
    # The same --limit and --seed without --held-apart would pick subjects the scoring was fitted on.
    unrestricted = read_dataset(folder, limit=20, seed=0)
    assert not all(is_held_apart("celeba_dev", s) for s in unrestricted.subjects)

    out = tmp_path / "out"
    args = ["evaluate", str(folder), "--out", str(out), "--workers", "1", "--bootstrap", "0", "--quiet"]
    assert main([*args, "--held-apart", "--limit", "20", "--seed", "0", "--targets", "1e-2"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["dataset"]["held_apart_only"] is True
    assert rep["dataset"]["held_apart_fold"] == 3  # 1/3 of celeba_dev; half of any other set
    assert rep["dataset"]["limit"] == 20
    used = list(_cached(out))
    assert len(used) == rep["data_card"]["images"] == 20
    subjects = {subject_of[p] for p in used}
    assert len(subjects) == rep["data_card"]["subjects"]
    assert all(is_held_apart("celeba_dev", s) for s in subjects)
    assert set(used) <= set(held.paths)
