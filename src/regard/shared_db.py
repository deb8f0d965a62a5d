"""Where regard's own state tables live: an SQLite file of the data directory (one node, the
default) or the PostgreSQL database every node shares (``REGARD_DATABASE_URL``).

Access keys, policy documents and the review queue are small tables written rarely; their
classes (:mod:`regard.keys`, :mod:`regard.accountability.policy`,
:mod:`regard.accountability.review`) write one SQL text with ``?`` placeholders and run it
through :meth:`SharedDb.transaction` on either backend. The PostgreSQL tables are made by the
numbered migrations of :mod:`regard.store.migrations` (the collection store's too), applied
under an advisory lock by whichever node opens the database first.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from regard import datadir

#: SQLite's settings for regard's state files: wait for other writers, enforce references.
DEFAULT_PRAGMAS = ("PRAGMA busy_timeout = 30000", "PRAGMA foreign_keys = ON")
#: The settings of the state files that hold what people are owed erasure of or rely on (review
#: leads, evidence crops, console sessions): as the defaults, plus a write-ahead log synced at
#: every commit and freed pages zeroed (``secure_delete``).
DURABLE_PRAGMAS = (
    *DEFAULT_PRAGMAS,
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = FULL",
    "PRAGMA secure_delete = ON",
)


class Cursor:
    """One transaction's cursor: ``?`` placeholders on both backends."""

    def __init__(self, raw: Any, postgres: bool) -> None:
        self._raw = raw
        self._postgres = postgres

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self._postgres else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        self._raw.execute(self._sql(sql), tuple(params))
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Cursor:
        if rows:
            self._raw.executemany(self._sql(sql), [tuple(r) for r in rows])
        return self

    def fetchone(self) -> Any:
        return self._raw.fetchone()

    def fetchall(self) -> list[Any]:
        return list(self._raw.fetchall())

    def __iter__(self) -> Iterator[Any]:
        return iter(self._raw.fetchall())

    @property
    def rowcount(self) -> int:
        return int(self._raw.rowcount)


class SharedDb(ABC):
    """A database for regard's state tables."""

    #: "sqlite" or "postgres".
    kind: str

    @abstractmethod
    def transaction(self, *, lock: int | None = None, readonly: bool = False) -> Any:
        """A context manager yielding a :class:`Cursor` inside one transaction, committed when
        the block ends without an exception. ``lock`` (a 64-bit number) serialises the block with
        every other block taking the same lock, on any node (SQLite: every write transaction is
        serialised anyway). ``readonly`` blocks only read: on SQLite they then take no write lock
        (a deferred transaction), so readers never queue behind each other."""

    @abstractmethod
    def is_unique_violation(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a primary-key or unique-constraint violation."""

    @abstractmethod
    def describe(self) -> str:
        """Where the tables are, for logs and command output (never a password)."""

    @abstractmethod
    def close(self) -> None:
        """Close the connections this object holds."""

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (a closed PostgreSQL database takes no transactions)."""
        return False


class SqliteDb(SharedDb):
    """One SQLite file (created 0600 in a 0700 folder); a connection per transaction."""

    kind = "sqlite"

    def __init__(self, path: Path, *, pragmas: Sequence[str] = DEFAULT_PRAGMAS, schema: str = "") -> None:
        self.path = datadir.private_file(datadir.private_dir(Path(path).parent) / Path(path).name)
        self.pragmas = tuple(pragmas)
        if schema:
            with closing(self._connect()) as db:
                db.executescript(schema)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        for pragma in self.pragmas:
            db.execute(pragma)
        return db

    @contextmanager
    def transaction(self, *, lock: int | None = None, readonly: bool = False) -> Iterator[Cursor]:
        with closing(self._connect()) as db:
            db.execute("BEGIN" if readonly else "BEGIN IMMEDIATE")
            try:
                yield Cursor(db.cursor(), postgres=False)
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def is_unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError)

    def describe(self) -> str:
        return f"SQLite file {self.path}"

    def close(self) -> None:
        """Nothing to close: each transaction has its own connection."""


def redact_url(url: str) -> str:
    """``url`` without its password (``postgresql://user:***@host/db``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable database URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    query = re.sub(r"(?i)(password=)[^&]*", r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class PostgresDb(SharedDb):
    """The shared PostgreSQL database: migrated on open, one connection per thread."""

    kind = "postgres"

    def __init__(self, url: str) -> None:
        import psycopg

        from regard.store.postgres import migrate

        self.url = url
        self._psycopg = psycopg
        self._local = threading.local()
        self._conns: list[Any] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        migrate(self.connection())

    def connection(self) -> Any:
        """This thread's connection (autocommit: transactions are explicit)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            if self._closed:
                raise RuntimeError("database is closed")
            conn = self._psycopg.connect(self.url, autocommit=True)
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def transaction(self, *, lock: int | None = None, readonly: bool = False) -> Iterator[Cursor]:
        conn = self.connection()
        with conn.transaction(), conn.cursor() as cur:
            if lock is not None:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (int(lock),))
            yield Cursor(cur, postgres=True)

    def is_unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, self._psycopg.errors.UniqueViolation)

    def describe(self) -> str:
        return f"PostgreSQL {redact_url(self.url)}"

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._local = threading.local()
