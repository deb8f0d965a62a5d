"""Calibration: the similarity <-> FMR scale, table building, and the shipped table on held-apart data."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from regard.config import Settings
from regard.errors import InvalidParameter
from regard.scoring.calibrate import (
    CalibrationTable,
    Scorer,
    build_table,
    default_scorer,
    default_table,
    fmr_from_similarity,
    pair_distances,
    raw_table,
    similarity_from_fmr,
)


@pytest.mark.parametrize(
    ("fmr", "similarity"),
    [(1.0, 0.0), (0.1, 20.0), (1e-3, 60.0), (1e-4, 80.0), (1e-5, 100.0), (1e-9, 100.0), (2.0, 0.0)],
)
def test_similarity_scale(fmr: float, similarity: float) -> None:
    assert similarity_from_fmr(fmr) == pytest.approx(similarity)
    if 1e-5 <= fmr <= 1:
        assert fmr_from_similarity(similarity) == pytest.approx(fmr)


def test_pair_distances_counts_and_values() -> None:
    emb = np.array([[0, 0], [3, 4], [0, 1], [6, 8]], dtype=np.float32)
    subjects = np.array(["a", "a", "b", "b"])
    genuine, impostor = pair_distances(emb, subjects, block=3)
    assert sorted(genuine.tolist()) == pytest.approx([5.0, math.sqrt(85)])
    assert sorted(impostor.tolist()) == pytest.approx(sorted([1.0, 10.0, math.sqrt(18), 5.0]))


def synthetic_table(seed: int = 0) -> tuple[CalibrationTable, np.random.Generator]:
    rng = np.random.default_rng(seed)
    genuine = rng.normal(0.4, 0.08, 20_000)
    impostor = rng.normal(0.9, 0.08, 200_000)
    data = build_table(genuine, impostor, model="synthetic", dataset="normal", version="t")
    return CalibrationTable.from_dict(data), rng


def test_table_matches_the_distribution_it_was_built_from() -> None:
    from scipy.stats import norm

    table, _ = synthetic_table()
    for d in (0.75, 0.7, 0.65, 0.6):
        truth = float(norm.cdf(d, 0.9, 0.08))
        assert table.fmr_at(d) == pytest.approx(truth, rel=0.35)
    assert table.fnmr_at(0.4) == pytest.approx(0.5, abs=0.02)
    # Monotone: larger distance, more false matches, fewer false non-matches.
    ds = np.linspace(0, 1.4, 57)
    fmrs = [table.fmr_at(float(d)) for d in ds]
    assert all(a <= b for a, b in itertools.pairwise(fmrs))
    sims = [table.similarity(float(d)) for d in ds]
    assert all(a >= b for a, b in itertools.pairwise(sims))


def test_extrapolated_tail_keeps_falling() -> None:
    table, _ = synthetic_table()
    anchor = table.tail_anchor[0]
    assert table.fmr_at(anchor - 0.1) < table.fmr_at(anchor) / 10


@pytest.mark.parametrize("target", [1e-2, 1e-3, 1e-4, 1e-6])
def test_threshold_for_a_target_fmr_round_trips(target: float) -> None:
    table, _ = synthetic_table()
    d = table.distance_for_fmr(target)
    assert table.fmr_at(d) == pytest.approx(target, rel=1e-3)
    if target >= 1e-5:  # similarity stops at 100 (FMR 1e-5)
        assert table.distance_for_similarity(similarity_from_fmr(target)) == pytest.approx(d)


def test_build_table_refuses_too_little_data() -> None:
    with pytest.raises(InvalidParameter, match="too few"):
        build_table(np.ones(5), np.ones(50), model="m", dataset="d", version="v")


def test_shipped_tables_are_sane() -> None:
    table = default_table()
    assert table.model.startswith("dlib_face_recognition_resnet_model_v1:")
    assert table.counts["impostor"] > 1_000_000 and table.counts["genuine"] > 5_000
    assert table.normalizer is not None  # the deployed table maps normalized scores
    raw = raw_table()
    assert raw.normalizer is None


# The operating points docs/calibration.md documents ("Operating points"), to the third decimal.
@pytest.mark.parametrize(("similarity", "score"), [(40, 0.4138), (60, 0.3553), (80, 0.3042), (100, 0.1640)])
def test_shipped_operating_points(similarity: float, score: float) -> None:
    scorer = default_scorer()
    assert scorer.score_for_similarity(similarity) == pytest.approx(score, abs=5e-4)
    assert scorer.table.fmr_at(score) == pytest.approx(10 ** (-similarity / 20), rel=0.01)


def test_raw_table_operating_points() -> None:
    """The table before 0.2 (celeba_dev, raw distances): dlib's documented 0.6 is FMR 2.6e-3."""
    raw = raw_table()
    assert raw.fmr_at(0.6) == pytest.approx(2.65e-3, rel=0.02)
    assert raw.distance_for_fmr(1e-3) == pytest.approx(0.5699, abs=5e-4)
    assert raw.distance_for_fmr(1e-4) == pytest.approx(0.4921, abs=5e-4)


def _held_apart_scores(
    datasets: Path, engine: object, folder: str, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], dict[str, list[str]]]:
    """Templates of a set's held-apart part (never seen by the shipped parameters)."""
    from regard.evaluation.dataset import TemplateSource, compute_templates, read_dataset
    from regard.face.engine import Engine
    from regard.scoring.calibrate import is_held_apart

    assert isinstance(engine, Engine)
    name = Path(folder).name
    data = read_dataset(datasets / folder, keep_subject=lambda s: is_held_apart(name, s), limit=limit)
    templates = compute_templates(TemplateSource(engine), data, Path(".cache/templates"))
    found = templates.acquired
    subjects = np.array(data.subjects)[found]
    labels = {k: [v[i] for i in np.nonzero(found)[0]] for k, v in data.labels.items()}
    return templates.embeddings[found], subjects, found, [data.paths[i] for i in np.nonzero(found)[0]], labels


def _fmr_at(emb: np.ndarray, scorer: Scorer, threshold: float, members: np.ndarray | None = None) -> float:
    """Share of impostor pairs (every image a different person) at or under ``threshold``."""
    h = scorer.half_offsets(emb)
    sq = np.einsum("ij,ij->i", emb, emb)
    s = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * emb @ emb.T, 0)) - h[:, None] - h[None, :]
    iu = np.triu_indices(len(emb), 1)
    keep = np.ones(len(iu[0]), bool) if members is None else members[iu[0]] & members[iu[1]]
    return float((s[iu][keep] <= threshold).mean())


@pytest.mark.dataset
@pytest.mark.slow
def test_deployed_scale_holds_on_held_apart_celeba(datasets: Path, engine: object) -> None:
    """Similarity 60 (FMR 1e-3) on celebrity photos the shipped parameters never saw."""
    emb, subjects, _, _, _ = _held_apart_scores(datasets, engine, "recognition/celeba_dev")
    assert len(set(subjects)) >= 30
    scorer = default_scorer()
    genuine, impostor = pair_distances(emb, subjects, half=scorer.half_offsets(emb))
    assert len(impostor) > 30_000
    for similarity in (60, 80):
        nominal = 10 ** (-similarity / 20)
        tau = scorer.score_for_similarity(similarity)
        errors = int((impostor <= tau).sum())
        measured = errors / len(impostor)
        # Within 3x of nominal either way, beyond the binomial noise of this many pairs; at 80
        # (about 6 errors expected) the lower side can only ask for at least one false match.
        margin = 3 * math.sqrt(nominal / len(impostor))
        assert errors >= 1 and nominal / 3 - margin <= measured <= 3 * nominal + margin, (
            similarity,
            measured,
        )
    assert float((genuine > scorer.score_for_similarity(60)).mean()) < 0.3


@pytest.mark.dataset
@pytest.mark.slow
def test_normalization_narrows_the_race_gap_on_held_apart_fairface(datasets: Path, engine: object) -> None:
    """On FairFace crops the shipped parameters never saw, the false-match rates of the races at
    similarity 60 sit far closer together (and closer to nominal) under the deployed scoring than
    under the raw distance read through the table of regard before 0.2."""
    from regard.scoring.calibrate import raw_scorer

    emb, _, _, _, labels = _held_apart_scores(datasets, engine, "demographics/fairface_train")
    race = np.array(labels["race"])
    deployed = default_scorer()
    before = raw_scorer(raw_table())

    def spread(scorer: Scorer) -> tuple[float, float]:
        tau = scorer.score_for_similarity(60)
        rates = [max(_fmr_at(emb, scorer, tau, race == g), 1e-5) for g in sorted(set(race))]
        return max(rates) / min(rates), _fmr_at(emb, scorer, tau)

    ratio_before, overall_before = spread(before)
    ratio_after, overall_after = spread(deployed)
    assert ratio_before > 15 and overall_before > 1e-2  # the problem this fixes (18x and 4.4e-2)
    assert ratio_after < ratio_before / 3 and ratio_after < 8  # 3.8x when measured
    assert 1e-3 / 4 < overall_after < 4e-3


@pytest.mark.dataset
@pytest.mark.slow
def test_calibrate_command_makes_a_loadable_table(datasets: Path, tmp_path: Path) -> None:
    """`regard calibrate` on a labelled folder writes a table that loads and behaves."""
    import json

    from regard.cli.main import main
    from regard.face.engine import Engine
    from regard.scoring.calibrate import load_scorer

    out = tmp_path / "scoring"
    folders = [str(datasets / "recognition" / n) for n in ("orl", "yale")]
    assert main(["calibrate", *folders, "--out", str(out), "--clusters", "8"]) == 0
    data = json.loads((out / "calibration.json").read_text())
    assert set(data["provenance"]["datasets"]) == {"orl", "yale"}
    assert data["provenance"]["datasets"]["orl"]["subjects"] >= 15 and data["counts"]["impostor"] >= 1000
    scorer = load_scorer(out)
    assert scorer.normalizer is not None and scorer.normalizer.k == 8 and scorer.normalizer.members == 5
    assert len(scorer.normalizer.centroids) == 40
    made = scorer.normalizer.provenance
    assert made["offset_quantile"] == 0.99 and "--clusters 8 " in made["made_by"]
    assert "--offset-quantile 0.99 --members 5" in made["made_by"] and made["members"] == 5
    assert scorer.table.normalizer == scorer.normalizer.sha256
    table = scorer.table
    assert table.fmr_at(table.distance_for_fmr(1e-2)) == pytest.approx(1e-2, rel=1e-3)
    assert table.fnmr_at(-1.0) == pytest.approx(1.0) and table.fmr_at(3.0) == pytest.approx(1.0)
    # An engine told to use it does, and the raw variant replaces the normalizer.
    engine = Engine(Settings.from_env(scoring_dir=str(out)))
    assert engine.scorer.identity() == scorer.identity()
    # regard evaluate's default scoring is the engine's, so an operator audits what they serve.
    from regard.evaluation import scorer_for

    assert scorer_for("normalized", engine).identity() == scorer.identity()
    assert main(["calibrate", folders[0], "--out", str(out), "--raw"]) == 0
    assert not (out / "normalizer.json").exists() and load_scorer(out).normalizer is None


def test_calibrate_command_refuses_too_little_data(
    fr_images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from regard.cli.main import main

    folder = tmp_path / "four"
    folder.mkdir()
    people = {"obama.jpg": "obama", "obama2.jpg": "obama", "biden.jpg": "biden"}
    lines = ["path,subject"] + [f"{fr_images / name},{who}" for name, who in people.items()]
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    out = str(tmp_path / "scoring")
    assert main(["calibrate", str(folder), "--out", out, "--all-subjects"]) == 2
    assert "too few templates" in capsys.readouterr().err
    assert main(["calibrate", str(folder), "--out", out, "--all-subjects", "--raw"]) == 2
    assert "too few pairs" in capsys.readouterr().err
