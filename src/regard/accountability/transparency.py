"""The transparency report's data: what 1:N identification did over a period, from the records.

:func:`build` reads the audit chain (:meth:`~regard.accountability.audit.AuditChain.records`, so
the data directory's file log or the PostgreSQL chain alike), the assessment store and the policy,
and returns a JSON-ready dict (:data:`SECTIONS` are its parts; the HTML page and the JSON file are
:mod:`regard.accountability.transparency_html`'s):

- ``assessments``: every human-rights impact assessment created before the period ended, with its
  status, dates, the verdict of each gate of each evaluation report it cites, the rejection share
  its evaluation predicted, whether it was in force during the period and is now, and why not;
- ``searches``: biometric operations per month by profile, purpose and operation, identification
  (1:N) apart, with their outcomes: done, refused (``AccessDeniedException``: policy, gate,
  floor) or failed;
- ``leads``: per month, the candidate leads 1:N searches raised (the matches their records name
  as leads) and the leads reviewers made final: confirmed by two verifiers, or rejected; the share
  rejected is the field false-positive signal. For each assessment in force, the drift test over
  its profile's ``drift_window`` latest leads of its collections decided after its approval
  (:func:`~regard.accountability.assessment.drift`) and the ``DriftDetected`` records written;
- ``requests``: data subjects' erasure (``Erase``) and subject-access (``SubjectAccess``)
  requests served (and failed) per month;
- ``audit``: the chain's head (seq and hash) and the result of verifying it.

The audit log is the source of truth (erasure deletes leads from the queue, not their records).
The report holds counts, months, profiles, purposes, operation names, assessment ids and scopes:
never an image, a template, a FaceId, UserId or ExternalImageId, a case reference, a lead id or
who was searched.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from regard.accountability.assessment import APPROVED, Assessment, AssessmentStore, drift
from regard.accountability.audit import AuditChain, parse_time
from regard.accountability.policy import PolicyStore, Profile
from regard.accountability.review import CONFIRMED, REJECTED
from regard.catalogue import OPERATIONS_BY_NAME
from regard.errors import RegardError

#: The report's sections, in order: (id, title). The ids are the JSON keys and the HTML anchors.
SECTIONS = (
    ("assessments", "Human-rights impact assessments"),
    ("searches", "Biometric searches"),
    ("leads", "Candidate leads and reviewers' decisions"),
    ("drift", "Drift signal"),
    ("requests", "Data subjects' requests"),
    ("audit", "Audit chain"),
)
#: The error code of a request the policy or the assessment gate refused.
REFUSED_CODE = "AccessDeniedException"
DRIFT_OPERATION = "DriftDetected"
#: The form fields an assessment publishes (the rest is for the assessor and the authority).
PUBLIC_FORM_FIELDS = ("organisation", "purpose", "legal_basis", "children_affected", "human_oversight")


@dataclass(frozen=True)
class Period:
    """``since <= t < until``, UTC."""

    since: datetime
    until: datetime

    def __contains__(self, t: object) -> bool:
        return isinstance(t, datetime) and self.since <= t < self.until

    def months(self) -> list[str]:
        """Every month (``YYYY-MM``) the period touches, in order."""
        out: list[str] = []
        y, m = self.since.year, self.since.month
        last = self.until.year * 12 + self.until.month - 1
        if self.until == datetime(self.until.year, self.until.month, 1, tzinfo=UTC):
            last -= 1  # until is exclusive: a period ending on the 1st does not touch that month
        while y * 12 + m - 1 <= last:
            out.append(f"{y:04d}-{m:02d}")
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return out


def month_of(t: datetime) -> str:
    return f"{t.year:04d}-{t.month:02d}"


def _time(rec: Mapping[str, Any]) -> datetime | None:
    try:
        return parse_time(str(rec.get("time", "")))
    except RegardError:
        return None


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- classifying records ---------------------------------------------------------------------------


def is_search(rec: Mapping[str, Any]) -> bool:
    """A biometric operation's outcome record (not its intent)."""
    return rec.get("kind") == "biometric"


def category(operation: str) -> str:
    """``identification`` for a 1:N search, else ``other``."""
    op = OPERATIONS_BY_NAME.get(operation)
    return "identification" if op is not None and op.identification else "other"


def outcome_of(rec: Mapping[str, Any]) -> str:
    """``success``, ``refused`` (AccessDeniedException) or ``failed`` (any other error, or unknown)."""
    if rec.get("outcome") == "success":
        return "success"
    if rec.get("outcome") == "error" and (rec.get("error") or {}).get("code") == REFUSED_CODE:
        return "refused"
    return "failed"


def leads_raised(rec: Mapping[str, Any]) -> int:
    """How many leads a biometric record's search raised (its matches that name a lead), or a
    video search raised when its job ended (the ``FaceSearchCompleted`` record's lead ids)."""
    if rec.get("kind") == "system" and rec.get("operation") == "FaceSearchCompleted":
        return len((rec.get("results") or {}).get("lead_ids") or [])
    if not is_search(rec) or rec.get("outcome") != "success":
        return 0
    matches = (rec.get("results") or {}).get("matches") or []
    return sum(1 for m in matches if isinstance(m, Mapping) and m.get("lead_id"))


def final_decision(rec: Mapping[str, Any]) -> str | None:
    """``CONFIRMED`` or ``REJECTED`` when this review record made a lead final, else None."""
    if rec.get("kind") != "review" or rec.get("outcome") != "success":
        return None
    if rec.get("operation") not in ("ReviewConfirm", "ReviewReject"):
        return None
    status = (rec.get("results") or {}).get("lead_status")
    return str(status) if status in (CONFIRMED, REJECTED) else None


# -- the report ------------------------------------------------------------------------------------


def build(
    audit: AuditChain,
    assessments: AssessmentStore,
    policies: PolicyStore,
    period: Period,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The transparency report's data for ``period`` (see the module docstring)."""
    now = now or datetime.now(UTC)
    verified = audit.verify()
    head_seq, head_hash = audit.head()
    records = [r for r in audit.records() if int(r.get("seq", 0)) <= head_seq]
    timed = [(t, r) for r in records if (t := _time(r)) is not None]
    in_period = [(t, r) for t, r in timed if t in period]
    scoring = next((r["scoring"] for r in reversed(records) if isinstance(r.get("scoring"), dict)), None)
    config = policies.load()
    months = period.months()
    found = [a for a in assessments.list() if _created(a) < period.until]
    items = [_assessment(a, config.profiles.get(a.profile), scoring, period, now) for a in found]
    in_force = [a for a, item in zip(found, items, strict=True) if item["in_force_during_period"]]
    finals = [(t, r, s) for t, r in timed if (s := final_decision(r)) is not None]
    return {
        "title": "regard transparency report",
        "generated_at": _iso(now),
        "period": {"since": _iso(period.since), "until": _iso(period.until), "months": months},
        "assessments": {
            "created": len([a for a in found if _created(a) in period]),
            "in_force_during_period": [a.assessment_id for a in in_force],
            "in_force_now": [i["assessment_id"] for i in items if i["in_force_now"]],
            "items": items,
        },
        "searches": _searches(in_period),
        "leads": _leads(in_period, months),
        "drift": {
            "tests": [_drift_test(a, config.profiles.get(a.profile), finals, period) for a in in_force],
            "records": [_drift_record(t, r) for t, r in in_period if _is_drift(r)],
        },
        "requests": _requests(in_period, months),
        "audit": {
            "head": {"seq": head_seq, "hash": head_hash},
            "verify": {
                "ok": verified.ok,
                "records": verified.records,
                "head_hash": verified.head_hash,
                "broken_seq": verified.broken_seq,
                "reason": verified.reason,
            },
            "records_in_period": len(in_period),
        },
    }


def _created(a: Assessment) -> datetime:
    return parse_time(str(a.record["created_at"]))


def _assessment(
    a: Assessment,
    profile: Profile | None,
    scoring: Mapping[str, str] | None,
    period: Period,
    now: datetime,
) -> dict[str, Any]:
    """What the report says of one assessment: scope, form summary, gates, dates, status."""
    decision = a.decision
    decided = parse_time(decision.at) if decision is not None else None
    suspension = a.suspension
    suspended = parse_time(suspension.at) if suspension is not None else None
    if profile is None:
        stale: str | None = f"the policy no longer defines the {a.profile} profile"
    else:
        stale = a.staleness(profile, scoring, now)
    approved = a.status == APPROVED and decided is not None
    during = (
        approved
        and decided is not None
        and decided < period.until
        and a.expires_at > period.since
        and (suspended is None or suspended > period.since)
    )
    form = a.record.get("form") or {}
    return {
        "assessment_id": a.assessment_id,
        "record_sha256": a.record_sha256,
        "profile": a.profile,
        "collections": list(a.collections),
        "scoring": dict(a.record["scope"].get("scoring") or {}),
        "floor": dict(a.record["scope"].get("floor") or {}),
        "status": a.status,
        "created_at": a.record["created_at"],
        "decided_at": decision.at if decision is not None else None,
        "expires_at": a.record["expires_at"],
        "suspended_at": suspension.at if suspension is not None else None,
        "suspension_reason": suspension.note if suspension is not None else None,
        "in_force_now": approved and stale is None,
        "in_force_during_period": bool(during),
        "stale_because": stale if approved else None,
        "form": {k: form[k] for k in PUBLIC_FORM_FIELDS if k in form},
        "gates_passed": bool(a.record.get("gates_passed")),
        "predicted_rejection_share": a.predicted_rejection_share,
        "reports": [
            {
                "file": r.get("file"),
                "sha256": r.get("sha256"),
                "dataset": {k: (r.get("dataset") or {}).get(k) for k in ("name", "images", "subjects")},
                "gates_passed": bool(r.get("gates_passed")),
                "predicted_rejection_share": r.get("predicted_rejection_share"),
                "gates": [
                    {
                        "name": g.get("name"),
                        "where": g.get("where"),
                        "value": g.get("value"),
                        "limit": g.get("limit"),
                        "passed": bool(g.get("passed")),
                    }
                    for g in r.get("gates") or []
                ],
            }
            for r in a.record.get("reports") or []
        ],
    }


def _searches(in_period: Iterable[tuple[datetime, Mapping[str, Any]]]) -> dict[str, Any]:
    """Biometric operations per month, profile, purpose and operation, with their outcomes."""
    rows: dict[tuple[str, str, str, str, str], Counter[str]] = {}
    totals: dict[str, Counter[str]] = {"identification": Counter(), "other": Counter()}
    for t, rec in in_period:
        if not is_search(rec):
            continue
        operation = str(rec.get("operation"))
        cat = category(operation)
        key = (month_of(t), cat, str(rec.get("profile")), str(rec.get("purpose") or ""), operation)
        outcome = outcome_of(rec)
        rows.setdefault(key, Counter())[outcome] += 1
        totals[cat][outcome] += 1
    out_rows = [
        {
            "month": month,
            "category": cat,
            "profile": profile,
            "purpose": purpose or None,
            "operation": operation,
            "total": sum(c.values()),
            "success": c["success"],
            "refused": c["refused"],
            "failed": c["failed"],
        }
        for (month, cat, profile, purpose, operation), c in sorted(rows.items())
    ]
    return {
        "rows": out_rows,
        "totals": {
            cat: {
                "total": sum(c.values()),
                "success": c["success"],
                "refused": c["refused"],
                "failed": c["failed"],
            }
            for cat, c in totals.items()
        },
    }


def _share(rejected: int, decided: int) -> float | None:
    return rejected / decided if decided else None


def _leads(in_period: Iterable[tuple[datetime, Mapping[str, Any]]], months: list[str]) -> dict[str, Any]:
    """Leads raised, confirmed and rejected per month, and the share rejected."""
    raised: Counter[str] = Counter()
    confirmed: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    for t, rec in in_period:
        m = month_of(t)
        raised[m] += leads_raised(rec)
        status = final_decision(rec)
        if status == CONFIRMED:
            confirmed[m] += 1
        elif status == REJECTED:
            rejected[m] += 1
    rows = [
        {
            "month": m,
            "raised": raised[m],
            "confirmed": confirmed[m],
            "rejected": rejected[m],
            "decided": confirmed[m] + rejected[m],
            "rejected_share": _share(rejected[m], confirmed[m] + rejected[m]),
        }
        for m in months
    ]
    total_c, total_r = sum(confirmed.values()), sum(rejected.values())
    return {
        "months": rows,
        "totals": {
            "raised": sum(raised.values()),
            "confirmed": total_c,
            "rejected": total_r,
            "decided": total_c + total_r,
            "rejected_share": _share(total_r, total_c + total_r),
        },
    }


def _drift_test(
    a: Assessment,
    profile: Profile | None,
    finals: Sequence[tuple[datetime, Mapping[str, Any], str]],
    period: Period,
) -> dict[str, Any]:
    """The drift test of an assessment in force, as of the period's end: its profile's
    ``drift_window`` latest leads of its collections made final after its approval."""
    decision = a.decision
    out: dict[str, Any] = {"assessment_id": a.assessment_id, "profile": a.profile}
    predicted = a.predicted_rejection_share
    if profile is None or decision is None or predicted is None:
        why = "no prediction in its evaluation" if predicted is None else "its profile is gone"
        return {**out, "tested": False, "why_not": why}
    approved = parse_time(decision.at)
    mine = [
        s
        for t, rec, s in finals
        if approved <= t < period.until
        and isinstance(rec.get("collection"), str)
        and a.covers(rec["collection"])
    ]
    window = mine[-profile.drift_window :]
    result = drift([s == REJECTED for s in window], predicted, profile.drift_alpha)
    return {**out, "tested": True, "window": profile.drift_window, **result.to_json()}


def _is_drift(rec: Mapping[str, Any]) -> bool:
    return rec.get("kind") == "system" and rec.get("operation") == DRIFT_OPERATION


def _drift_record(t: datetime, rec: Mapping[str, Any]) -> dict[str, Any]:
    results = rec.get("results") or {}
    keep = ("leads", "rejected", "rejected_share", "predicted_share", "p_value", "alpha", "suspended")
    return {
        "time": _iso(t),
        "seq": rec.get("seq"),
        "assessment_id": (rec.get("parameters") or {}).get("assessment_id"),
        **{k: results.get(k) for k in keep},
    }


def _requests(in_period: Iterable[tuple[datetime, Mapping[str, Any]]], months: list[str]) -> dict[str, Any]:
    """Erasure and subject-access requests per month: served (success) and failed."""
    counts: dict[str, Counter[str]] = {m: Counter() for m in months}
    for t, rec in in_period:
        operation = rec.get("operation")
        if rec.get("kind") != "admin" or operation not in ("Erase", "SubjectAccess"):
            continue
        c = counts.setdefault(month_of(t), Counter())
        name = "erasures" if operation == "Erase" else "subject_access"
        if rec.get("outcome") == "success":
            c[name] += 1
            if operation == "Erase":
                c["faces_erased"] += len((rec.get("results") or {}).get("DeletedFaces") or [])
        else:
            c[name + "_failed"] += 1
    fields = ("erasures", "erasures_failed", "faces_erased", "subject_access", "subject_access_failed")
    rows = [{"month": m, **{f: c[f] for f in fields}} for m, c in sorted(counts.items())]
    return {"months": rows, "totals": {f: sum(r[f] for r in rows) for f in fields}}
