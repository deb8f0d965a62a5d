"""What every command shares: where the state is (``--data-dir``, ``--database-url``) and who acts.

Each command that touches state takes :func:`workspace_options` and calls :func:`workspace`,
which opens the :class:`~regard.workspace.Workspace` once per invocation, says on stderr which
store it opened (``regard: using PostgreSQL postgresql://regard@db/regard ...``) and closes it
when the command ends.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from regard.workspace import Workspace

F = TypeVar("F", bound=Callable[..., Any])

_META = "regard.workspace"


def _remember(name: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None:
            ctx.meta[f"{_META}.{name}"] = value
        return value

    return callback


def workspace_options(f: F) -> F:
    """``--data-dir`` and ``--database-url``, read by :func:`workspace` (not passed to ``f``)."""
    f = click.option(
        "--database-url",
        envvar="REGARD_DATABASE_URL",
        default=None,
        expose_value=False,
        callback=_remember("database_url"),
        help="postgresql://... holding the state every node shares (default: REGARD_DATABASE_URL; "
        "unset: the embedded store in the data directory).",
    )(f)
    f = click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        expose_value=False,
        callback=_remember("data_dir"),
        help="Data directory (default: REGARD_DATA_DIR or the platform's user data dir).",
    )(f)
    return f


def workspace(*, announce: bool = True) -> Workspace:
    """The current command's workspace, opened on first use and closed when the command ends."""
    ctx = click.get_current_context()
    found = ctx.meta.get(_META)
    if isinstance(found, Workspace):
        return found
    data_dir = ctx.meta.get(f"{_META}.data_dir")
    ws = Workspace.open(data_dir=data_dir, database_url=ctx.meta.get(f"{_META}.database_url"))
    if announce:
        click.echo(f"regard: using {ws.describe()}", err=True)
    ctx.meta[_META] = ws
    ctx.call_on_close(ws.close)
    return ws


actor_option = click.option(
    "--actor", default=None, help="Who makes this change, for the audit log (default: the OS user)."
)


def resolve_actor(actor: str | None) -> str:
    if actor:
        return actor
    try:
        return f"local:{getpass.getuser()}"
    except (KeyError, OSError):
        return "local:unknown"


def record_admin_change(
    operation: str,
    parameters: dict[str, object],
    results: dict[str, object] | None = None,
    actor: str | None = None,
) -> None:
    """Log an administrative change made from the command line (keys, collections...)."""
    from regard.accountability.guard import admin_record

    admin_record(
        workspace().audit(),
        operation,
        principal=resolve_actor(actor),
        parameters=parameters,
        results=results,
    )
