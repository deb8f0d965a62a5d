"""``regard erase`` and ``regard subject-access``: data subjects' rights over stored faces."""

from __future__ import annotations

import json
from pathlib import Path

import click

from regard.accountability.erasure import erase as erase_subject
from regard.accountability.erasure import subject_access as subject_access_report
from regard.cli.common import actor_option, resolve_actor, workspace, workspace_options
from regard.cli.output import emit_json


@click.command("erase")
@click.option("--face-id", default=None)
@click.option("--external-image-id", default=None)
@click.option("--user-id", default=None)
@click.option("--collection", "collection_id", default=None, help="Only this collection (default: all).")
@click.option("--reason", default=None, help="The request being honoured (kept in the audit log).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@actor_option
@workspace_options
def erase(
    face_id: str | None,
    external_image_id: str | None,
    user_id: str | None,
    collection_id: str | None,
    reason: str | None,
    yes: bool,
    actor: str | None,
) -> None:
    """Erase every face of a FaceId, ExternalImageId or UserId, physically (database, index, files),
    in the embedded store or the shared PostgreSQL database (REGARD_DATABASE_URL)."""
    ws = workspace()
    if not yes:
        click.confirm("Erase these faces permanently?", abort=True)
    with ws.service() as service:
        report = erase_subject(
            service,
            ws.audit(),
            actor=resolve_actor(actor),
            collection_id=collection_id,
            face_id=face_id,
            external_image_id=external_image_id,
            user_id=user_id,
            review=ws.review(),
            evidence=ws.evidence(),
            reason=reason,
        )
    emit_json(report.to_json())


@click.command("subject-access")
@click.option("--external-image-id", default=None)
@click.option("--user-id", default=None)
@click.option("--collection", "collection_id", default=None, help="Only this collection (default: all).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None)
@actor_option
@workspace_options
def subject_access(
    external_image_id: str | None,
    user_id: str | None,
    collection_id: str | None,
    output: Path | None,
    actor: str | None,
) -> None:
    """What is held about an ExternalImageId or UserId (metadata, never templates)."""
    ws = workspace()
    with ws.service() as service:
        report = subject_access_report(
            service,
            ws.audit(),
            actor=resolve_actor(actor),
            collection_id=collection_id,
            external_image_id=external_image_id,
            user_id=user_id,
            review=ws.review(),
            evidence=ws.evidence(),
        )
    if output is None:
        emit_json(report)
    else:
        output.write_text(json.dumps(report, indent=2), encoding="utf-8")


commands = [erase, subject_access]
