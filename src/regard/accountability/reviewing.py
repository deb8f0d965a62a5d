"""The reviewers' side of the two-person rule: reading the lead queue and deciding on leads.

:class:`ReviewDesk` serves the API's ``/regard/review/...`` endpoints and ``regard review``:
each call is logged (kind ``review``) whether it is accepted or refused. The rule itself (two
distinct verifiers, not the requester, one rejection closes a lead) is the queue's
(:mod:`regard.accountability.review`); the guard only puts leads into it.

Scope: a reviewer sees and decides only the leads its key's policy profile covers: the lead's
collection matches the profile's ``collections`` and the profile allows the lead's operation
(a 1:N search), so a key of the verification profile, whatever its role, sees no lead and
decides none. The local operator (``regard review`` without a key) has the ``local`` profile.

The drift signal: after a decision that makes a lead final, the desk finds the current, approved
human-rights impact assessment covering the lead's collection (under the reviewer's profile, or
any profile with ``require_assessment``) and tests the share of rejections among the last
``drift_window`` leads of its collections decided since its approval against the rejection share
its evaluation predicted (:func:`~regard.accountability.assessment.drift`). When that share is
significantly higher it appends one ``DriftDetected`` record (kind ``system``) per episode (a new
one only once every lead of the window that raised the previous one has left it) and, when the
profile has ``suspend_on_drift``, suspends the assessment, which closes the gate until a new
assessment is approved.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from regard.accountability.assessment import Assessment, AssessmentStore, drift
from regard.accountability.audit import AuditChain, AuditLog
from regard.accountability.evidence import DEFAULT_RETENTION_DAYS, EvidenceStore
from regard.accountability.policy import LOCAL_PROFILE, PolicyStore, Profile
from regard.accountability.records import Record, append_failure, caller_record
from regard.accountability.request import Caller, RequestInfo
from regard.accountability.review import CONFIRMED, PENDING, REJECTED, Lead, ReviewQueue, ReviewRefused
from regard.errors import AccessDenied, RegardError

#: The audit operation of the drift signal (kind ``system``).
DRIFT_OPERATION = "DriftDetected"
#: Who suspends an assessment for drift (the assessment event's principal).
DRIFT_PRINCIPAL = "regard:drift"

#: The roles that may read the queue.
READERS = ("verifier", "admin")


class ReviewDesk:
    """Decisions on leads and views of the queue, each recorded in the audit log."""

    def __init__(
        self,
        audit: AuditChain,
        queue: ReviewQueue,
        policy: PolicyStore | None = None,
        assessments: AssessmentStore | None = None,
        evidence: EvidenceStore | None = None,
        evidence_retention_days: int = DEFAULT_RETENTION_DAYS,
    ) -> None:
        self.audit = audit
        #: The leads' face crops, swept after each decision (none: nothing to sweep).
        self.evidence = evidence
        self.evidence_retention_days = evidence_retention_days
        self.queue = queue
        # the queue's own database holds the policy when it is the shared one
        shared = queue.db if queue.db.kind == "postgres" else None
        self.policy = policy or PolicyStore(queue.data_dir, db=shared)
        #: The assessments the drift signal tests (none: no drift signal).
        self.assessments = assessments

    def profile(self, caller: Caller) -> Profile:
        """The caller's policy profile (AccessDenied if policy.toml no longer defines it)."""
        if caller.local and caller.profile == LOCAL_PROFILE.name:
            return LOCAL_PROFILE
        return self.policy.load().profile(caller.profile)

    @classmethod
    def open(cls, data_dir: Path) -> ReviewDesk:
        """The desk of a data directory (its audit log, review queue and assessments)."""
        return cls(AuditLog(data_dir), ReviewQueue(data_dir), assessments=AssessmentStore(data_dir))

    def decide(
        self, lead_id: str, decision: str, caller: Caller, info: RequestInfo, note: str | None = None
    ) -> dict[str, Any]:
        """One reviewer's decision on a lead, logged whether it is accepted or refused."""
        operation = "ReviewConfirm" if decision == "confirm" else "ReviewReject"
        record = _record(caller, info, operation, {"lead_id": lead_id, "note": note})
        record["profile"] = caller.profile
        try:
            if not covers(self.profile(caller), self.queue.get(lead_id)):
                raise ReviewRefused(
                    f"lead {lead_id} is outside profile {caller.profile}: its collections and "
                    "1:N operations do not cover it"
                )
            lead = self.queue.decide(
                lead_id,
                reviewer_key=caller.access_key_id or f"local:{caller.principal}",
                reviewer_principal=caller.principal,
                reviewer_role=caller.role,
                decision=decision,
                note=note,
            )
        except RegardError as exc:
            append_failure(self.audit, record, exc)
            raise
        record["collection"] = lead.collection_id
        record["case_reference"] = lead.case_reference
        record["results"] = {
            "lead_status": lead.status,
            "face_id": lead.face_id,
            "user_id": lead.user_id,
            "search_request_id": lead.request_id,
            "confirmations": sum(1 for d in lead.decisions if d.decision == "confirm"),
        }
        record["outcome"] = "success"
        self.audit.append(record)
        if lead.status in (CONFIRMED, REJECTED):
            self.check_drift(lead, caller)
        self.sweep_evidence()
        return lead.to_json()

    def sweep_evidence(self) -> int:
        """Delete the crops of leads decided or withdrawn more than the retention ago (and of
        leads that are gone); returns the number deleted. Never fails a decision."""
        if self.evidence is None:
            return 0
        try:
            now = datetime.now(UTC)
            states: list[tuple[str, str | None]] = []
            for lead_id in self.evidence.lead_ids():
                try:
                    lead = self.queue.get(lead_id)
                except RegardError:  # the lead is gone (erased): its crops go too
                    states.append((lead_id, now.isoformat()))
                    continue
                states.append((lead_id, lead.decided_at if lead.status != PENDING else None))
            return self.evidence.expire(states, self.evidence_retention_days, now)
        except RegardError:
            return 0

    # -- the drift signal -------------------------------------------------------------------
    def check_drift(self, lead: Lead, caller: Caller) -> list[Record]:
        """Test the drift of each assessment covering ``lead``'s collection (see the module
        docstring); returns the ``DriftDetected`` records written. The decision stands whatever
        happens here: a failure is recorded (``DriftCheck``, outcome error), not raised."""
        if self.assessments is None:
            return []
        written: list[Record] = []
        try:
            for profile, found in self._assessed(lead, caller):
                rec = self._drift_of(profile, found)
                if rec is not None:
                    written.append(rec)
        except Exception as exc:  # the decision is committed and logged: record the failure only
            append_failure(
                self.audit,
                {
                    "kind": "system",
                    "operation": "DriftCheck",
                    "collection": lead.collection_id,
                    "parameters": {"lead_id": lead.lead_id},
                },
                exc,
            )
        return written

    def _assessed(self, lead: Lead, caller: Caller) -> list[tuple[Profile, Assessment]]:
        """The current approved assessments covering the lead's collection: under the reviewer's
        profile and under every profile with ``require_assessment``, each once."""
        assert self.assessments is not None
        profiles = [self.profile(caller)]  # read before the decision: it exists
        profiles += [p for p in self.policy.load().profiles.values() if p.require_assessment]
        out: list[tuple[Profile, Assessment]] = []
        seen: set[str] = set()
        for profile in profiles:
            if profile.name in seen:
                continue
            seen.add(profile.name)
            found, _ = self.assessments.current(profile, lead.collection_id, None)
            if found is not None and found.assessment_id not in {a.assessment_id for _, a in out}:
                out.append((profile, found))
        return out

    def _drift_of(self, profile: Profile, found: Assessment) -> Record | None:
        """Test one assessment; its ``DriftDetected`` record when a new episode is flagged."""
        assert self.assessments is not None
        predicted = found.predicted_rejection_share
        approval = found.decision
        if predicted is None or approval is None:
            return None
        since = datetime.strptime(approval.at, "%Y-%m-%dT%H:%M:%SZ").strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        window = self.queue.final_decisions(
            covers=found.covers, decided_since=since, limit=profile.drift_window
        )
        result = drift([status == REJECTED for _, status, _ in window], predicted, profile.drift_alpha)
        if not result.flagged:
            return None
        previous = last_drift_record(self.audit, found.assessment_id)
        if previous is not None and window and window[0][2] <= str(previous["time"]):
            return None  # the episode already recorded: a lead it counted is still in the window
        suspend = profile.suspend_on_drift
        if suspend:
            self.assessments.suspend(
                found.assessment_id,
                reason=(
                    f"reviewers rejected {result.rejected} of the last {result.leads} leads "
                    f"({result.share:.0%}), significantly more than the {predicted:.1%} predicted "
                    f"(p = {result.p_value:.2g} < {result.alpha:g})"
                ),
                principal=DRIFT_PRINCIPAL,
            )
        return self.audit.append(
            {
                "kind": "system",
                "operation": DRIFT_OPERATION,
                "principal": DRIFT_PRINCIPAL,
                "profile": profile.name,
                "parameters": {
                    "assessment_id": found.assessment_id,
                    "window": profile.drift_window,
                    "alpha": profile.drift_alpha,
                },
                "results": {**result.to_json(), "suspended": suspend},
                "outcome": "success",
            }
        )

    def list(self, caller: Caller, info: RequestInfo, status: str | None) -> list[dict[str, Any]]:
        """The queue as a verifier or admin sees it; the access is logged."""
        record = _record(caller, info, "ReviewList", {"status": status})
        try:
            if caller.role not in READERS:
                raise AccessDenied("only verifier and admin keys may read the review queue")
            profile = self.profile(caller)
            leads = self.queue.list(status=status, visible=lambda lead: covers(profile, lead))
        except RegardError as exc:
            append_failure(self.audit, record, exc)
            raise
        record["outcome"] = "success"
        record["results"] = {"leads": len(leads)}
        self.audit.append(record)
        return [lead.to_json() for lead in leads]


def last_drift_record(audit: AuditChain, assessment_id: str) -> Record | None:
    """The newest ``DriftDetected`` record of an assessment in the audit log, if any."""
    found: Record | None = None
    for rec in audit.records():
        if (
            rec.get("operation") == DRIFT_OPERATION
            and rec.get("kind") == "system"
            and (rec.get("parameters") or {}).get("assessment_id") == assessment_id
        ):
            found = rec
    return found


def covers(profile: Profile, lead: Lead) -> bool:
    """Whether a reviewer of ``profile`` may see and decide ``lead``: its collection and its
    operation (the 1:N search that made it) are both the profile's."""
    return profile.allows_collection(lead.collection_id) and profile.allows_operation(lead.operation)


def _record(caller: Caller, info: RequestInfo, operation: str, parameters: dict[str, Any]) -> Record:
    return caller_record("review", caller, info, operation, parameters)
