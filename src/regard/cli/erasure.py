"""``regard erase`` and ``regard subject-access``: data subjects' rights over stored faces."""

from __future__ import annotations

import json
from pathlib import Path

import click

from regard.accountability.erasure import erase as erase_subject
from regard.accountability.erasure import subject_access as subject_access_report
from regard.accountability.review import ReviewQueue
from regard.cli.audit import actor_option, data_dir_option, open_log, resolve_actor, resolve_data_dir
from regard.cli.output import emit_json
from regard.config import Settings
from regard.service import Service


def _service(root: Path) -> Service:
    database_url = getattr(Settings.from_env(), "database_url", None) or None
    return Service.open(root, database_url=database_url)


@click.command("erase")
@click.option("--face-id", default=None)
@click.option("--external-image-id", default=None)
@click.option("--user-id", default=None)
@click.option("--collection", "collection_id", default=None, help="Only this collection (default: all).")
@click.option("--reason", default=None, help="The request being honoured (kept in the audit log).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@actor_option
@data_dir_option
def erase(
    face_id: str | None,
    external_image_id: str | None,
    user_id: str | None,
    collection_id: str | None,
    reason: str | None,
    yes: bool,
    actor: str | None,
    data_dir: Path | None,
) -> None:
    """Erase every face of a FaceId, ExternalImageId or UserId, physically (database, index, files)."""
    root = resolve_data_dir(data_dir)
    if not yes:
        click.confirm("Erase these faces permanently?", abort=True)
    with _service(root) as service:
        report = erase_subject(
            service,
            open_log(root),
            actor=resolve_actor(actor),
            collection_id=collection_id,
            face_id=face_id,
            external_image_id=external_image_id,
            user_id=user_id,
            review=ReviewQueue(root),
            reason=reason,
        )
    emit_json(report.to_json())


@click.command("subject-access")
@click.option("--external-image-id", default=None)
@click.option("--user-id", default=None)
@click.option("--collection", "collection_id", default=None, help="Only this collection (default: all).")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None)
@actor_option
@data_dir_option
def subject_access(
    external_image_id: str | None,
    user_id: str | None,
    collection_id: str | None,
    output: Path | None,
    actor: str | None,
    data_dir: Path | None,
) -> None:
    """What is held about an ExternalImageId or UserId (metadata, never templates)."""
    root = resolve_data_dir(data_dir)
    with _service(root) as service:
        report = subject_access_report(
            service,
            open_log(root),
            actor=resolve_actor(actor),
            collection_id=collection_id,
            external_image_id=external_image_id,
            user_id=user_id,
            review=ReviewQueue(root),
        )
    if output is None:
        emit_json(report)
    else:
        output.write_text(json.dumps(report, indent=2), encoding="utf-8")


commands = [erase, subject_access]
