"""Evidence kept for two-person review: face crops, encrypted, minimal and temporary.

A verifier cannot verify a face match without seeing the faces. So for collections whose policy
requires review (a profile with ``two_person_review`` covers them), regard keeps:

- the **enrolled crop** of each face indexed into such a collection (the face, not the image: the
  detected box with a margin, at most :data:`MAX_SIDE` pixels a side, JPEG), for as long as the face
  is in the collection;
- for each **lead** a 1:N search raises there, the **probe crop** (the searched face) and a copy of
  the candidate's enrolled crop, until the lead is decided (or withdrawn) and
  the retention (``REGARD_EVIDENCE_RETENTION_DAYS``, :data:`DEFAULT_RETENTION_DAYS`) has passed.

Every crop is encrypted at rest (Fernet: AES-128-CBC + HMAC-SHA256) under a key derived from the
installation's master key (:func:`evidence_key`), readable only through the review endpoints and
the console. Deleting a face (DeleteFaces, DeleteCollection, ``regard erase``) deletes its enrolled
crop and the evidence of every lead about it; the file is SQLite with ``secure_delete`` (freed pages
zeroed) and its write-ahead log is truncated after deletions, so the ciphertext leaves the file
(PostgreSQL: ``VACUUM FULL`` through :meth:`EvidenceStore.compact`). No crop ever enters the audit
log; a crop's sha256 may.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from regard.errors import RegardError
from regard.shared_db import DURABLE_PRAGMAS, PostgresDb, SharedDb, SqliteDb

FILE_NAME = "evidence.sqlite3"
#: The label the evidence key is derived under from the master key.
EVIDENCE_KEY_LABEL = b"regard review evidence key v1"
#: Days a decided lead's crops are kept, so that a reviewer can still look back at a decision.
DEFAULT_RETENTION_DAYS = 7
#: Largest side of a stored crop, in pixels.
MAX_SIDE = 320

SQLITE_PRAGMAS = DURABLE_PRAGMAS

_SCHEMA = """
CREATE TABLE IF NOT EXISTS enrolled_crops (
    collection_id TEXT NOT NULL,
    face_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    crop BLOB NOT NULL,
    PRIMARY KEY (collection_id, face_id)
);
CREATE TABLE IF NOT EXISTS lead_evidence (
    lead_id TEXT PRIMARY KEY,
    collection_id TEXT NOT NULL,
    candidate_face_id TEXT,
    created_at TEXT NOT NULL,
    probe_crop BLOB,
    candidate_crop BLOB
);
CREATE INDEX IF NOT EXISTS lead_evidence_by_face ON lead_evidence (collection_id, candidate_face_id);
"""


def evidence_key(master_key: bytes) -> bytes:
    """The Fernet key of the evidence store, derived from the master key (HMAC-SHA256)."""
    return base64.urlsafe_b64encode(hmac.new(master_key, EVIDENCE_KEY_LABEL, hashlib.sha256).digest())


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class LeadEvidence:
    """The two crops of one lead (either may be missing: e.g. a face enrolled before its
    collection required review has no enrolled crop)."""

    lead_id: str
    probe: bytes | None
    candidate: bytes | None


class EvidenceStore:
    """Encrypted face crops for review (see the module docstring)."""

    def __init__(self, data_dir: Path, *, master_key: bytes, db: SharedDb | None = None) -> None:
        if db is None:
            db = SqliteDb(Path(data_dir) / FILE_NAME, pragmas=SQLITE_PRAGMAS, schema=_SCHEMA)
        self.db = db
        self._fernet = Fernet(evidence_key(master_key))

    def _seal(self, crop: bytes | None) -> bytes | None:
        return None if crop is None else self._fernet.encrypt(crop)

    def _open(self, token: bytes | memoryview | None) -> bytes | None:
        if token is None:
            return None
        try:
            return self._fernet.decrypt(bytes(token))
        except InvalidToken as exc:
            raise RegardError("an evidence crop cannot be decrypted with this master key") from exc

    # -- enrolled faces ---------------------------------------------------------------------
    def put_enrolled(self, collection_id: str, crops: Sequence[tuple[str, bytes]]) -> None:
        """Keep the enrolled crop of each (face id, JPEG) just indexed into ``collection_id``."""
        if not crops:
            return
        now = _iso(datetime.now(UTC))
        with self.db.transaction() as cur:
            cur.executemany(
                "INSERT INTO enrolled_crops (collection_id, face_id, created_at, crop) VALUES (?, ?, ?, ?)",
                [(collection_id, fid, now, self._seal(jpeg)) for fid, jpeg in crops],
            )

    def enrolled(self, collection_id: str, face_id: str) -> bytes | None:
        with self.db.transaction(readonly=True) as cur:
            row = cur.execute(
                "SELECT crop FROM enrolled_crops WHERE collection_id = ? AND face_id = ?",
                (collection_id, face_id),
            ).fetchone()
        return self._open(row[0]) if row else None

    def has_enrolled(self, collection_id: str, face_id: str) -> bool:
        with self.db.transaction(readonly=True) as cur:
            row = cur.execute(
                "SELECT 1 FROM enrolled_crops WHERE collection_id = ? AND face_id = ?",
                (collection_id, face_id),
            ).fetchone()
        return row is not None

    # -- leads ------------------------------------------------------------------------------
    def put_lead(
        self,
        lead_id: str,
        collection_id: str,
        *,
        probe: bytes | None,
        candidate_face_id: str | None,
        candidate: bytes | None,
    ) -> None:
        """Keep a lead's crops (the candidate's is a copy of its enrolled crop)."""
        with self.db.transaction() as cur:
            cur.execute(
                "INSERT INTO lead_evidence (lead_id, collection_id, candidate_face_id, created_at, "
                "probe_crop, candidate_crop) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    lead_id,
                    collection_id,
                    candidate_face_id,
                    _iso(datetime.now(UTC)),
                    self._seal(probe),
                    self._seal(candidate),
                ),
            )

    def lead(self, lead_id: str) -> LeadEvidence | None:
        with self.db.transaction(readonly=True) as cur:
            row = cur.execute(
                "SELECT probe_crop, candidate_crop FROM lead_evidence WHERE lead_id = ?", (lead_id,)
            ).fetchone()
        if row is None:
            return None
        return LeadEvidence(lead_id, self._open(row[0]), self._open(row[1]))

    def lead_ids(self) -> list[str]:
        with self.db.transaction(readonly=True) as cur:
            return [str(r[0]) for r in cur.execute("SELECT lead_id FROM lead_evidence").fetchall()]

    # -- deletion ---------------------------------------------------------------------------
    def forget_faces(self, collection_id: str, face_ids: Iterable[str]) -> int:
        """Delete the enrolled crops of these faces and the evidence of every lead about them;
        returns the number of rows deleted."""
        ids = list(face_ids)
        if not ids:
            return 0
        n = 0
        with self.db.transaction() as cur:
            for fid in ids:
                n += cur.execute(
                    "DELETE FROM enrolled_crops WHERE collection_id = ? AND face_id = ?", (collection_id, fid)
                ).rowcount
                n += cur.execute(
                    "DELETE FROM lead_evidence WHERE collection_id = ? AND candidate_face_id = ?",
                    (collection_id, fid),
                ).rowcount
        if n:
            self.compact()
        return n

    def forget_leads(self, lead_ids: Iterable[str]) -> int:
        ids = list(lead_ids)
        n = 0
        if ids:
            with self.db.transaction() as cur:
                for lid in ids:
                    n += cur.execute("DELETE FROM lead_evidence WHERE lead_id = ?", (lid,)).rowcount
        if n:
            self.compact()
        return n

    def forget_collection(self, collection_id: str) -> int:
        n = 0
        with self.db.transaction() as cur:
            n += int(
                cur.execute("DELETE FROM enrolled_crops WHERE collection_id = ?", (collection_id,)).rowcount
            )
            n += int(
                cur.execute("DELETE FROM lead_evidence WHERE collection_id = ?", (collection_id,)).rowcount
            )
        if n:
            self.compact()
        return n

    def expire(self, decided: Iterable[tuple[str, str | None]], retention_days: int, now: datetime) -> int:
        """Delete the evidence of leads decided (or withdrawn) more than ``retention_days`` ago.
        ``decided`` is (lead id, decided_at ISO time or None while pending) for leads with evidence."""
        cutoff = now - timedelta(days=retention_days)
        old = []
        for lead_id, at in decided:
            if at is None:
                continue
            when = datetime.fromisoformat(at.replace("Z", "+00:00"))
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            if when <= cutoff:
                old.append(lead_id)
        return self.forget_leads(old)

    def compact(self) -> None:
        """Rewrite the storage without deleted ciphertext. SQLite: ``secure_delete`` zeroes freed
        pages; the write-ahead log is checkpointed and truncated around a VACUUM. PostgreSQL:
        ``VACUUM FULL`` of both tables."""
        if isinstance(self.db, PostgresDb):
            conn = self.db.connection()
            for table in ("enrolled_crops", "lead_evidence"):
                conn.execute(f"VACUUM FULL {table}".encode())
        elif isinstance(self.db, SqliteDb):
            with closing(sqlite3.connect(self.db.path, timeout=30.0, isolation_level=None)) as conn:
                for pragma in self.db.pragmas:
                    conn.execute(pragma)
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                conn.execute("VACUUM")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
