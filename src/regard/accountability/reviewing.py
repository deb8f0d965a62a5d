"""The reviewers' side of the two-person rule: reading the lead queue and deciding on leads.

:class:`ReviewDesk` serves the API's ``/regard/review/...`` endpoints and ``regard review``:
each call is logged (kind ``review``) whether it is accepted or refused. The rule itself (two
distinct verifiers, not the requester, one rejection closes a lead) is the queue's
(:mod:`regard.accountability.review`); the guard only puts leads into it.

Scope: a reviewer sees and decides only the leads its key's policy profile covers: the lead's
collection matches the profile's ``collections`` and the profile allows the lead's operation
(a 1:N search), so a key of the verification profile, whatever its role, sees no lead and
decides none. The local operator (``regard review`` without a key) has the ``local`` profile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from regard.accountability.audit import AuditChain, AuditLog
from regard.accountability.policy import LOCAL_PROFILE, PolicyStore, Profile
from regard.accountability.records import Record, append_failure
from regard.accountability.request import Caller, RequestInfo
from regard.accountability.review import Lead, ReviewQueue, ReviewRefused
from regard.errors import AccessDenied, RegardError

#: The roles that may read the queue.
READERS = ("verifier", "admin")


class ReviewDesk:
    """Decisions on leads and views of the queue, each recorded in the audit log."""

    def __init__(self, audit: AuditChain, queue: ReviewQueue, policy: PolicyStore | None = None) -> None:
        self.audit = audit
        self.queue = queue
        # the queue's own database holds the policy when it is the shared one
        shared = queue.db if queue.db.kind == "postgres" else None
        self.policy = policy or PolicyStore(queue.data_dir, db=shared)

    def profile(self, caller: Caller) -> Profile:
        """The caller's policy profile (AccessDenied if policy.toml no longer defines it)."""
        if caller.local and caller.profile == LOCAL_PROFILE.name:
            return LOCAL_PROFILE
        return self.policy.load().profile(caller.profile)

    @classmethod
    def open(cls, data_dir: Path) -> ReviewDesk:
        """The desk of a data directory (its audit log and review queue)."""
        return cls(AuditLog(data_dir), ReviewQueue(data_dir))

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
        return lead.to_json()

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


def covers(profile: Profile, lead: Lead) -> bool:
    """Whether a reviewer of ``profile`` may see and decide ``lead``: its collection and its
    operation (the 1:N search that made it) are both the profile's."""
    return profile.allows_collection(lead.collection_id) and profile.allows_operation(lead.operation)


def _record(caller: Caller, info: RequestInfo, operation: str, parameters: dict[str, Any]) -> Record:
    """The start of a review record: who asked, for what."""
    return {
        "kind": "review",
        "request_id": info.request_id,
        "access_key_id": caller.access_key_id,
        "principal": caller.principal,
        "role": caller.role,
        "operation": operation,
        "parameters": parameters,
    }
