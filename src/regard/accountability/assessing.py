"""The assessors' side of human-rights impact assessments: reading, approving, rejecting, creating.

:class:`AssessmentDesk` serves the API's ``/regard/assessments/...`` endpoints and ``regard
assess``: each call appends one audit record (kind ``assessment``) whether it is accepted or
refused::

    {"kind": "assessment", "operation": "AssessmentCreate" | "AssessmentList" |
     "AssessmentDescribe" | "AssessmentApprove" | "AssessmentReject",
     "request_id", "access_key_id", "principal", "role",
     "parameters": {"assessment_id", "note", ...},
     "results": {"status", "record_sha256", ...}, "outcome": "success" | "error", "error"}

The rules (an assessor approves, never the creator, a failed gate blocks approval...) are the
store's (:class:`regard.accountability.assessment.AssessmentStore`); this desk checks who may
read, and records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from regard.accountability.assessment import ASSESSOR_ROLE, Assessment, AssessmentStore
from regard.accountability.audit import AuditChain
from regard.accountability.policy import PolicyStore, Profile
from regard.accountability.records import Record, append_failure, caller_record
from regard.accountability.request import Caller, RequestInfo
from regard.errors import AccessDenied, RegardError

if TYPE_CHECKING:
    from regard.face.engine import Engine

#: The roles that may read assessments (list and describe).
READERS = ("admin", ASSESSOR_ROLE, "operator")

KIND = "assessment"


def scoring_identity(engine: Engine) -> dict[str, str]:
    """The scoring identity the server's audit records name (``record["scoring"]``): the
    embedding model's key and the normalizer's and calibration table's identity."""
    return {"model": engine.model_identity.key, **engine.scorer.identity()}


class AssessmentDesk:
    """Views of and decisions on assessments, each recorded in the audit log."""

    def __init__(
        self,
        audit: AuditChain,
        store: AssessmentStore,
        policies: PolicyStore,
        scoring: Callable[[], Mapping[str, str] | None] = lambda: None,
    ) -> None:
        self.audit = audit
        self.store = store
        self.policies = policies
        #: The scoring identity in force, for the staleness shown with each assessment.
        self.scoring = scoring

    # -- views ------------------------------------------------------------------------------
    def view(self, assessment: Assessment) -> dict[str, Any]:
        """An assessment as JSON, with ``StaleBecause`` against the policy and scoring in force
        (None while it holds; a profile policy.toml no longer defines says so)."""
        profile: Profile | None = self.policies.load().profiles.get(assessment.profile)
        if profile is None:
            out = assessment.to_json()
            out["StaleBecause"] = f"the policy no longer defines profile {assessment.profile}"
            return out
        return assessment.to_json(now=self.store.clock(), profile=profile, scoring=self.scoring())

    def list(self, caller: Caller, info: RequestInfo, profile: str | None = None) -> list[dict[str, Any]]:
        """Every assessment (of ``profile`` when given), as an admin, assessor or operator sees them."""
        record = _record(
            caller, info, "AssessmentList", {"assessment_id": None, "note": None, "profile": profile}
        )
        try:
            _may_read(caller)
            found = [self.view(a) for a in self.store.list(profile)]
        except RegardError as exc:
            append_failure(self.audit, record, exc)
            raise
        record["results"] = {"assessments": len(found)}
        record["outcome"] = "success"
        self.audit.append(record)
        return found

    def describe(self, assessment_id: str, caller: Caller, info: RequestInfo) -> dict[str, Any]:
        """One assessment."""
        record = _record(caller, info, "AssessmentDescribe", {"assessment_id": assessment_id, "note": None})
        try:
            _may_read(caller)
            found = self.view(self.store.get(assessment_id))
        except RegardError as exc:
            append_failure(self.audit, record, exc)
            raise
        record["results"] = {"status": found["Status"], "record_sha256": found["RecordSha256"]}
        record["outcome"] = "success"
        self.audit.append(record)
        return found

    # -- changes ----------------------------------------------------------------------------
    def decide(
        self, assessment_id: str, decision: str, caller: Caller, info: RequestInfo, note: str | None
    ) -> dict[str, Any]:
        """An assessor's approval or rejection (``decision``: approve or reject)."""
        operation = "AssessmentApprove" if decision == "approve" else "AssessmentReject"
        record = _record(caller, info, operation, {"assessment_id": assessment_id, "note": note})
        try:
            decided = self.store.decide(
                assessment_id,
                decision,
                principal=caller.principal,
                role=caller.role,
                access_key_id=caller.access_key_id,
                note=note,
            )
        except RegardError as exc:
            append_failure(self.audit, record, exc)
            raise
        record["results"] = {"status": decided.status, "record_sha256": decided.record_sha256}
        record["outcome"] = "success"
        self.audit.append(record)
        return self.view(decided)

    def create(self, record_body: Mapping[str, Any], caller: Caller, info: RequestInfo) -> dict[str, Any]:
        """Store a new assessment (made by :func:`regard.accountability.assessment.new_record`)."""
        scope = record_body.get("scope") or {}
        record = _record(
            caller,
            info,
            "AssessmentCreate",
            {
                "assessment_id": None,
                "note": None,
                "profile": scope.get("profile"),
                "collections": scope.get("collections"),
                "form_sha256": record_body.get("form_sha256"),
                "reports_sha256": [r.get("sha256") for r in record_body.get("reports", [])],
            },
        )
        try:
            made = self.store.create(record_body)
        except RegardError as exc:
            append_failure(self.audit, record, exc)
            raise
        record["parameters"]["assessment_id"] = made.assessment_id
        record["results"] = {
            "status": made.status,
            "record_sha256": made.record_sha256,
            "gates_passed": made.record["gates_passed"],
        }
        record["outcome"] = "success"
        self.audit.append(record)
        return self.view(made)

    def refused(
        self,
        operation: str,
        caller: Caller,
        info: RequestInfo,
        exc: RegardError,
        parameters: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a call refused before it reached the desk (an unknown or revoked key at the
        command line, a form or report that does not hold)."""
        record = _record(caller, info, operation, {"assessment_id": None, "note": None, **(parameters or {})})
        append_failure(self.audit, record, exc)


def _may_read(caller: Caller) -> None:
    if caller.role not in READERS:
        raise AccessDenied(f"only {', '.join(READERS)} keys may read assessments")


def _record(caller: Caller, info: RequestInfo, operation: str, parameters: dict[str, Any]) -> Record:
    return caller_record(KIND, caller, info, operation, parameters)
