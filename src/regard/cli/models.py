"""``regard models``: list the models, their sources, licences, hashes and cache state; prepare them."""

from __future__ import annotations

import json
from pathlib import Path

import click

from regard.config import Settings
from regard.models.catalog import catalog, prepare

_cache_option = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Cache directory (default: REGARD_CACHE_DIR or the platform's user cache dir).",
)


@click.group("models", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@_cache_option
@click.pass_context
def models(ctx: click.Context, as_json: bool, cache_dir: Path | None) -> None:
    """List every model: source package and file, licence, SHA-256 and converted (ONNX) cache state."""
    if ctx.invoked_subcommand is not None:
        return
    settings = Settings.from_env()
    cache = cache_dir or settings.cache_dir
    infos = catalog(cache)
    scoring = _scoring_rows(settings)
    version = _version_row(settings)
    if as_json:
        rows = [
            {
                "name": m.name,
                "description": m.description,
                "package": m.package,
                "source": str(m.source),
                "licence": m.licence,
                "sha256": m.sha256,
                "onnx": m.onnx_name,
                "state": m.onnx_state,
                "onnx_path": str(m.onnx_path) if m.onnx_path else None,
            }
            for m in infos
        ]
        click.echo(json.dumps([*rows, *scoring, version], indent=2))
        return
    for m in infos:
        click.echo(f"{m.name}: {m.description}")
        click.echo(f"  source   {m.package}: {m.source.name}")
        click.echo(f"  licence  {m.licence}")
        click.echo(f"  sha256   {m.sha256}")
        onnx = f"{m.onnx_state} ({m.onnx_path})" if m.onnx_path else m.onnx_state
        click.echo(f"  onnx     {onnx}")
    for row in scoring:
        click.echo(f"{row['name']}: {row['description']}")
        click.echo(f"  source   {row['source']}")
        click.echo(f"  version  {row['version']}  (for {row['model']})")
        click.echo(f"  sha256   {row['sha256']}")
        click.echo(f"  fitted   {row['fitted_on']}")
    click.echo(f"{version['name']}: {version['description']}")
    click.echo(f"  version  {version['version']}")
    identity = version["identity"]
    assert isinstance(identity, dict)
    for key, value in identity.items():
        if key != "FaceModelVersion":
            click.echo(f"  {key:<18} {value}")


def _scoring_rows(settings: Settings) -> list[dict[str, object]]:
    """The scoring parameters in force: the fair score normalizer and the calibration table."""
    from importlib import resources

    from regard.scoring.calibrate import default_scorer, load_scorer

    folder = Path(settings.scoring_dir).expanduser() if settings.scoring_dir else None
    scorer = load_scorer(folder) if folder else default_scorer()
    where = str(folder) if folder else str(resources.files("regard").joinpath("data"))
    rows: list[dict[str, object]] = []
    if scorer.normalizer is not None:
        n = scorer.normalizer
        rows.append(
            {
                "name": "score-normalizer",
                "description": f"fair score normalization, {n.k} clusters x {n.members} clusterings "
                "(regard.scoring.normalize; docs/calibration.md)",
                "source": f"{where}/normalizer.json",
                "version": n.version,
                "model": n.model,
                "sha256": n.sha256,
                "fitted_on": ", ".join(sorted(n.provenance.get("datasets", {}))) or "unknown",
                "provenance": n.provenance,
            }
        )
    t = scorer.table
    rows.append(
        {
            "name": "calibration-table",
            "description": "score -> similarity -> false-match rate"
            + (" (normalized scores)" if scorer.normalized else " (raw distances)"),
            "source": f"{where}/calibration.json",
            "version": t.version,
            "model": t.model,
            "sha256": t.sha256,
            "fitted_on": t.dataset,
            "counts": t.counts,
        }
    )
    return rows


def _version_row(settings: Settings) -> dict[str, object]:
    """The FaceModelVersion responses carry with these models and scoring, and what it stands for."""
    from regard.face.engine import Engine
    from regard.scoring.calibrate import default_scorer, load_scorer
    from regard.scoring.versions import describe

    folder = Path(settings.scoring_dir).expanduser() if settings.scoring_dir else None
    scorer = load_scorer(folder) if folder else default_scorer()
    identity = describe(Engine(settings).model_identity, scorer)  # the identity loads no model
    return {
        "name": "face-model-version",
        "description": "FaceModelVersion in Rekognition responses: the embedding model, its template "
        "preprocessing and the scoring parameters (regard.scoring.versions)",
        "version": identity["FaceModelVersion"],
        "identity": identity,
    }


@models.command("prepare")
@_cache_option
def prepare_cmd(cache_dir: Path | None) -> None:
    """Convert every model to ONNX now (otherwise this happens on first use)."""
    cache = cache_dir or Settings.from_env().cache_dir
    for name, path in prepare(cache).items():
        click.echo(f"{name}: {path}")


commands = [models]
