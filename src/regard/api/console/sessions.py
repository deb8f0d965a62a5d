"""The reviewers' console sessions: who signed in, with which key, since when, until when.

A session is opened by a SigV4-signed ``POST /console/session`` (the browser signs it with the
access key's secret, which never leaves the page) and named by a random 32-byte token, the
session cookie. The store keeps only the token's sha256, never the token, so a copy of the
table opens no session. Each session has a CSRF token, derived from the session token
(HMAC-SHA256 under the token), rendered in the console's forms and compared in constant time
with the sha256 the store keeps.

A session ends at logout (``ended_at``), after ``idle_timeout`` seconds without a request
(``last_seen``), ``lifetime`` seconds after its sign-in (``created``), or when its key is
revoked. The table is ``console_sessions`` of ``<data_dir>/console.sqlite3`` or, with
``REGARD_DATABASE_URL``, of the shared PostgreSQL database (migration 10), so every node of one
installation honours the same sessions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from regard.keys import AccessKey
from regard.shared_db import DURABLE_PRAGMAS, SharedDb, SqliteDb

FILE_NAME = "console.sqlite3"
#: Random bytes of a session token.
TOKEN_BYTES = 32
_CSRF_LABEL = b"regard console csrf v1"

SQLITE_PRAGMAS = DURABLE_PRAGMAS

#: The SQLite file's table (PostgreSQL's: :mod:`regard.store.migrations.m0010_console`).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS console_sessions (
    session_hash TEXT PRIMARY KEY,
    access_key_id TEXT NOT NULL,
    principal TEXT NOT NULL,
    role TEXT NOT NULL,
    profile TEXT NOT NULL,
    created REAL NOT NULL,
    last_seen REAL NOT NULL,
    csrf_hash TEXT NOT NULL,
    ended_at REAL
);
CREATE INDEX IF NOT EXISTS console_sessions_by_key ON console_sessions (access_key_id);
"""

_COLUMNS = "session_hash, access_key_id, principal, role, profile, created, last_seen, csrf_hash, ended_at"


def digest(token: str) -> str:
    """The sha256 (hex) the store keeps of a token."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def csrf_of(token: str) -> str:
    """The CSRF token of the session ``token`` (HMAC-SHA256 under the session token)."""
    mac = hmac.new(token.encode("utf-8"), _CSRF_LABEL, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode("ascii").rstrip("=")


@dataclass(frozen=True, slots=True)
class Session:
    """One open session, as the store holds it (no token: only its hash)."""

    session_hash: str
    access_key_id: str
    principal: str
    role: str
    profile: str
    created: float
    last_seen: float
    csrf_hash: str
    ended_at: float | None

    def csrf_ok(self, submitted: str | None) -> bool:
        """Whether ``submitted`` is this session's CSRF token (constant-time comparison)."""
        if not submitted:
            return False
        return hmac.compare_digest(digest(submitted), self.csrf_hash)


class SessionStore:
    """Console sessions in ``<data_dir>/console.sqlite3`` or the shared database ``db``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        db: SharedDb | None = None,
        idle_timeout: float = 900.0,
        lifetime: float = 8 * 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if db is None:
            db = SqliteDb(Path(data_dir) / FILE_NAME, pragmas=SQLITE_PRAGMAS, schema=_SCHEMA)
        self.db = db
        self.idle_timeout = float(idle_timeout)
        self.lifetime = float(lifetime)
        self.clock = clock

    def open(self, key: AccessKey) -> tuple[str, Session]:
        """A new session for ``key``: (the token, for the cookie only, and the session)."""
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = self.clock()
        session = Session(
            digest(token),
            key.access_key_id,
            key.name,
            key.role,
            key.profile,
            now,
            now,
            digest(csrf_of(token)),
            None,
        )
        with self.db.transaction() as cur:
            cur.execute(
                f"INSERT INTO console_sessions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session.session_hash,
                    session.access_key_id,
                    session.principal,
                    session.role,
                    session.profile,
                    session.created,
                    session.last_seen,
                    session.csrf_hash,
                    None,
                ),
            )
        return token, session

    def lookup(self, token: str | None, *, touch: bool = True) -> Session | None:
        """The open session ``token`` names, its ``last_seen`` moved to now (``touch``); None when
        there is none, or it ended, went idle or outlived its lifetime (then it is ended)."""
        if not token or len(token) > 256:
            return None
        hashed = digest(token)
        now = self.clock()
        with self.db.transaction() as cur:
            row = cur.execute(
                f"SELECT {_COLUMNS} FROM console_sessions WHERE session_hash = ?", (hashed,)
            ).fetchone()
            if row is None:
                return None
            session = Session(*row)
            if session.ended_at is not None:
                return None
            if now - session.last_seen > self.idle_timeout or now - session.created > self.lifetime:
                cur.execute("UPDATE console_sessions SET ended_at = ? WHERE session_hash = ?", (now, hashed))
                return None
            if touch:
                cur.execute("UPDATE console_sessions SET last_seen = ? WHERE session_hash = ?", (now, hashed))
        return session

    def end(self, session_hash: str) -> bool:
        """End a session (logout, revoked key); whether it was open."""
        with self.db.transaction() as cur:
            n = cur.execute(
                "UPDATE console_sessions SET ended_at = ? WHERE session_hash = ? AND ended_at IS NULL",
                (self.clock(), session_hash),
            ).rowcount
        return bool(n > 0)

    def end_for_key(self, access_key_id: str) -> int:
        """End every open session of a key; how many."""
        with self.db.transaction() as cur:
            n: int = cur.execute(
                "UPDATE console_sessions SET ended_at = ? WHERE access_key_id = ? AND ended_at IS NULL",
                (self.clock(), access_key_id),
            ).rowcount
        return n
