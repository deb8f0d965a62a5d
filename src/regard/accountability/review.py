"""Two-person verification of 1:N search results, kept in ``<data_dir>/review.sqlite3`` (one
node) or in the ``leads`` and ``decisions`` tables of the PostgreSQL database every node shares
(``REGARD_DATABASE_URL``; migration 5), so a lead raised through one node is decided through any.

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
ExternalImageId, which are wiped from the file before the deletion returns. With PostgreSQL the
deleting node withdraws them in the shared database (whichever node raised them), and the tables
are rewritten (``VACUUM FULL``) so the wiped ids leave their files; PostgreSQL's write-ahead log
keeps old records until it recycles its segments, which is outside regard's control.

Decisions are race-free across nodes: :meth:`ReviewQueue.decide` locks the lead's row
(``SELECT ... FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE`` serialises every writer anyway) before it
reads the decisions already taken, so two verifiers confirming at once through two nodes both
count, and a confirmation racing a rejection ends ``REJECTED`` either way.

The queue stores FaceIds, similarities and estimated FMRs, never templates or images.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
import weakref
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regard.accountability.audit import now_iso
from regard.errors import AccessDenied, ConflictError, InvalidParameter, ResourceNotFound
from regard.service.base import Removal, on_removal
from regard.shared_db import DURABLE_PRAGMAS, Cursor, PostgresDb, SharedDb, SqliteDb
from regard.store.base import Store

PENDING = "PENDING_VERIFICATION"
CONFIRMED = "CONFIRMED"
REJECTED = "REJECTED"
#: A lead whose face, user or collection was deleted before it was decided.
CLOSED = "CLOSED"
STATUSES = (PENDING, CONFIRMED, REJECTED, CLOSED)
CONFIRMATIONS_NEEDED = 2
VERIFIER_ROLE = "verifier"
#: The file of a data directory that holds its queue (when there is no shared database).
FILE_NAME = "review.sqlite3"
#: PostgreSQL advisory lock serialising the queue's bulk writes (withdrawal, erasure) between
#: nodes, so two of them never lock the same leads in different orders.
REVIEW_LOCK = 0x7265766965770001
#: The queue file's settings: wait for other writers, enforce references, write-ahead log synced
#: at every commit, freed pages zeroed.
SQLITE_PRAGMAS = DURABLE_PRAGMAS

#: The SQLite file's tables (PostgreSQL's: :mod:`regard.store.migrations.m0005_review`).
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
#: Columns added since the first schema (PostgreSQL's: migration 11): where in a stored video a
#: video search's lead was seen. Added to an older file when it is opened (:func:`_add_columns`).
_ADDED_COLUMNS = (("video_timestamp_millis", "INTEGER"), ("video_frame_index", "INTEGER"))


def _add_columns(db: SqliteDb) -> None:
    """Add :data:`_ADDED_COLUMNS` to a file made before them (a check, then ALTER TABLE: two
    processes opening an old file at once add each column once)."""
    with db.transaction(readonly=True) as cur:
        have = {str(r[1]) for r in cur.execute("PRAGMA table_info(leads)").fetchall()}
    if all(name in have for name, _ in _ADDED_COLUMNS):
        return
    with db.transaction() as cur:
        have = {str(r[1]) for r in cur.execute("PRAGMA table_info(leads)").fetchall()}
        for name, sql_type in _ADDED_COLUMNS:
            if name not in have:
                cur.execute(f"ALTER TABLE leads ADD COLUMN {name} {sql_type}")


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
    #: Where a video search saw the person (None for a still-image search).
    video_timestamp_millis: int | None = None
    video_frame_index: int | None = None


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
    video_timestamp_millis: int | None = None
    video_frame_index: int | None = None
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
            "VideoTimestampMillis": self.video_timestamp_millis,
            "VideoFrameIndex": self.video_frame_index,
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
    "face_id, user_id, external_image_id, similarity, fmr, purpose, case_reference, status, decided_at, "
    "video_timestamp_millis, video_frame_index"
)
_LEAD_NAMES = tuple(c.strip() for c in _LEAD_COLUMNS.split(","))
#: Leads deleted or updated per statement by the bulk writes (well under both backends' limit on
#: bound parameters).
_CHUNK = 500


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _lead_of(row: Sequence[Any], decisions: Sequence[Decision]) -> Lead:
    values: dict[str, Any] = dict(zip(_LEAD_NAMES, row, strict=True))
    values["decisions"] = tuple(decisions)
    return Lead(**values)


def _read_lead(cur: Cursor, lead_id: str, *, lock_row: str = "") -> Lead:
    """The lead with its decisions; ``lock_row`` (`` FOR UPDATE``) locks its row until commit."""
    row = cur.execute(f"SELECT {_LEAD_COLUMNS} FROM leads WHERE lead_id = ?{lock_row}", (lead_id,)).fetchone()
    if row is None:
        raise ResourceNotFound(f"lead {lead_id} does not exist")
    decisions = [
        Decision(*d)
        for d in cur.execute(
            "SELECT reviewer_key, reviewer_principal, decision, note, at FROM decisions "
            "WHERE lead_id = ? ORDER BY at, reviewer_key",
            (lead_id,),
        )
    ]
    return _lead_of(row, decisions)


def _read_leads(cur: Cursor, rows: Sequence[Sequence[Any]]) -> list[Lead]:
    """The leads of ``rows`` (their columns in ``_LEAD_COLUMNS`` order) with their decisions, read
    in one query (one round trip to PostgreSQL, not one a lead)."""
    by_lead: dict[str, list[Decision]] = {str(r[0]): [] for r in rows}
    if by_lead:
        for d in cur.execute(
            "SELECT lead_id, reviewer_key, reviewer_principal, decision, note, at FROM decisions "
            f"WHERE lead_id IN ({_marks(len(by_lead))}) ORDER BY at, reviewer_key",
            list(by_lead),
        ):
            by_lead[d[0]].append(Decision(*d[1:]))
    return [_lead_of(r, by_lead[str(r[0])]) for r in rows]


def _withdraw(db: SharedDb, removal: Removal) -> int:
    """Close the pending leads about what ``removal`` took and wipe their ids, in ``db``; then
    compact it. Returns how many leads were touched."""
    where = "collection_id = ?"
    args: list[object] = [removal.collection_id]
    if not removal.whole_collection:
        parts = []
        if removal.face_ids:
            parts.append(f"face_id IN ({_marks(len(removal.face_ids))})")
            args.extend(removal.face_ids)
        if removal.user_ids:
            parts.append(f"user_id IN ({_marks(len(removal.user_ids))})")
            args.extend(removal.user_ids)
        if not parts:
            return 0
        where += f" AND ({' OR '.join(parts)})"
    where += " AND (face_id IS NOT NULL OR user_id IS NOT NULL OR external_image_id IS NOT NULL)"
    at = now_iso()
    with db.transaction(lock=REVIEW_LOCK) as cur:
        cur.execute(
            f"UPDATE leads SET status = ?, decided_at = ? WHERE status = ? AND {where}",
            (CLOSED, at, PENDING, *args),
        )
        n: int = cur.execute(
            f"UPDATE leads SET face_id = NULL, user_id = NULL, external_image_id = NULL WHERE {where}",
            args,
        ).rowcount
    if n:
        _compact(db)
    return n


def _compact(db: SharedDb) -> None:
    """Rewrite the queue's storage so deleted or wiped values are in none of its files.

    PostgreSQL: ``VACUUM FULL`` of ``leads`` and ``decisions`` (new table and index files; the old
    ones are unlinked). SQLite: ``secure_delete`` already zeroes freed content in the database
    pages, but the write-ahead log still holds the pages as they were, so it is checkpointed
    (truncated), the file vacuumed and the log truncated again.
    """
    if isinstance(db, PostgresDb):
        conn = db.connection()
        for table in ("decisions", "leads"):
            conn.execute(f"VACUUM FULL {table}".encode())
    elif isinstance(db, SqliteDb):
        with closing(sqlite3.connect(db.path, timeout=30.0, isolation_level=None)) as conn:
            for pragma in db.pragmas:
                conn.execute(pragma)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


class ReviewQueue:
    """The lead queue of one data directory, or of the shared database ``db``; safe across
    threads, processes and (with PostgreSQL) nodes.

    ``data_dir`` is the node's data directory. Without ``db`` the queue is its file
    ``review.sqlite3`` (:attr:`path`); with a :class:`~regard.shared_db.PostgresDb` it is the
    database's ``leads`` and ``decisions`` tables, and :attr:`path` only names where the file would
    be (it is never created), so ``path.parent`` is still the data directory (prefer
    :attr:`data_dir`). The caller that passes ``db`` closes it.
    """

    def __init__(self, data_dir: Path, *, db: SharedDb | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / FILE_NAME
        if db is None:
            # Created 0600 in a 0700 folder before SQLite opens it (its -wal and -shm files take the
            # same mode).
            db = SqliteDb(self.path, pragmas=SQLITE_PRAGMAS, schema=_SCHEMA)
            _add_columns(db)
            self.path = db.path
        self.db: SharedDb = db
        #: Appended to the SELECT that reads the lead a decision is about: a row lock on
        #: PostgreSQL; nothing on SQLite, where BEGIN IMMEDIATE has serialised the writers.
        self.lock_row = " FOR UPDATE" if db.kind == "postgres" else ""
        self._lock = threading.Lock()
        _LIVE.add(self)

    def describe(self) -> str:
        """Where the leads are, for logs and command output (never a password)."""
        return f"review queue in {self.db.describe()}"

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
        with self.db.transaction() as cur:
            cur.executemany(
                f"INSERT INTO leads ({_LEAD_COLUMNS}) VALUES ({_marks(15)},NULL,?,?)",
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
                        c.video_timestamp_millis,
                        c.video_frame_index,
                    )
                    for lead_id, c in zip(ids, candidates, strict=True)
                ],
            )
        return ids

    def get(self, lead_id: str) -> Lead:
        with self.db.transaction(readonly=True) as cur:
            return _read_lead(cur, lead_id)

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
        if face_ids is not None and not face_ids:
            return []
        sql = f"SELECT {_LEAD_COLUMNS} FROM leads WHERE 1=1"
        args: list[object] = []
        if status is not None:
            sql += " AND status = ?"
            args.append(status)
        if collection_id is not None:
            sql += " AND collection_id = ?"
            args.append(collection_id)
        if face_ids is not None:
            sql += f" AND face_id IN ({_marks(len(face_ids))})"
            args.extend(face_ids)
        sql += " ORDER BY created_at, lead_id"
        out: list[Lead] = []
        with self.db.transaction(readonly=True) as cur:
            rows = cur.execute(sql, args).fetchall()
            for start in range(0, len(rows), _CHUNK):
                if len(out) >= limit:
                    break
                for lead in _read_leads(cur, rows[start : start + _CHUNK]):
                    if len(out) >= limit:
                        break
                    if visible is None or visible(lead):
                        out.append(lead)
        return out

    def final_decisions(
        self, *, covers: Callable[[str], bool], decided_since: str, limit: int
    ) -> Sequence[tuple[str, str, str]]:
        """The last ``limit`` leads made final (``CONFIRMED`` or ``REJECTED``) at or after
        ``decided_since`` (an :func:`~regard.accountability.audit.now_iso` time) in the collections
        ``covers`` accepts, oldest first, as ``(lead_id, status, decided_at)``: the window the
        drift signal tests. Leads erased since are gone from the queue, so not counted."""
        if limit < 1:
            return []
        finals = (CONFIRMED, REJECTED)
        with self.db.transaction(readonly=True) as cur:
            collections = [
                str(r[0])
                for r in cur.execute(
                    "SELECT DISTINCT collection_id FROM leads WHERE status IN (?, ?) AND decided_at >= ?",
                    (*finals, decided_since),
                ).fetchall()
                if covers(str(r[0]))
            ]
            if not collections:
                return []
            rows = cur.execute(
                "SELECT lead_id, status, decided_at FROM leads WHERE status IN (?, ?) AND decided_at >= ? "
                f"AND collection_id IN ({_marks(len(collections))}) "
                "ORDER BY decided_at DESC, lead_id DESC LIMIT ?",
                (*finals, decided_since, *collections, int(limit)),
            ).fetchall()
        return [(str(r[0]), str(r[1]), str(r[2])) for r in reversed(rows)]

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
        decisions (:class:`ConflictError`). The lead's row is locked before its decisions are
        read, so decisions on one lead through any number of nodes are taken one at a time.
        """
        if decision not in ("confirm", "reject"):
            raise InvalidParameter("decision must be confirm or reject")
        if reviewer_role != VERIFIER_ROLE:
            raise ReviewRefused(f"only keys with the {VERIFIER_ROLE} role may review leads")
        with self._lock, self.db.transaction() as cur:
            lead = _read_lead(cur, lead_id, lock_row=self.lock_row)
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
            cur.execute(
                "INSERT INTO decisions (lead_id, reviewer_key, reviewer_principal, decision, note, at) "
                "VALUES (?,?,?,?,?,?)",
                (lead_id, reviewer_key, reviewer_principal, decision, note, at),
            )
            confirmations = 1 + sum(1 for d in lead.decisions if d.decision == "confirm")
            if decision == "reject":
                cur.execute(
                    "UPDATE leads SET status = ?, decided_at = ? WHERE lead_id = ?", (REJECTED, at, lead_id)
                )
            elif confirmations >= CONFIRMATIONS_NEEDED:
                cur.execute(
                    "UPDATE leads SET status = ?, decided_at = ? WHERE lead_id = ?", (CONFIRMED, at, lead_id)
                )
            return _read_lead(cur, lead_id)

    def forget_faces(self, face_ids: Sequence[str]) -> int:
        """Delete the leads about erased faces (their decisions go with them) and compact the
        storage (:meth:`compact`); returns how many."""
        if not face_ids:
            return 0
        n = 0
        with self.db.transaction(lock=REVIEW_LOCK) as cur:
            for start in range(0, len(face_ids), _CHUNK):
                chunk = list(face_ids[start : start + _CHUNK])
                n += cur.execute(f"DELETE FROM leads WHERE face_id IN ({_marks(len(chunk))})", chunk).rowcount
        self.compact()
        return n

    def forget_users(self, collection_id: str, user_ids: Sequence[str]) -> int:
        """Delete the leads about erased users of ``collection_id`` and compact the storage."""
        n = 0
        with self.db.transaction(lock=REVIEW_LOCK) as cur:
            for u in user_ids:
                n += cur.execute(
                    "DELETE FROM leads WHERE collection_id = ? AND user_id = ?", (collection_id, u)
                ).rowcount
        self.compact()
        return n

    def withdraw(self, removal: Removal) -> int:
        """Withdraw the leads about what a deletion removed; returns how many leads it touched.

        Pending ones become ``CLOSED``; all of them lose the FaceId, UserId and ExternalImageId,
        and the storage is compacted (:meth:`compact`) so those ids are in none of its files.
        """
        with self._lock:
            return _withdraw(self.db, removal)

    def compact(self) -> None:
        """Rewrite the storage without deleted or wiped values.

        PostgreSQL: ``VACUUM FULL`` of ``leads`` and ``decisions`` (the old files are unlinked; it
        takes the tables' exclusive lock for a moment, so other nodes' reads wait). SQLite: freed
        pages are zeroed by ``secure_delete`` as they are freed; what is left is the write-ahead
        log's old page images, so the log is checkpointed and truncated around a ``VACUUM``.
        """
        _compact(self.db)


#: The queues this process has opened (their leads are withdrawn on deletion).
_LIVE: weakref.WeakSet[ReviewQueue] = weakref.WeakSet()


def _database(url: str) -> tuple[str, ...]:
    """What tells PostgreSQL databases apart in a connection URL: host, port and database name
    (the user and password may differ between two URLs of one database)."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(url)
    except Exception:  # an unparseable URL only equals itself
        return ("", url)
    return (
        str(info.get("host") or ""),
        str(info.get("port") or "5432"),
        str(info.get("dbname") or info.get("user") or ""),
    )


def _open(db: SharedDb) -> bool:
    """Whether ``db`` still takes transactions (a closed PostgresDb does not)."""
    return not db.closed


@on_removal
def _withdraw_leads(store: Store, removal: Removal) -> None:
    """Withdraw the leads about what was deleted from ``store``, before the deletion returns.

    An embedded store's queue is the one in its data directory (opened if the file exists, so a
    process that never read the queue still withdraws). A PostgreSQL store's queue is the one in
    the same database: through a queue this process has open on it, else through a connection
    opened for the purpose, so the deleting node withdraws the leads whichever node raised them.
    The file queues this process has opened are told too (a queue kept beside a PostgreSQL store).
    """
    data_dir = getattr(store, "data_dir", None)
    if isinstance(data_dir, Path):
        if (data_dir / FILE_NAME).exists():
            ReviewQueue(data_dir).withdraw(removal)
        return
    url = getattr(store, "url", None)
    same: ReviewQueue | None = None
    for queue in list(_LIVE):
        if isinstance(queue.db, PostgresDb):
            if (
                same is None
                and isinstance(url, str)
                and _open(queue.db)
                and _database(queue.db.url) == _database(url)
            ):
                same = queue
        else:
            queue.withdraw(removal)
    if same is not None:
        same.withdraw(removal)
    elif isinstance(url, str):
        db = PostgresDb(url)
        try:
            _withdraw(db, removal)
        finally:
            db.close()
