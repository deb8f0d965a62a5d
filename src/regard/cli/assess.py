"""``regard assess create|approve|reject|list|show``: human-rights impact assessments.

An operator creates an assessment from a form and ``regard evaluate`` reports run on their own
data; an assessor (a key with the ``assessor`` role, not the creator) approves or rejects it.
Until one is approved and current, the identification profile's searches and IndexFaces on the
collections it covers are refused (see :mod:`regard.accountability.assessment`). Every command
appends an audit record (kind ``assessment``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path

import click

from regard.accountability.assessing import AssessmentDesk, scoring_identity
from regard.accountability.assessment import (
    DEFAULT_MATED_SHARE,
    DEFAULT_VALID_DAYS,
    new_record,
    read_form,
    read_report,
)
from regard.accountability.local import local_caller
from regard.accountability.request import Caller, RequestInfo
from regard.cli.common import actor_option, resolve_actor, workspace, workspace_options
from regard.cli.output import emit_json, emit_table
from regard.errors import AccessDenied, RegardError


def _scoring() -> dict[str, str]:
    """The scoring identity ``regard serve`` on this workspace's settings names in its records."""
    from regard.face.engine import Engine

    return scoring_identity(Engine(workspace().settings))


def _desk() -> AssessmentDesk:
    ws = workspace()
    return AssessmentDesk(ws.audit(), ws.assessments(), ws.policies(), _scoring)


def _info() -> RequestInfo:
    return RequestInfo(str(uuid.uuid4()))


@click.group("assess")
def assess() -> None:
    """Human-rights impact assessments: no 1:N identification without an approved, current one."""


@assess.command("create")
@click.option(
    "--collection",
    "collections",
    multiple=True,
    required=True,
    help="A collection id or shell-style pattern the assessment covers (repeatable).",
)
@click.option(
    "--form",
    "form_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    required=True,
    help="The assessment form, TOML or JSON (see docs/accountability.md).",
)
@click.option(
    "--report",
    "reports",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    multiple=True,
    required=True,
    help="A report.json of regard evaluate run on your own data (repeatable).",
)
@click.option(
    "--gates",
    "gates_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Gates TOML every report must pass (default: the gates each report was made with).",
)
@click.option("--profile", default="identification", show_default=True, help="The policy profile assessed.")
@click.option(
    "--valid-days",
    type=int,
    default=DEFAULT_VALID_DAYS,
    show_default=True,
    help="Days until the assessment expires.",
)
@actor_option
@workspace_options
def create(
    collections: tuple[str, ...],
    form_path: Path,
    reports: tuple[Path, ...],
    gates_path: Path | None,
    profile: str,
    valid_days: int,
    actor: str | None,
) -> None:
    """Create an assessment (PENDING_APPROVAL until an assessor approves it) and print it as JSON."""
    from regard.evaluation.gates import load_gates

    ws = workspace()
    caller = local_caller(resolve_actor(actor))
    desk = _desk()
    info = _info()
    try:
        chosen = ws.policies().load().profile(profile)
        scoring = _scoring()
        form, form_sha256 = read_form(form_path)
        mated = float(form.get("expected_mated_share", DEFAULT_MATED_SHARE))
        gates = load_gates(gates_path) if gates_path is not None else None
        cited = [
            read_report(path, scoring, gates=gates, gates_source=str(gates_path or ""), mated_share=mated)
            for path in reports
        ]
        record = new_record(
            profile=chosen,
            collections=collections,
            scoring=scoring,
            form=form,
            form_sha256=form_sha256,
            reports=cited,
            created_by=caller.principal,
            created_by_key=None,
            now=desk.store.clock(),
            valid_days=valid_days,
        )
    except RegardError as exc:
        desk.refused(
            "AssessmentCreate", caller, info, exc, {"profile": profile, "collections": list(collections)}
        )
        raise
    emit_json(_summary(desk.create(record, caller, info)))


def _summary(found: Mapping[str, object]) -> dict[str, object]:
    """What ``create``, ``approve`` and ``reject`` print: the id, status, hashes and verdicts."""
    record = found["Record"]
    assert isinstance(record, dict)
    return {
        "AssessmentId": found["AssessmentId"],
        "Status": found["Status"],
        "RecordSha256": found["RecordSha256"],
        "Profile": record["scope"]["profile"],
        "Collections": record["scope"]["collections"],
        "Scoring": record["scope"]["scoring"],
        "Floor": record["scope"]["floor"],
        "CreatedAt": record["created_at"],
        "ExpiresAt": record["expires_at"],
        "FormSha256": record["form_sha256"],
        "Reports": [
            {
                "File": r["file"],
                "Sha256": r["sha256"],
                "GatesPassed": r["gates_passed"],
                "Gates": r["gates"],
            }
            for r in record["reports"]
        ],
        "GatesPassed": record["gates_passed"],
        "PredictedRejectionShare": record["predicted_rejection_share"],
        "Events": found["Events"],
        "StaleBecause": found.get("StaleBecause"),
    }


_assessor_key = click.option(
    "--assessor-key",
    "access_key_id",
    required=True,
    help="The assessor's access key id (a key with the assessor role, not the creator's).",
)
_note = click.option("--note", required=True, help="What was checked and why (kept with the decision).")


def _decide(decision: str, assessment_id: str, access_key_id: str) -> tuple[AssessmentDesk, Caller]:
    desk = _desk()
    try:
        key = workspace().keys().get(access_key_id)
        if not key.active:
            raise AccessDenied(f"access key {access_key_id} is revoked")
    except RegardError as exc:
        operation = "AssessmentApprove" if decision == "approve" else "AssessmentReject"
        who = Caller(access_key_id, resolve_actor(None), "unknown", "unknown")
        desk.refused(operation, who, _info(), exc, {"assessment_id": assessment_id})
        raise
    return desk, Caller(key.access_key_id, key.name, key.role, key.profile)


@assess.command("approve")
@click.argument("assessment_id")
@_assessor_key
@_note
@workspace_options
def approve(assessment_id: str, access_key_id: str, note: str) -> None:
    """Approve an assessment as its assessor (refused for a failed gate, or its creator)."""
    desk, caller = _decide("approve", assessment_id, access_key_id)
    emit_json(_summary(desk.decide(assessment_id, "approve", caller, _info(), note)))


@assess.command("reject")
@click.argument("assessment_id")
@_assessor_key
@_note
@workspace_options
def reject(assessment_id: str, access_key_id: str, note: str) -> None:
    """Reject an assessment as its assessor (a change is then a new assessment)."""
    desk, caller = _decide("reject", assessment_id, access_key_id)
    emit_json(_summary(desk.decide(assessment_id, "reject", caller, _info(), note)))


@assess.command("list")
@click.option("--profile", default=None, help="Only the assessments of this profile.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@actor_option
@workspace_options
def list_assessments(profile: str | None, as_json: bool, actor: str | None) -> None:
    """List assessments with their status and, when one no longer holds, why."""
    found = _desk().list(local_caller(resolve_actor(actor)), _info(), profile)
    if as_json:
        emit_json(found)
        return
    emit_table(
        ["assessment", "status", "profile", "collections", "created", "expires", "stale"],
        [
            [
                a["AssessmentId"],
                a["Status"],
                a["Record"]["scope"]["profile"],
                ",".join(a["Record"]["scope"]["collections"]),
                a["Record"]["created_at"],
                a["Record"]["expires_at"],
                a.get("StaleBecause") or "",
            ]
            for a in found
        ],
    )


@assess.command("show")
@click.argument("assessment_id")
@actor_option
@workspace_options
def show(assessment_id: str, actor: str | None) -> None:
    """Print one assessment as JSON (the whole record, its events, and whether it still holds)."""
    emit_json(_desk().describe(assessment_id, local_caller(resolve_actor(actor)), _info()))


commands = [assess]
