"""Human-rights impact assessments: the records that open 1:N identification, and the gate.

An operator creates an assessment (``regard assess create``) for a *scope*: a policy profile
(normally ``identification``), the collections it covers (ids or shell-style patterns), the
scoring identity in force (model, normalizer and calibration table, as every audit record names
them) and the profile's threshold floor in force (``max_fmr``, ``max_fpir``). It is built from

- a **form** (TOML or JSON, :data:`FORM_FIELDS`): organisation, purpose, legal basis, people
  affected, children, expected volume, risks, mitigations, human oversight, complaints and
  redress, retention;
- one or more ``regard evaluate`` **report.json** files run on the deployer's own data, with the
  **gates** each must pass (the report's own ``gates`` section, or a gates TOML given at
  creation and checked against the report then).

It stores the sha256 of the form and of each report, each gate's verdict, the dates and an
expiry (:data:`DEFAULT_VALID_DAYS`), and is ``PENDING_APPROVAL`` until an **assessor** (a key
with the ``assessor`` role, not the person who created it) approves or rejects it. A failed gate
blocks approval.

Records are append-only: the ``assessments`` table holds each record's canonical JSON and its
hash; decisions, suspensions and lifts are rows of ``assessment_events``. Neither table may be
updated or deleted (triggers refuse it), so a change is a new assessment. The tables live in
``<data_dir>/assessments.sqlite3``, or in the PostgreSQL database several nodes share.

The gate (:meth:`AssessmentStore.gate`): an operation under a profile with
``require_assessment`` on a collection is allowed only when an approved assessment of that
profile covers the collection and is **current**: not expired, made for the scoring identity in
force, for a floor no less strict than the profile's now, and not suspended by the drift signal.
Otherwise :class:`~regard.errors.AccessDenied` names the missing step.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import threading
import tomllib
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from regard.accountability.policy import Profile
from regard.errors import AccessDenied, InvalidParameter, RegardError
from regard.shared_db import Cursor, SharedDb, SqliteDb

FILE_NAME = "assessments.sqlite3"
#: An assessment's validity unless ``--valid-days`` says otherwise: 12 months.
DEFAULT_VALID_DAYS = 365
#: The role whose keys approve or reject assessments.
ASSESSOR_ROLE = "assessor"

PENDING = "PENDING_APPROVAL"
APPROVED = "APPROVED"
REJECTED = "REJECTED"

#: The operations the gate applies to under a profile with ``require_assessment``.
GATED_OPERATIONS = frozenset(
    {
        "SearchFaces",
        "SearchFacesByImage",
        "SearchUsers",
        "SearchUsersByImage",
        "IndexFaces",
        "StartFaceSearch",  # a search of stored video (issue 20)
    }
)

#: The form's fields: name -> (kind, required, what it says). Kinds: ``text`` (a non-empty
#: string), ``list`` (a non-empty list of non-empty strings), ``bool``, ``volume`` (a table of
#: non-negative integers ``searches_per_month`` and ``gallery_size``), ``share`` (a number in
#: (0, 1]).
FORM_FIELDS: dict[str, tuple[str, bool, str]] = {
    "organisation": ("text", True, "the deploying organisation (the controller)"),
    "purpose": ("text", True, "what identification is used for, concretely"),
    "legal_basis": ("text", True, "the law that allows it (e.g. national law under AI Act art. 5(2))"),
    "affected_people": ("list", True, "categories of people whose faces are searched or enrolled"),
    "children_affected": ("bool", True, "whether children can be among them"),
    "expected_volume": ("volume", True, "searches_per_month and gallery_size"),
    "risks": ("list", True, "risks to fundamental rights identified"),
    "mitigations": ("list", True, "the measures taken against each risk"),
    "human_oversight": ("text", True, "who verifies matches, how (two-person review), with what training"),
    "complaints": ("text", True, "the complaint and redress channel for people affected"),
    "retention": ("text", True, "how long probes, leads, templates and records are kept"),
    "expected_mated_share": (
        "share",
        False,
        "share of searches whose subject is enrolled (default 0.5); with the evaluation's FPIR and "
        "FNIR at the floor it predicts the share of leads reviewers should reject",
    ),
}
DEFAULT_MATED_SHARE = 0.5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS assessments (
    assessment_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    profile TEXT NOT NULL,
    record TEXT NOT NULL,
    record_sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS assessment_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    assessment_id TEXT NOT NULL REFERENCES assessments (assessment_id),
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    principal TEXT NOT NULL,
    access_key_id TEXT,
    note TEXT
);
CREATE TRIGGER IF NOT EXISTS assessments_no_update BEFORE UPDATE ON assessments
BEGIN SELECT RAISE(ABORT, 'assessments are append-only: a change is a new assessment'); END;
CREATE TRIGGER IF NOT EXISTS assessments_no_delete BEFORE DELETE ON assessments
BEGIN SELECT RAISE(ABORT, 'assessments are append-only: a change is a new assessment'); END;
CREATE TRIGGER IF NOT EXISTS assessment_events_no_update BEFORE UPDATE ON assessment_events
BEGIN SELECT RAISE(ABORT, 'assessment events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS assessment_events_no_delete BEFORE DELETE ON assessment_events
BEGIN SELECT RAISE(ABORT, 'assessment events are append-only'); END;
"""

#: Event kinds: an assessor's decision, the drift signal's suspension, and its lifting.
EVENT_KINDS = ("approve", "reject", "suspend", "lift")


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def canonical(data: Any) -> bytes:
    """The bytes a record's hash covers: sorted keys, no spaces, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def system_clock() -> datetime:
    return datetime.now(UTC)


# -- the form --------------------------------------------------------------------------------------


def read_form(path: Path) -> tuple[dict[str, Any], str]:
    """The form in ``path`` (``.toml`` or ``.json``), validated, and the sha256 of its bytes."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidParameter(f"cannot read the assessment form {path}: {exc}") from exc
    try:
        if Path(path).suffix.lower() == ".json":
            data = json.loads(raw.decode("utf-8"))
        else:
            data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidParameter(f"the assessment form {path} is not valid TOML or JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidParameter(f"the assessment form {path} must be a table of fields")
    return validate_form(data), hashlib.sha256(raw).hexdigest()


def validate_form(data: Mapping[str, Any]) -> dict[str, Any]:
    """The form's fields checked against :data:`FORM_FIELDS`; every problem in one message."""
    problems: list[str] = []
    unknown = sorted(set(data) - set(FORM_FIELDS))
    if unknown:
        problems.append(f"unknown fields {', '.join(unknown)} (fields: {', '.join(FORM_FIELDS)})")
    out: dict[str, Any] = {}
    for name, (kind, required, what) in FORM_FIELDS.items():
        if name not in data:
            if required:
                problems.append(f"{name} is missing ({what})")
            continue
        value = data[name]
        if kind == "text" and not (isinstance(value, str) and value.strip()):
            problems.append(f"{name} must be a non-empty string ({what})")
        elif kind == "list" and not (
            isinstance(value, list) and value and all(isinstance(v, str) and v.strip() for v in value)
        ):
            problems.append(f"{name} must be a non-empty list of non-empty strings ({what})")
        elif kind == "bool" and not isinstance(value, bool):
            problems.append(f"{name} must be true or false ({what})")
        elif kind == "volume":
            ok = isinstance(value, dict) and set(value) == {"searches_per_month", "gallery_size"}
            ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value.values())
            if not ok:
                problems.append(
                    f"{name} must be a table of two non-negative integers, searches_per_month and "
                    "gallery_size"
                )
        elif kind == "share" and not (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
            and 0 < value <= 1
        ):
            problems.append(f"{name} must be a number in (0, 1] ({what})")
        out[name] = value
    if problems:
        raise InvalidParameter("the assessment form is incomplete or invalid: " + "; ".join(problems))
    return out


# -- the evaluation reports ------------------------------------------------------------------------


def predicted_rejection_share(report: Mapping[str, Any], mated_share: float) -> float | None:
    """The share of leads reviewers should reject if the field is like the evaluation: at the
    report's floor operating point, with ``m`` the share of searches whose subject is enrolled,
    false leads per search ~ FPIR x (1 - m), true ones ~ (1 - FNIR) x m."""
    point = ((report.get("identification") or {}).get("operating_points") or {}).get("floor")
    if not isinstance(point, dict):
        return None
    fpir = (point.get("fpir") or {}).get("rate")
    fnir = (point.get("fnir") or {}).get("rate")
    if fpir is None or fnir is None:
        return None
    false = float(fpir) * (1.0 - mated_share)
    true = (1.0 - float(fnir)) * mated_share
    if false + true <= 0:
        return None
    return false / (false + true)


def read_report(
    path: Path,
    scoring: Mapping[str, str],
    *,
    gates: list[dict[str, Any]] | None = None,
    gates_source: str = "",
    mated_share: float = DEFAULT_MATED_SHARE,
) -> dict[str, Any]:
    """One ``regard evaluate`` report.json as an assessment cites it: its sha256, the dataset, the
    scoring it was made with (which must be ``scoring``, the one in force), each gate's verdict
    (``gates`` when given, checked now; else the report's own) and the rejection share predicted."""
    from regard.evaluation.gates import check_gates

    try:
        raw = Path(path).read_bytes()
        report = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidParameter(f"cannot read evaluation report {path}: {exc}") from exc
    if not isinstance(report, dict) or "system" not in report:
        raise InvalidParameter(f"{path} is not a report.json written by regard evaluate")
    made_with = (report.get("system") or {}).get("scoring") or {}
    wanted = {k: v for k, v in scoring.items() if k != "model"}
    differs = sorted(k for k, v in wanted.items() if made_with.get(k) != v)
    if differs:
        then = ", ".join(f"{k}={made_with.get(k)!r}" for k in differs)
        now = ", ".join(f"{k}={wanted[k]!r}" for k in differs)
        raise InvalidParameter(
            f"{path} was made with another scoring ({then}); the system now uses {now}: "
            "run regard evaluate again"
        )
    if gates is not None:
        verdicts = check_gates(report, gates, gates_source)
    elif isinstance(report.get("gates"), dict):
        verdicts = report["gates"]
    else:
        raise InvalidParameter(
            f"{path} has no gates: run regard evaluate with --gate FILE, or give regard assess --gates FILE"
        )
    results = [
        {
            "name": r["name"],
            "where": r.get("where", ""),
            "value": r.get("value"),
            "limit": r.get("limit_text", ""),
            "passed": bool(r["passed"]),
            "reason": r.get("reason", ""),
        }
        for r in verdicts.get("results", [])
    ]
    if not results:
        raise InvalidParameter(f"{path}: the gates checked nothing")
    dataset = report.get("dataset") or {}
    return {
        "file": Path(path).name,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "dataset": {k: dataset.get(k) for k in ("name", "path", "images", "subjects") if k in dataset},
        "gates_file": verdicts.get("file", gates_source),
        "gates": results,
        "gates_passed": all(r["passed"] for r in results),
        "predicted_rejection_share": predicted_rejection_share(report, mated_share),
    }


# -- records ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    kind: str
    at: str
    principal: str
    access_key_id: str | None
    note: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "Kind": self.kind,
            "At": self.at,
            "Principal": self.principal,
            "AccessKeyId": self.access_key_id,
            "Note": self.note,
        }


@dataclass(frozen=True)
class Assessment:
    """One assessment record (immutable) and the events about it."""

    assessment_id: str
    record: dict[str, Any]
    record_sha256: str
    events: tuple[Event, ...] = field(default_factory=tuple)

    @property
    def profile(self) -> str:
        return str(self.record["scope"]["profile"])

    @property
    def collections(self) -> tuple[str, ...]:
        return tuple(self.record["scope"]["collections"])

    @property
    def created_by(self) -> str:
        return str(self.record["created_by"]["principal"])

    @property
    def expires_at(self) -> datetime:
        return _parse_iso(self.record["expires_at"])

    @property
    def decision(self) -> Event | None:
        return next((e for e in self.events if e.kind in ("approve", "reject")), None)

    @property
    def status(self) -> str:
        d = self.decision
        if d is None:
            return PENDING
        return APPROVED if d.kind == "approve" else REJECTED

    @property
    def suspension(self) -> Event | None:
        """The suspension in force (the last suspend not lifted after it), if any."""
        current: Event | None = None
        for e in self.events:
            if e.kind == "suspend":
                current = e
            elif e.kind == "lift":
                current = None
        return current

    @property
    def predicted_rejection_share(self) -> float | None:
        value = self.record.get("predicted_rejection_share")
        return None if value is None else float(value)

    def covers(self, collection: str) -> bool:
        return any(fnmatch.fnmatchcase(collection, p) for p in self.collections)

    def staleness(self, profile: Profile, scoring: Mapping[str, str] | None, now: datetime) -> str | None:
        """Why this assessment no longer holds (None while it does)."""
        if now >= self.expires_at:
            return f"it expired on {self.record['expires_at']}"
        if scoring is not None:
            made = self.record["scope"]["scoring"]
            changed = sorted(k for k in set(made) | set(scoring) if made.get(k) != scoring.get(k))
            if changed:
                return (
                    "it was made for another model or scoring ("
                    + ", ".join(f"{k}: {made.get(k)!r}, now {scoring.get(k)!r}" for k in changed)
                    + ")"
                )
        floor = self.record["scope"]["floor"]
        lowered = []
        if profile.max_fmr > float(floor["max_fmr"]) * (1 + 1e-12):
            lowered.append(f"max_fmr {floor['max_fmr']:g} -> {profile.max_fmr:g}")
        assessed_fpir = float(floor["max_fpir"])
        if assessed_fpir > 0 and (profile.max_fpir <= 0 or profile.max_fpir > assessed_fpir * (1 + 1e-12)):
            lowered.append(f"max_fpir {assessed_fpir:g} -> {profile.max_fpir:g} (0: none)")
        if lowered:
            return f"the {profile.name} profile's floor was lowered since ({', '.join(lowered)})"
        s = self.suspension
        if s is not None:
            return f"it was suspended on {s.at} ({s.note}) until a new assessment"
        return None

    def to_json(
        self,
        *,
        now: datetime | None = None,
        profile: Profile | None = None,
        scoring: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "AssessmentId": self.assessment_id,
            "Status": self.status,
            "RecordSha256": self.record_sha256,
            "Record": self.record,
            "Events": [e.to_json() for e in self.events],
        }
        if now is not None and profile is not None:
            out["StaleBecause"] = self.staleness(profile, scoring, now)
        return out


def new_record(
    *,
    profile: Profile,
    collections: Sequence[str],
    scoring: Mapping[str, str],
    form: Mapping[str, Any],
    form_sha256: str,
    reports: Sequence[Mapping[str, Any]],
    created_by: str,
    created_by_key: str | None,
    now: datetime,
    valid_days: int = DEFAULT_VALID_DAYS,
) -> dict[str, Any]:
    """The record of a new assessment (the hash is taken when it is stored)."""
    if not collections:
        raise InvalidParameter("an assessment covers at least one collection (id or pattern)")
    if not reports:
        raise InvalidParameter("attach at least one regard evaluate report.json run on your own data")
    if not 1 <= valid_days <= 3 * 365:
        raise InvalidParameter("valid days must be between 1 and 1095")
    shares = [
        r["predicted_rejection_share"] for r in reports if r.get("predicted_rejection_share") is not None
    ]
    return {
        "version": 1,
        "created_at": _iso(now),
        "expires_at": _iso(now + timedelta(days=valid_days)),
        "created_by": {"principal": created_by, "access_key_id": created_by_key},
        "scope": {
            "profile": profile.name,
            "collections": list(collections),
            "scoring": dict(scoring),
            "floor": {"max_fmr": profile.max_fmr, "max_fpir": profile.max_fpir},
        },
        "form": dict(form),
        "form_sha256": form_sha256,
        "reports": [dict(r) for r in reports],
        "gates_passed": all(bool(r["gates_passed"]) for r in reports),
        # the worst evaluation's prediction: the field is flagged only above all of them
        "predicted_rejection_share": max(shares) if shares else None,
    }


class AssessmentStore:
    """The assessments of one installation (see the module docstring)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        db: SharedDb | None = None,
        clock: Callable[[], datetime] = system_clock,
    ) -> None:
        if db is None:
            db = SqliteDb(Path(data_dir) / FILE_NAME, schema=_SCHEMA)
        self.db = db
        self.clock = clock
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"assessments in {self.db.describe()}"

    # -- writing ----------------------------------------------------------------------------
    def create(self, record: Mapping[str, Any]) -> Assessment:
        """Store a new record (never changed afterwards); its id and hash are made here."""
        assessment_id = "asm-" + uuid.uuid4().hex[:16]
        body = dict(record)
        body["assessment_id"] = assessment_id
        text = canonical(body)
        digest = hashlib.sha256(text).hexdigest()
        with self.db.transaction() as cur:
            cur.execute(
                "INSERT INTO assessments (assessment_id, created_at, profile, record, record_sha256) "
                "VALUES (?, ?, ?, ?, ?)",
                (assessment_id, body["created_at"], body["scope"]["profile"], text.decode(), digest),
            )
        return Assessment(assessment_id, body, digest)

    def decide(
        self,
        assessment_id: str,
        decision: str,
        *,
        principal: str,
        role: str,
        access_key_id: str | None,
        note: str | None,
    ) -> Assessment:
        """An assessor's approval or rejection. Refused (AccessDenied) for a non-assessor, the
        person who created the assessment (by principal or key), an assessment already decided,
        expired, or (for approval) with a failed gate."""
        if decision not in ("approve", "reject"):
            raise InvalidParameter("decide with approve or reject")
        if role != ASSESSOR_ROLE:
            raise AccessDenied(f"only a key with the {ASSESSOR_ROLE} role may {decision} an assessment")
        if not note or not note.strip():
            raise InvalidParameter("an assessor's decision needs a note (what was checked, why)")
        with self.db.transaction() as cur:
            found = self._get(cur, assessment_id)
            creator = found.record["created_by"]
            if principal == creator["principal"] or (
                access_key_id is not None and access_key_id == creator.get("access_key_id")
            ):
                raise AccessDenied(
                    f"{principal} created assessment {assessment_id} and may not {decision} it: "
                    "the assessor must be someone else"
                )
            if found.status != PENDING:
                raise AccessDenied(f"assessment {assessment_id} is already {found.status}")
            now = self.clock()
            if now >= found.expires_at:
                raise AccessDenied(f"assessment {assessment_id} expired on {found.record['expires_at']}")
            if decision == "approve" and not found.record["gates_passed"]:
                failed = [
                    f"{g['name']} ({g['where']}: {g['reason']}) in {r['file']}"
                    for r in found.record["reports"]
                    for g in r["gates"]
                    if not g["passed"]
                ]
                raise AccessDenied(
                    f"assessment {assessment_id} cannot be approved: gates failed: {'; '.join(failed)}"
                )
            self._event(cur, assessment_id, decision, principal, access_key_id, note, now)
            return self._get(cur, assessment_id)

    def suspend(self, assessment_id: str, *, reason: str, principal: str = "regard:drift") -> Assessment:
        """Close the gate of an approved assessment until a new one (the drift signal)."""
        with self.db.transaction() as cur:
            self._get(cur, assessment_id)
            self._event(cur, assessment_id, "suspend", principal, None, reason, self.clock())
            return self._get(cur, assessment_id)

    def _event(
        self,
        cur: Cursor,
        assessment_id: str,
        kind: str,
        principal: str,
        access_key_id: str | None,
        note: str | None,
        now: datetime,
    ) -> None:
        cur.execute(
            "INSERT INTO assessment_events (assessment_id, kind, at, principal, access_key_id, note) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (assessment_id, kind, _iso(now), principal, access_key_id, note),
        )

    # -- reading ----------------------------------------------------------------------------
    def _get(self, cur: Cursor, assessment_id: str) -> Assessment:
        row = cur.execute(
            "SELECT record, record_sha256 FROM assessments WHERE assessment_id = ?", (assessment_id,)
        ).fetchone()
        if row is None:
            raise InvalidParameter(f"no assessment {assessment_id}")
        events = cur.execute(
            "SELECT kind, at, principal, access_key_id, note FROM assessment_events "
            "WHERE assessment_id = ? ORDER BY seq",
            (assessment_id,),
        ).fetchall()
        return self._assessment(assessment_id, str(row[0]), str(row[1]), events)

    @staticmethod
    def _assessment(assessment_id: str, text: str, digest: str, events: Sequence[Any]) -> Assessment:
        if hashlib.sha256(text.encode()).hexdigest() != digest:
            raise RegardError(f"assessment {assessment_id}: its record does not match its hash")
        return Assessment(
            assessment_id,
            json.loads(text),
            digest,
            tuple(Event(str(e[0]), str(e[1]), str(e[2]), e[3], e[4]) for e in events),
        )

    def get(self, assessment_id: str) -> Assessment:
        with self.db.transaction(readonly=True) as cur:
            return self._get(cur, assessment_id)

    def list(self, profile: str | None = None) -> list[Assessment]:
        """Every assessment, oldest first (of one profile when given)."""
        with self.db.transaction(readonly=True) as cur:
            sql = "SELECT assessment_id, record, record_sha256 FROM assessments"
            rows = (
                cur.execute(sql + " WHERE profile = ? ORDER BY created_at, assessment_id", (profile,))
                if profile
                else cur.execute(sql + " ORDER BY created_at, assessment_id")
            ).fetchall()
            events: dict[str, list[Any]] = {}
            for e in cur.execute(
                "SELECT assessment_id, kind, at, principal, access_key_id, note FROM assessment_events "
                "ORDER BY seq"
            ).fetchall():
                events.setdefault(str(e[0]), []).append(e[1:])
        return [self._assessment(str(r[0]), str(r[1]), str(r[2]), events.get(str(r[0]), [])) for r in rows]

    # -- the gate ---------------------------------------------------------------------------
    def current(
        self, profile: Profile, collection: str, scoring: Mapping[str, str] | None
    ) -> tuple[Assessment | None, str]:
        """The newest approved, current assessment of ``profile`` covering ``collection``, or
        None and the step that is missing (for the refusal's message)."""
        now = self.clock()
        candidates = [a for a in self.list(profile.name) if a.covers(collection)]
        for a in reversed(candidates):
            if a.status == APPROVED and a.staleness(profile, scoring, now) is None:
                return a, ""
        if not candidates:
            return None, (
                f"no human-rights impact assessment covers collection {collection} under the "
                f"{profile.name} profile: create one with `regard assess create` and have an assessor "
                "approve it (`regard assess approve`)"
            )
        newest = candidates[-1]
        if newest.status == PENDING:
            step = (
                f"assessment {newest.assessment_id} awaits an assessor's approval: "
                f"`regard assess approve {newest.assessment_id} --assessor-key KEY_ID`"
            )
        elif newest.status == REJECTED:
            step = (
                f"assessment {newest.assessment_id} was rejected by its assessor: "
                "re-assess with `regard assess create`"
            )
        else:
            why = newest.staleness(profile, scoring, now)
            step = (
                f"assessment {newest.assessment_id} no longer holds, {why}: "
                "re-assess with `regard assess create`"
            )
        return None, (
            f"1:N identification on collection {collection} under the {profile.name} profile needs a "
            f"current, approved human-rights impact assessment; {step}"
        )

    def gate(
        self,
        profile: Profile,
        collection: str,
        scoring: Mapping[str, str] | None,
        effective_fmr: float | None,
        operation: str,
        gallery_size: int | None,
    ) -> Assessment:
        """The assessment that allows this operation, or AccessDenied naming the missing step."""
        found, step = self.current(profile, collection, scoring)
        if found is None:
            raise AccessDenied(step)
        if effective_fmr is not None:
            floor = found.record["scope"]["floor"]
            assessed = Profile(
                name=profile.name, max_fmr=float(floor["max_fmr"]), max_fpir=float(floor["max_fpir"])
            ).floor_fmr(operation, gallery_size)
            if effective_fmr > assessed * (1 + 1e-9):
                raise AccessDenied(
                    f"the threshold in force stands for an FMR of {effective_fmr:.3g} per comparison; "
                    f"assessment {found.assessment_id} covers at most {assessed:.3g}: raise the threshold "
                    "or re-assess with `regard assess create`"
                )
        return found


# -- the drift signal --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Drift:
    """Reviewers' rejections over the last decided leads against the assessment's prediction."""

    leads: int
    rejected: int
    predicted: float
    p_value: float
    alpha: float

    @property
    def share(self) -> float:
        return self.rejected / self.leads if self.leads else 0.0

    @property
    def flagged(self) -> bool:
        return self.leads > 0 and self.p_value < self.alpha

    def to_json(self) -> dict[str, Any]:
        return {
            "leads": self.leads,
            "rejected": self.rejected,
            "rejected_share": self.share,
            "predicted_share": self.predicted,
            "p_value": self.p_value,
            "alpha": self.alpha,
            "flagged": self.flagged,
        }


def drift(rejected: Sequence[bool], predicted: float, alpha: float) -> Drift:
    """One-sided exact binomial test: is the rejection share of these decided leads higher than
    ``predicted``? ``p_value`` is P(X >= rejected) for X ~ Binomial(n, predicted)."""
    from scipy.stats import binomtest

    n = len(rejected)
    k = sum(1 for r in rejected if r)
    if n == 0:
        return Drift(0, 0, predicted, 1.0, alpha)
    p = min(max(predicted, 0.0), 1.0)
    p_value = float(binomtest(k, n, p, alternative="greater").pvalue)
    return Drift(n, k, predicted, p_value, alpha)
