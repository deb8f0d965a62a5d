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
    cache = cache_dir or Settings.from_env().cache_dir
    infos = catalog(cache)
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
        click.echo(json.dumps(rows, indent=2))
        return
    for m in infos:
        click.echo(f"{m.name}: {m.description}")
        click.echo(f"  source   {m.package}: {m.source.name}")
        click.echo(f"  licence  {m.licence}")
        click.echo(f"  sha256   {m.sha256}")
        onnx = f"{m.onnx_state} ({m.onnx_path})" if m.onnx_path else m.onnx_state
        click.echo(f"  onnx     {onnx}")


@models.command("prepare")
@_cache_option
def prepare_cmd(cache_dir: Path | None) -> None:
    """Convert every model to ONNX now (otherwise this happens on first use)."""
    cache = cache_dir or Settings.from_env().cache_dir
    for name, path in prepare(cache).items():
        click.echo(f"{name}: {path}")


commands = [models]
