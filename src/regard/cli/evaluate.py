"""``regard evaluate``: a bias audit and evaluation report on a labelled image folder."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from regard.accountability.policy import DEFAULT_PROFILES
from regard.config import Settings
from regard.errors import InvalidParameter
from regard.face.engine import Engine


def _floats(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise InvalidParameter(f"--targets must be comma-separated numbers, not {text!r}") from exc
    if not values or any(not 0 < v < 1 for v in values):
        raise InvalidParameter("--targets must be false-match rates strictly between 0 and 1")
    return values


def _bar(stream: Iterable[Any], total: int) -> Iterable[Any]:
    return tqdm(stream, total=total, desc="embedding", unit="img", leave=False, dynamic_ncols=True)


@click.command("evaluate")
@click.argument("dataset", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Report folder."
)
@click.option(
    "--groups", default=None, help="Group columns, e.g. sex,race,age or race+sex (default: those present)."
)
@click.option("--targets", default="1e-3,1e-4,1e-5", show_default=True, help="Target false-match rates.")
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Seed for subsets, splits and bootstrap."
)
@click.option(
    "--limit", default=None, type=click.IntRange(min=2), help="Use about this many images (a subset)."
)
@click.option(
    "--gate",
    "gate",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML file of release gates; exit status 1 when one fails.",
)
@click.option(
    "--bootstrap", default=1000, show_default=True, type=click.IntRange(min=0), help="Bootstrap replicates."
)
@click.option(
    "--fpir-floor", default=None, type=float, help="Policy floor: FPIR per search (default: profile)."
)
@click.option(
    "--fmr-floor", default=None, type=float, help="Policy floor: FMR per comparison (default: profile)."
)
@click.option(
    "--workers", default=None, type=click.IntRange(min=1), help="Embedding processes (default: CPU count)."
)
@click.option("--backend", default=None, help="Embedding backend (default: settings, REGARD_EMBED_BACKEND).")
@click.option("--detector", default=None, help="Face detector (default: settings).")
@click.option(
    "--held-apart",
    is_flag=True,
    help="Only the samples kept out of fitting the shipped normalizer and calibration table "
    "(regard.scoring.calibrate.is_held_apart: a third of celeba_dev's subjects; half of the subjects, or of "
    "the images when there are no identities, of any other set).",
)
@click.option(
    "--scoring",
    type=click.Choice(["normalized", "raw"]),
    default="normalized",
    show_default=True,
    help="How pairs are scored: normalized (fair score normalization and its table, as regard "
    "deploys) or raw (Euclidean distance and the earlier celeba_dev table, regard before normalization).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def evaluate_cmd(
    dataset: Path,
    out: Path,
    groups: str | None,
    targets: str,
    seed: int,
    limit: int | None,
    gate: Path | None,
    bootstrap: int,
    fpir_floor: float | None,
    fmr_floor: float | None,
    workers: int | None,
    backend: str | None,
    detector: str | None,
    held_apart: bool,
    scoring: str,
    quiet: bool,
) -> None:
    """Measure accuracy and demographic differentials on DATASET (a folder with manifest.csv, or a
    pairs CSV) and write report.json and report.html into --out. Exits 1 when a --gate fails.

    The policy floor defaults to the "identification" profile's: per-comparison FMR
    min(max_fmr, max_fpir / gallery size)."""
    from regard.evaluation import BiasOptions, evaluate

    settings = Settings.from_env()
    if backend:
        settings = replace(settings, embed_backend=backend)
    if detector:
        settings = replace(settings, detector=detector)
    engine = Engine(settings)
    engine.embedder  # noqa: B018 - fail early on an unknown backend
    engine.detector()
    profile = DEFAULT_PROFILES["identification"]
    fpir_floor = profile.max_fpir if fpir_floor is None else fpir_floor
    fmr_floor = profile.max_fmr if fmr_floor is None else fmr_floor
    if not (0 < fpir_floor <= 1 and 0 < fmr_floor <= 1):
        raise InvalidParameter("--fpir-floor and --fmr-floor must be in (0, 1]")
    options = BiasOptions(
        groups=[g.strip() for g in groups.split(",") if g.strip()] if groups else (),
        targets=_floats(targets),
        seed=seed,
        bootstrap=bootstrap,
        fpir_floor=fpir_floor,
        fmr_floor=fmr_floor,
    )
    result = evaluate(
        dataset,
        out,
        engine,
        options,
        limit=limit,
        gates_file=gate,
        workers=workers or max(1, os.cpu_count() or 1),
        progress=None if quiet else _bar,
        held_apart=held_apart,
        scoring=scoring,
    )
    rep = result.data.report
    card = rep["data_card"]
    sc = rep["system"]["scoring"]
    click.echo(f"scoring: {sc['mode']} ({sc['score']})")
    click.echo(
        f"{rep['dataset']['name']}: {card['images']:,} images, {card['acquired']:,} with a face, "
        f"{card['genuine_pairs']:,} genuine and {card['impostor_pairs']:,} impostor pairs"
    )
    for p in rep.get("operating_points", []):
        g = p["global"]
        fnmr = g["fnmr"]["rate"]
        click.echo(
            f"  {p['label']}: score {p['score']:.4f}  FMR {g['fmr']['rate']:.3g}  "
            f"FNMR {'-' if fnmr is None else f'{fnmr:.3g}'}"
        )
    click.echo(f"wrote {result.json_path} and {result.html_path}")
    gates = rep.get("gates")
    if gates is not None:
        failed = [r for r in gates["results"] if not r["passed"]]
        for r in failed:
            click.echo(f"gate FAILED: {r['name']} ({r['where']}): {r['reason']}", err=True)
        if failed:
            raise click.exceptions.Exit(1)
        click.echo(f"all {len(gates['results'])} gate checks passed")


commands = [evaluate_cmd]
