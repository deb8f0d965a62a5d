"""The embedded backend: one SQLite database per data directory plus a vector index per collection.

SQLite (WAL, ``synchronous=FULL``, foreign keys, ``secure_delete``) is the source of truth:
a face acknowledged by :meth:`add_faces` has been committed and fsynced. This module holds
the connections, transactions, migrations, template encoding and maintenance (VACUUM,
checkpoints); each collection's in-memory vector index, kept in step through the ``changes``
table and cached in ``index/`` files, is :mod:`regard.store.sqlite_index`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from regard import datadir
from regard.index.ann import AnnIndex, AnnParams
from regard.store.base import as_vector
from regard.store.migrations import all_migrations, statements
from regard.store.sql import INSERT_FACE, Tx
from regard.store.sqlite_index import (
    ANN_MIN_FACES,
    INDEX_SUFFIX,
    LEGACY_SUFFIX,
    SAVE_EVERY,
    SqliteIndexes,
    _State,
)
from regard.types import Embeddings

__all__ = [
    "ANN_MIN_FACES",
    "BUSY_TIMEOUT_MS",
    "CACHE_KIB",
    "DB_NAME",
    "INDEX_SUFFIX",
    "LEGACY_SUFFIX",
    "MMAP_BYTES",
    "SAVE_EVERY",
    "SqliteStore",
    "database_path",
    "wal_path",
]

DB_NAME = "regard.db"
BUSY_TIMEOUT_MS = 60_000
#: Bytes of the database file each connection maps (SQLite caps it at its compile-time maximum).
MMAP_BYTES = 1 << 32
#: Page cache per connection, KiB (filled only as pages are read).
CACHE_KIB = 32_768
#: Attempts at truncating the WAL after a deletion (each waits up to the busy timeout for readers).
CHECKPOINT_TRIES = 3

log = logging.getLogger("regard.store")


class SqliteStore(SqliteIndexes):
    """The default store: ``data_dir/regard.db`` and ``data_dir/index/``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        ann_min_faces: int = ANN_MIN_FACES,
        ann_params: AnnParams | None = None,
        save_every: int = SAVE_EVERY,
    ) -> None:
        self.data_dir = datadir.private_dir(Path(data_dir))
        datadir.secure(self.data_dir)  # the start-up check of the data directory's modes
        self.index_dir = datadir.private_dir(self.data_dir / "index")
        # Created 0600 before SQLite opens it: SQLite gives its -wal and -shm files the same mode.
        self.path = datadir.private_file(self.data_dir / DB_NAME)
        self.ann_min_faces = ann_min_faces
        self.ann_params = ann_params or AnnParams()
        self.save_every = save_every
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._states: dict[int, _State] = {}
        self._states_lock = threading.Lock()
        self._closed = False
        self._migrate()
        self._token_secret()  # made at open, so that listing never has to write
        self._sweep_orphans()

    # -- connections ------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise RuntimeError("store is closed")
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=60)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA secure_delete = ON")
            # Searches read face rows at random from a large file: map it (no copy per page read)
            # and keep the b-tree's inner pages of a 1M-face collection in the page cache.
            conn.execute(f"PRAGMA mmap_size = {MMAP_BYTES}")
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[Tx]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield Tx(conn.cursor(), "?")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[Tx]:
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield Tx(conn.cursor(), "?")
        finally:
            conn.execute("COMMIT")

    def _migrate(self) -> None:
        conn = self._conn()
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT, applied_at REAL)"
        )
        for m in all_migrations():
            conn.execute("BEGIN IMMEDIATE")
            try:
                if conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?", (m.version,)).fetchone():
                    conn.execute("COMMIT")
                    continue
                for stmt in statements(m.sqlite):
                    conn.execute(stmt)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (m.version, m.name, time.time()),
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def schema_version(self) -> int:
        row = self._conn().execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)

    # -- vectors ----------------------------------------------------------------------------
    def _encode(self, vector: Embeddings) -> Any:
        return as_vector(vector).tobytes()

    def _decode(self, raw: Any) -> Embeddings:
        return np.frombuffer(raw, dtype=np.float32).copy()

    def _unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc)

    def _insert_faces(self, tx: Tx, key: int, rows: Sequence[Sequence[Any]]) -> list[int]:
        # Inside BEGIN IMMEDIATE nobody else inserts, and AUTOINCREMENT hands out consecutive keys.
        before = tx.one("SELECT seq FROM sqlite_sequence WHERE name = 'faces'")
        first = int(before[0]) + 1 if before else 1
        tx.many(INSERT_FACE, rows)
        after = tx.one("SELECT seq FROM sqlite_sequence WHERE name = 'faces'")
        if after is not None and int(after[0]) - first + 1 == len(rows):
            return list(range(first, first + len(rows)))
        found = {}
        for i in range(0, len(rows), 500):
            ids = [r[1] for r in rows[i : i + 500]]
            marks = ",".join("?" * len(ids))
            for fk, fid in tx.all(
                f"SELECT id, face_id FROM faces WHERE collection = ? AND face_id IN ({marks})", (key, *ids)
            ):
                found[fid] = int(fk)
        return [found[r[1]] for r in rows]

    def _save(self, state: _State) -> None:
        super()._save(state)
        for _, p in self._files(state.key):  # index files hold templates: 0600 whatever the umask
            datadir.restrict(p)

    # -- deletion is erasure ----------------------------------------------------------------
    def _after_removal(self, key: int) -> None:
        """After a commit that removed templates: index files dropped (never rewritten from an
        index with removals), then the WAL checkpointed and truncated, so that before DeleteFaces
        or DeleteCollection returns, the removed templates and FaceIds are in no file of the data
        directory (``secure_delete`` has zeroed them in the database's pages)."""
        super()._after_removal(key)
        self.checkpoint()

    def delete_user(self, collection_id: str, user_id: str) -> None:
        super().delete_user(collection_id, user_id)
        self.checkpoint()

    # -- maintenance ------------------------------------------------------------------------
    def compact(self) -> None:
        """Checkpoint and VACUUM the database; rebuild HNSW indexes that have had removals and save them."""
        with self._states_lock:
            states = list(self._states.values())
        for state in states:
            with state.lock.exclusive():
                self._sync(state)
                if isinstance(state.index, AnnIndex) and state.index.removed_since_build:
                    self._drop_files(state.key)
                    fresh = self._build_fresh(state.key)
                    state.index, state.seq, state.saved_seq = fresh.index, fresh.seq, 0
                self._save(state)
        self._sweep_orphans()
        conn = self._conn()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it to zero bytes.

        A TRUNCATE checkpoint waits (busy timeout) for readers of older snapshots; should one
        still hold the WAL, it is retried a bounded number of times and a warning is logged:
        the frames are then truncated by the next checkpoint (each deletion and ``compact``)."""
        conn = self._conn()
        for _ in range(CHECKPOINT_TRIES):
            busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if busy is None or int(busy[0]) == 0:
                return
            time.sleep(0.05)
        log.warning("regard.db-wal could not be truncated: a reader holds it; the next checkpoint will")

    def close(self) -> None:
        if self._closed:
            return
        with self._states_lock:
            states = list(self._states.values())
        for state in states:
            # An index file is a cache: if it cannot be written, the next open rebuilds it.
            with state.lock.exclusive(), contextlib.suppress(OSError, RuntimeError, sqlite3.Error):
                self._save(state)
        self._closed = True
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._local = threading.local()


def database_path(data_dir: Path) -> Path:
    return Path(data_dir) / DB_NAME


def wal_path(data_dir: Path) -> Path:
    return Path(os.fspath(database_path(data_dir)) + "-wal")
