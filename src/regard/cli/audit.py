"""``regard audit``: verify the hash chain, export for auditors, print the head, prune past retention."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from regard.accountability.audit import now_iso, parse_time
from regard.cli.common import actor_option, resolve_actor, workspace, workspace_options
from regard.cli.output import emit_json


@click.group("audit")
def audit() -> None:
    """The tamper-evident audit log of every biometric operation and administrative change."""


def parse_head(text: str) -> tuple[int, str]:
    """``SEQ:HASH`` (or ``SEQ HASH``, as ``regard audit head`` prints it) as (seq, hash)."""
    parts = text.replace(":", " ").split()
    if len(parts) != 2 or not parts[0].isdigit() or len(parts[1]) != 64:
        raise click.BadParameter(f"not SEQ:HASH (a seq and a 64-digit sha256): {text!r}")
    return int(parts[0]), parts[1].lower()


def read_heads(path: Path) -> list[tuple[int, str]]:
    """The heads a file kept by ``regard audit head --append-to`` holds: ``TIME SEQ HASH`` lines."""
    heads = []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if fields:
            heads.append(parse_head(" ".join(fields[-2:])))
    return heads


@audit.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.option(
    "--expect",
    "expected",
    multiple=True,
    metavar="SEQ:HASH",
    help="A head recorded earlier (regard audit head) that must still be in the log as it was; repeatable.",
)
@click.option(
    "--expect-from",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="A file of heads written by `regard audit head --append-to`; each must still be in the log.",
)
@workspace_options
def verify(as_json: bool, expected: tuple[str, ...], expect_from: Path | None) -> None:
    """Re-derive every record's hash and link and check the anchor and any heads recorded earlier;
    exit 1 naming the first broken record."""
    heads = [parse_head(e) for e in expected]
    if expect_from is not None:
        heads += read_heads(expect_from)
    result = workspace().audit().verify(heads)
    if as_json:
        emit_json(
            {
                "ok": result.ok,
                "records": result.records,
                "head_hash": result.head_hash,
                "broken_seq": result.broken_seq,
                "broken_line": result.broken_line,
                "reason": result.reason,
            }
        )
    else:
        click.echo(result.describe(), err=not result.ok)
    if not result.ok:
        raise click.exceptions.Exit(1)


@audit.command("export")
@click.option("--since", default=None, help="ISO 8601 date or time (inclusive), UTC unless stated.")
@click.option("--until", default=None, help="ISO 8601 date or time (exclusive).")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None)
@workspace_options
def export(since: str | None, until: str | None, fmt: str, output: Path | None) -> None:
    """Export records for an auditor (to stdout or --output)."""
    log = workspace().audit()
    check = log.verify()
    if not check.ok:  # export anyway (the auditor needs it) but say what does not check out
        click.echo(f"warning: {check.describe()}", err=True)
    start = parse_time(since) if since else None
    end = parse_time(until) if until else None
    if output is None:
        n = log.export(sys.stdout, since=start, until=end, fmt=fmt)
    else:
        with output.open("w", encoding="utf-8", newline="") as f:
            n = log.export(f, since=start, until=end, fmt=fmt)
    from regard.accountability.guard import admin_record

    admin_record(  # who took a copy of the log, and which part of it
        log,
        "AuditExport",
        principal=resolve_actor(None),
        parameters={"since": since, "until": until, "format": fmt, "output": str(output) if output else None},
        results={"records": n},
    )
    click.echo(f"{n} records exported", err=True)


@audit.command("head")
@click.option(
    "--append-to",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also append `TIME SEQ HASH` to this file (outside the data directory: another disk, "
    "a WORM mount, a file shipped off the host), synced before the command returns.",
)
@workspace_options
def head(append_to: Path | None) -> None:
    """Print the newest record's seq and hash (record it outside regard to anchor the chain)."""
    seq, digest = workspace().audit().head()
    click.echo(f"{seq} {digest}")
    if append_to is not None:
        fd = os.open(append_to, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{now_iso()} {seq} {digest}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)


@audit.command("prune")
@click.option("--before", required=True, help="Delete records older than this ISO 8601 date or time.")
@actor_option
@workspace_options
def prune(before: str, actor: str | None) -> None:
    """Delete old records; refused inside the retention floor (policy: audit.retention_floor_days)."""
    n = workspace().audit().prune(parse_time(before), actor=resolve_actor(actor))
    click.echo(f"{n} records pruned")


commands = [audit]
