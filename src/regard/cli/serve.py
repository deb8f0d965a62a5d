"""``regard serve``: the Rekognition-compatible HTTP API under uvicorn."""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Any

import click

from regard.config import Settings
from regard.workspace import Workspace


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging: regard's JSON request lines and uvicorn's own messages on stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "bare": {"format": "%(message)s"},
            "server": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        },
        "handlers": {
            "bare": {"class": "logging.StreamHandler", "formatter": "bare", "stream": "ext://sys.stderr"},
            "server": {"class": "logging.StreamHandler", "formatter": "server", "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "regard.api": {"handlers": ["bare"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["server"], "level": "INFO", "propagate": False},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=9000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="TCP port; 0 picks a free one (the address is printed as 'regard: listening on URL').",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Data directory with keys and collections (default: REGARD_DATA_DIR or the user data dir).",
)
@click.option(
    "--database-url",
    envvar="REGARD_DATABASE_URL",
    default=None,
    help="postgresql://... shared by every node (default: REGARD_DATABASE_URL; unset: the embedded "
    "store in the data directory). See docs/deployment.md.",
)
@click.option("--workers", default=1, show_default=True, type=int, help="Worker processes.")
@click.option(
    "--graceful-timeout",
    default=30,
    show_default=True,
    type=int,
    help="Seconds in-flight requests may take to finish on shutdown (SIGTERM or Ctrl-C).",
)
@click.option("--log-level", default="info", show_default=True, type=click.Choice(["info", "warning"]))
def serve(
    host: str,
    port: int,
    data_dir: Path | None,
    database_url: str | None,
    workers: int,
    graceful_timeout: int,
    log_level: str,
) -> None:
    """Serve Amazon Rekognition's face API (AWS JSON 1.1, SigV4) on HOST:PORT.

    Create a key first with `regard keys create --name NAME`, then point any AWS SDK at
    http://HOST:PORT with that key. On SIGTERM the server stops accepting connections and
    finishes the requests in flight before exiting.
    """
    import uvicorn

    if workers < 1:
        raise click.BadParameter("must be at least 1", param_hint="--workers")
    if data_dir is not None:
        # Worker processes read their settings from the environment.
        os.environ["REGARD_DATA_DIR"] = str(data_dir.expanduser().resolve())
    if database_url:
        os.environ["REGARD_DATABASE_URL"] = database_url
    settings = Settings.from_env()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    where = Workspace(settings)
    # Bind here, so that port 0 works and the address actually bound is reported before any
    # worker starts; uvicorn serves the socket (shared by every worker) through its descriptor.
    listener = _listen(host, port)
    bound = listener.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"regard: serving {where.describe()} ({workers} worker(s))", err=True)
    click.echo(f"regard: listening on http://{shown}:{bound}", err=True)
    options: dict[str, Any] = {
        "factory": True,
        "log_config": log_config(log_level.upper()),
        "timeout_graceful_shutdown": graceful_timeout,
        "access_log": False,
        "server_header": False,
        # idle keep-alive connections are closed after this many seconds (body deadlines: the app)
        "timeout_keep_alive": settings.api_keep_alive_timeout,
    }
    if settings.api_max_connections > 0:
        options["limit_concurrency"] = settings.api_max_connections
    try:
        if workers == 1:
            # uvicorn serves this very socket and closes it as shutdown begins, so new connections
            # are refused at once (through fd= it would serve a duplicate, and this one would go
            # on accepting connections nobody answers until the process exits).
            server = uvicorn.Server(uvicorn.Config("regard.api.app:app_from_env", **options))
            with contextlib.suppress(KeyboardInterrupt):
                server.run(sockets=[listener])
            if not server.started:
                raise SystemExit(3)  # uvicorn's exit status for a failed start-up
        else:
            uvicorn.run("regard.api.app:app_from_env", fd=listener.fileno(), workers=workers, **options)
    finally:
        listener.close()


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 when the host is an IPv6 address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


commands = [serve]
