"""``regard transparency``: the public transparency report of 1:N identification over a period."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import click

from regard.accountability.audit import parse_time
from regard.accountability.records import admin_record
from regard.accountability.transparency import Period, build
from regard.accountability.transparency_html import write_report
from regard.cli.common import actor_option, resolve_actor, workspace, workspace_options


def default_period(today: datetime) -> tuple[datetime, datetime]:
    """12 months back from ``today``'s date to tomorrow (so today's records are in)."""
    day = datetime(today.year, today.month, today.day, tzinfo=UTC)
    try:
        since = day.replace(year=day.year - 1)
    except ValueError:  # 29 February
        since = day.replace(year=day.year - 1, day=28)
    return since, day + timedelta(days=1)


@click.command("transparency")
@click.option("--since", default=None, help="First day (YYYY-MM-DD, UTC, inclusive); default 12 months ago.")
@click.option("--until", default=None, help="Day after the last (YYYY-MM-DD, exclusive); default tomorrow.")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write transparency.html and transparency.json into (created).",
)
@actor_option
@workspace_options
def transparency(since: str | None, until: str | None, out: Path, actor: str | None) -> None:
    """Write the transparency report: assessments in force and their gates, searches per month by
    profile and purpose, leads raised, confirmed and rejected (and the drift test), erasure and
    subject-access requests, the audit chain's head. Counts only: no image, template, face or user
    id, or case reference. Prints the two files' paths."""
    start, end = default_period(datetime.now(UTC))
    period = Period(parse_time(since) if since else start, parse_time(until) if until else end)
    if period.until <= period.since:
        raise click.BadParameter("--until must be after --since")
    ws = workspace()
    log = ws.audit()
    report = build(log, ws.assessments(), ws.policies(), period)
    html_path, json_path = write_report(report, out)
    admin_record(  # who published what, and from which head of the chain
        log,
        "TransparencyReport",
        principal=resolve_actor(actor),
        parameters={"since": report["period"]["since"], "until": report["period"]["until"], "out": str(out)},
        results={"head_seq": report["audit"]["head"]["seq"], "verified": report["audit"]["verify"]["ok"]},
    )
    click.echo(str(html_path))
    click.echo(str(json_path))


commands = [transparency]
