"""``regard review list|confirm|reject``: the two-person verification queue of 1:N search leads."""

from __future__ import annotations

import uuid
from pathlib import Path

import click

from regard.accountability.request import Caller, RequestInfo
from regard.accountability.review import STATUSES
from regard.accountability.reviewing import ReviewDesk
from regard.cli.audit import data_dir_option, resolve_data_dir
from regard.cli.output import emit_json, emit_table
from regard.errors import AccessDenied
from regard.keys import KeyStore


def _caller(data_dir: Path, access_key_id: str) -> Caller:
    key = KeyStore(data_dir).get(access_key_id)
    if not key.active:
        raise AccessDenied(f"access key {access_key_id} is revoked")
    return Caller(key.access_key_id, key.name, key.role, key.profile)


_key_option = click.option(
    "--key",
    "access_key_id",
    required=True,
    help="Your access key id: the reviewer must hold the verifier role.",
)


@click.group("review")
def review() -> None:
    """Investigative leads from 1:N searches: each needs two distinct verifiers to be confirmed."""


@review.command("list")
@click.option(
    "--status",
    type=click.Choice([s.lower() for s in STATUSES] + ["all"]),
    default="pending_verification",
    show_default=True,
)
@_key_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@data_dir_option
def list_leads(status: str, access_key_id: str, as_json: bool, data_dir: Path | None) -> None:
    """List leads (reading the queue is logged)."""
    root = resolve_data_dir(data_dir)
    wanted = None if status == "all" else status.upper()
    leads = ReviewDesk.open(root).list(_caller(root, access_key_id), RequestInfo(str(uuid.uuid4())), wanted)
    if as_json:
        emit_json(leads)
        return
    emit_table(
        ["lead", "status", "collection", "face", "similarity", "fmr", "case", "requester", "confirmations"],
        [
            [
                x["LeadId"],
                x["Status"],
                x["CollectionId"],
                x["FaceId"] or x["UserId"],
                x["Similarity"],
                x["EstimatedFalseMatchRate"],
                x["CaseReference"] or "",
                x["Requester"]["Principal"],
                sum(1 for d in x["Decisions"] if d["Decision"] == "confirm"),
            ]
            for x in leads
        ],
    )


def _decide(decision: str, lead_id: str, access_key_id: str, note: str | None, data_dir: Path | None) -> None:
    root = resolve_data_dir(data_dir)
    lead = ReviewDesk.open(root).decide(
        lead_id, decision, _caller(root, access_key_id), RequestInfo(str(uuid.uuid4())), note
    )
    click.echo(f"lead {lead_id}: {lead['Status']}")


@review.command("confirm")
@click.argument("lead_id")
@_key_option
@click.option("--note", default=None, help="Why (kept in the queue and the audit log).")
@data_dir_option
def confirm(lead_id: str, access_key_id: str, note: str | None, data_dir: Path | None) -> None:
    """Confirm a lead; it becomes CONFIRMED at the second distinct verifier."""
    _decide("confirm", lead_id, access_key_id, note, data_dir)


@review.command("reject")
@click.argument("lead_id")
@_key_option
@click.option("--note", default=None, help="Why (kept in the queue and the audit log).")
@data_dir_option
def reject(lead_id: str, access_key_id: str, note: str | None, data_dir: Path | None) -> None:
    """Reject a lead (one rejection closes it)."""
    _decide("reject", lead_id, access_key_id, note, data_dir)


commands = [review]
