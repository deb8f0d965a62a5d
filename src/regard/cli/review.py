"""``regard review list|confirm|reject``: the two-person verification queue of 1:N search leads."""

from __future__ import annotations

import uuid

import click

from regard.accountability.request import Caller, RequestInfo
from regard.accountability.review import STATUSES
from regard.accountability.reviewing import ReviewDesk
from regard.cli.common import workspace, workspace_options
from regard.cli.output import emit_json, emit_table
from regard.errors import AccessDenied


def _caller(access_key_id: str) -> Caller:
    key = workspace().keys().get(access_key_id)
    if not key.active:
        raise AccessDenied(f"access key {access_key_id} is revoked")
    return Caller(key.access_key_id, key.name, key.role, key.profile)


def _desk() -> ReviewDesk:
    ws = workspace()
    return ReviewDesk(
        ws.audit(),
        ws.review(),
        ws.policies(),
        ws.assessments(),
        evidence=ws.evidence(),
        evidence_retention_days=ws.settings.evidence_retention_days,
    )


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
@workspace_options
def list_leads(status: str, access_key_id: str, as_json: bool) -> None:
    """List leads (reading the queue is logged)."""
    wanted = None if status == "all" else status.upper()
    leads = _desk().list(_caller(access_key_id), RequestInfo(str(uuid.uuid4())), wanted)
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


def _decide(decision: str, lead_id: str, access_key_id: str, note: str | None) -> None:
    lead = _desk().decide(lead_id, decision, _caller(access_key_id), RequestInfo(str(uuid.uuid4())), note)
    click.echo(f"lead {lead_id}: {lead['Status']}")


@review.command("confirm")
@click.argument("lead_id")
@_key_option
@click.option("--note", default=None, help="Why (kept in the queue and the audit log).")
@workspace_options
def confirm(lead_id: str, access_key_id: str, note: str | None) -> None:
    """Confirm a lead; it becomes CONFIRMED at the second distinct verifier."""
    _decide("confirm", lead_id, access_key_id, note)


@review.command("reject")
@click.argument("lead_id")
@_key_option
@click.option("--note", default=None, help="Why (kept in the queue and the audit log).")
@workspace_options
def reject(lead_id: str, access_key_id: str, note: str | None) -> None:
    """Reject a lead (one rejection closes it)."""
    _decide("reject", lead_id, access_key_id, note)


commands = [review]
