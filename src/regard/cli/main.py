"""Entry point: collects the ``commands`` of every module in :mod:`regard.cli` into one group."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import click

import regard.cli as cli_pkg
from regard import __version__
from regard.errors import RegardError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="regard")
def cli() -> None:
    """regard: accountable, self-hosted face recognition with Amazon Rekognition's API."""


def _register() -> None:
    for info in sorted(pkgutil.iter_modules(cli_pkg.__path__), key=lambda m: m.name):
        if info.name in {"main", "output"}:
            continue
        module = importlib.import_module(f"regard.cli.{info.name}")
        for command in getattr(module, "commands", []):
            cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; a :class:`RegardError` becomes one line on stderr and exit status 2."""
    try:
        rc = cli.main(args=argv, prog_name="regard", standalone_mode=False)
        if isinstance(rc, int) and not isinstance(rc, bool):  # a command's click.exceptions.Exit(code)
            return rc
    except RegardError as exc:
        click.echo(f"regard: error: {type(exc).__name__}: {exc.message}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("regard: aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
