"""Two-person verification of 1:N search results (``<data_dir>/review.sqlite3``).

In a profile with ``two_person_review``, each candidate a search returns is recorded as an
*investigative lead*, status ``PENDING_VERIFICATION``. A lead becomes ``CONFIRMED`` only when
two distinct people holding the ``verifier`` role confirm it; one rejection makes it
``REJECTED``. The requester cannot decide on their own search's leads, and nobody decides twice
(:class:`ReviewRefused`). People are told apart by access key id and by the key's name (its
principal) normalised (:func:`person`: Unicode casefold, surrounding spaces stripped), so one
person with two keys under one name, or under ``ver1`` and ``VER1``, still counts once.

Deleting a face, a user or a collection (through the service: DeleteFaces, DeleteUser,
DeleteCollection, erasure) withdraws the leads about it: a pending lead becomes ``CLOSED`` (it
takes no decision: ConflictException) and every lead about it loses its FaceId, UserId and
ExternalImageId, which are wiped from the file before the deletion returns.

The queue stores FaceIds, similarities and estimated FMRs, never templates or images.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regard import datadir
from regard.accountability.audit import now_iso
from regard.errors import AccessDenied, ConflictError, InvalidParameter, ResourceNotFound
from regard.service.base import Removal, on_removal
from regard.store.base import Store

PENDING = "PENDING_VERIFICATION"
CONFIRMED = "CONFIRMED"
REJECTED = "REJECTED"
#: A lead whose face, user or collection was deleted before it was decided.
CLOSED = "CLOSED"
STATUSES = (PENDING, CONFIRMED, REJECTED, CLOSED)
CONFIRMATIONS_NEEDED = 2
VERIFIER_ROLE = "verifier"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leads (
    lead_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    request_id TEXT NOT NULL,
    requester_key TEXT,
    requester_principal TEXT,
    collection_id TEXT NOT NULL,
    operation TEXT NOT NULL,
    face_id TEXT,
    user_id TEXT,
    external_image_id TEXT,
    similarity REAL NOT NULL,
    fmr REAL NOT NULL,
    purpose TEXT,
    case_reference TEXT,
    status TEXT NOT NULL,
    decided_at TEXT
);
CREATE INDEX IF NOT EXISTS leads_status ON leads(status, created_at);
CREATE TABLE IF NOT EXISTS decisions (
    lead_id TEXT NOT NULL REFERENCES leads(lead_id) ON DELETE CASCADE,
    reviewer_key TEXT NOT NULL,
    reviewer_principal TEXT NOT NULL,
    decision TEXT NOT NULL,
    note TEXT,
    at TEXT NOT NULL,
    PRIMARY KEY (lead_id, reviewer_key)
);
"""


def person(principal: str | None) -> str | None:
    """The person a principal (a key's name) stands for: casefolded, surrounding spaces stripped."""
    return None if principal is None else principal.strip().casefold()


class ReviewRefused(AccessDenied):
    """A confirmation or rejection the two-person rule does not allow."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """One search result to record as a lead."""

    face_id: str | None
    user_id: str | None
    external_image_id: str | None
    similarity: float
    fmr: float


@dataclass(frozen=True, slots=True)
class Decision:
    reviewer_key: str
    reviewer_principal: str
    decision: str  # "confirm" or "reject"
    note: str | None
    at: str


@dataclass(frozen=True, slots=True)
class Lead:
    lead_id: str
    created_at: str
    request_id: str
    requester_key: str | None
    requester_principal: str | None
    collection_id: str
    operation: str
    face_id: str | None
    user_id: str | None
    external_image_id: str | None
    similarity: float
    fmr: float
    purpose: str | None
    case_reference: str | None
    status: str
    decided_at: str | None
    decisions: tuple[Decision, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "LeadId": self.lead_id,
            "Status": self.status,
            "CreatedAt": self.created_at,
            "RequestId": self.request_id,
            "Requester": {"AccessKeyId": self.requester_key, "Principal": self.requester_principal},
            "CollectionId": self.collection_id,
            "Operation": self.operation,
            "FaceId": self.face_id,
            "UserId": self.user_id,
            "ExternalImageId": self.external_image_id,
            "Similarity": self.similarity,
            "EstimatedFalseMatchRate": self.fmr,
            "Purpose": self.purpose,
            "CaseReference": self.case_reference,
            "DecidedAt": self.decided_at,
            "Decisions": [
                {
                    "AccessKeyId": d.reviewer_key,
                    "Principal": d.reviewer_principal,
                    "Decision": d.decision,
                    "Note": d.note,
                    "At": d.at,
                }
                for d in self.decisions
            ],
        }


_LEAD_COLUMNS = (
    "lead_id, created_at, request_id, requester_key, requester_principal, collection_id, operation, "
    "face_id, user_id, external_image_id, similarity, fmr, purpose, case_reference, status, decided_at"
)


class ReviewQueue:
    """The lead queue of one data directory; safe across threads and processes."""

    def __init__(self, data_dir: Path) -> None:
        # Created 0600 before SQLite opens it (its -wal and -shm files take the same mode).
        self.path = datadir.private_file(datadir.private_dir(Path(data_dir)) / "review.sqlite3")
        self._lock = threading.Lock()
        with self._db() as db:
            db.executescript(_SCHEMA)
        _LIVE.add(self)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30.0, isolation_level=None)) as db:
            db.execute("PRAGMA busy_timeout = 30000")
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA secure_delete = ON")
            yield db

    def add(
        self,
        *,
        request_id: str,
        requester_key: str | None,
        requester_principal: str | None,
        collection_id: str,
        operation: str,
        candidates: Sequence[Candidate],
        purpose: str | None,
        case_reference: str | None,
    ) -> list[str]:
        """Record the candidates of one search as pending leads; returns their ids in order."""
        ids = [str(uuid.uuid4()) for _ in candidates]
        at = now_iso()
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                f"INSERT INTO leads ({_LEAD_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,NULL)",
                [
                    (
                        lead_id,
                        at,
                        request_id,
                        requester_key,
                        requester_principal,
                        collection_id,
                        operation,
                        c.face_id,
                        c.user_id,
                        c.external_image_id,
                        float(c.similarity),
                        float(c.fmr),
                        purpose,
                        case_reference,
                        PENDING,
                    )
                    for lead_id, c in zip(ids, candidates, strict=True)
                ],
            )
            db.execute("COMMIT")
        return ids

    def _lead(self, db: sqlite3.Connection, lead_id: str) -> Lead:
        row = db.execute(f"SELECT {_LEAD_COLUMNS} FROM leads WHERE lead_id = ?", (lead_id,)).fetchone()
        if row is None:
            raise ResourceNotFound(f"lead {lead_id} does not exist")
        decisions = tuple(
            Decision(*d)
            for d in db.execute(
                "SELECT reviewer_key, reviewer_principal, decision, note, at FROM decisions "
                "WHERE lead_id = ? ORDER BY at, reviewer_key",
                (lead_id,),
            )
        )
        names = [c.strip() for c in _LEAD_COLUMNS.split(",")]
        values: dict[str, Any] = dict(zip(names, row, strict=True))
        values["decisions"] = decisions
        return Lead(**values)

    def get(self, lead_id: str) -> Lead:
        with self._db() as db:
            return self._lead(db, lead_id)

    def list(
        self,
        *,
        status: str | None = PENDING,
        collection_id: str | None = None,
        face_ids: Sequence[str] | None = None,
        limit: int = 1000,
        visible: Callable[[Lead], bool] | None = None,
    ) -> list[Lead]:
        """Leads in queue order; ``visible`` (the reader's scope) is applied before ``limit``."""
        if status is not None and status not in STATUSES:
            raise InvalidParameter(f"status must be one of {', '.join(STATUSES)}")
        sql = "SELECT lead_id FROM leads WHERE 1=1"
        args: list[object] = []
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        if collection_id is not None:
            sql += " AND collection_id = ?"
            args.append(collection_id)
        if face_ids is not None:
            sql += f" AND face_id IN ({','.join('?' * len(face_ids))})"
            args.extend(face_ids)
        sql += " ORDER BY created_at, lead_id"
        out: list[Lead] = []
        with self._db() as db:
            for r in db.execute(sql, args).fetchall():
                if len(out) >= limit:
                    break
                lead = self._lead(db, r[0])
                if visible is None or visible(lead):
                    out.append(lead)
        return out

    def decide(
        self,
        lead_id: str,
        *,
        reviewer_key: str,
        reviewer_principal: str,
        reviewer_role: str,
        decision: str,
        note: str | None = None,
    ) -> Lead:
        """Record one reviewer's confirmation or rejection; returns the lead afterwards.

        Refused (:class:`ReviewRefused`) unless the reviewer holds the verifier role, is not the
        requester, and has not decided on this lead before; a decided lead takes no more
        decisions (:class:`ConflictError`).
        """
        if decision not in ("confirm", "reject"):
            raise InvalidParameter("decision must be confirm or reject")
        if reviewer_role != VERIFIER_ROLE:
            raise ReviewRefused(f"only keys with the {VERIFIER_ROLE} role may review leads")
        with self._lock, self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                lead = self._lead(db, lead_id)
                if lead.status != PENDING:
                    raise ConflictError(f"lead {lead_id} is already {lead.status}")
                who = person(reviewer_principal)
                if reviewer_key == lead.requester_key or (
                    lead.requester_principal is not None and who == person(lead.requester_principal)
                ):
                    raise ReviewRefused("the requester of a search cannot review its own leads")
                for d in lead.decisions:
                    if d.reviewer_key == reviewer_key or person(d.reviewer_principal) == who:
                        raise ReviewRefused(
                            f"{reviewer_principal} has already reviewed lead {lead_id}; "
                            "a second, different verifier is needed"
                        )
                at = now_iso()
                db.execute(
                    "INSERT INTO decisions VALUES (?,?,?,?,?,?)",
                    (lead_id, reviewer_key, reviewer_principal, decision, note, at),
                )
                confirmations = 1 + sum(1 for d in lead.decisions if d.decision == "confirm")
                if decision == "reject":
                    db.execute(
                        "UPDATE leads SET status = ?, decided_at = ? WHERE lead_id = ?",
                        (REJECTED, at, lead_id),
                    )
                elif confirmations >= CONFIRMATIONS_NEEDED:
                    db.execute(
                        "UPDATE leads SET status = ?, decided_at = ? WHERE lead_id = ?",
                        (CONFIRMED, at, lead_id),
                    )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return self._lead(db, lead_id)

    def forget_faces(self, face_ids: Sequence[str]) -> int:
        """Delete the leads about erased faces (and compact the file); returns how many."""
        if not face_ids:
            return 0
        n = 0
        with self._db() as db:
            for start in range(0, len(face_ids), 500):
                chunk = list(face_ids[start : start + 500])
                cur = db.execute(f"DELETE FROM leads WHERE face_id IN ({','.join('?' * len(chunk))})", chunk)
                n += cur.rowcount
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("VACUUM")
        return n

    def forget_users(self, collection_id: str, user_ids: Sequence[str]) -> int:
        n = 0
        with self._db() as db:
            for u in user_ids:
                cur = db.execute(
                    "DELETE FROM leads WHERE collection_id = ? AND user_id = ?", (collection_id, u)
                )
                n += cur.rowcount
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("VACUUM")
        return n

    def withdraw(self, removal: Removal) -> int:
        """Withdraw the leads about what a deletion removed; returns how many leads it touched.

        Pending ones become ``CLOSED``; all of them lose the FaceId, UserId and ExternalImageId,
        and the file is checkpointed and vacuumed so those ids are in none of its pages.
        """
        where = "collection_id = ?"
        args: list[object] = [removal.collection_id]
        if not removal.whole_collection:
            parts = []
            if removal.face_ids:
                parts.append(f"face_id IN ({','.join('?' * len(removal.face_ids))})")
                args.extend(removal.face_ids)
            if removal.user_ids:
                parts.append(f"user_id IN ({','.join('?' * len(removal.user_ids))})")
                args.extend(removal.user_ids)
            if not parts:
                return 0
            where += f" AND ({' OR '.join(parts)})"
        where += " AND (face_id IS NOT NULL OR user_id IS NOT NULL OR external_image_id IS NOT NULL)"
        at = now_iso()
        with self._lock, self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    f"UPDATE leads SET status = ?, decided_at = ? WHERE status = ? AND {where}",
                    (CLOSED, at, PENDING, *args),
                )
                n = db.execute(
                    "UPDATE leads SET face_id = NULL, user_id = NULL, external_image_id = NULL "
                    f"WHERE {where}",
                    args,
                ).rowcount
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            if n:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                db.execute("VACUUM")
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return n


#: The queues this process has opened (their data directories' leads are withdrawn on deletion).
_LIVE: weakref.WeakSet[ReviewQueue] = weakref.WeakSet()


@on_removal
def _withdraw_leads(store: Store, removal: Removal) -> None:
    """Withdraw the leads about what was deleted from ``store``, before the deletion returns.

    An embedded store's queue is the one in its data directory (opened if the file exists, so a
    process that never read the queue still withdraws); for a store without a data directory
    (PostgreSQL), the queues this process has opened.
    """
    data_dir = getattr(store, "data_dir", None)
    if isinstance(data_dir, Path):
        if (data_dir / "review.sqlite3").exists():
            ReviewQueue(data_dir).withdraw(removal)
        return
    for queue in list(_LIVE):
        queue.withdraw(removal)
