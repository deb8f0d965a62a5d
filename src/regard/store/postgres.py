"""The scale-out backend: PostgreSQL + pgvector, shared by any number of regard servers.

Templates live in a ``vector(128)`` column. A collection of ``ann_min_faces`` or more gets
its own partial HNSW index (``WHERE collection = <key>``, L2 distance), built by the first
search after it crossed that size (bulk loads stay fast: pgvector inserts into an existing
HNSW graph at only ~150 rows/s here, while a build from scratch is far quicker) and dropped
with the collection, so a search only walks its own collection's graph. Smaller collections
are scanned exactly. ``hnsw.ef_search`` is raised per query to at least the number of
neighbours asked for (pgvector caps it at 1000).

Erasure: deleted rows go at once; :meth:`compact` runs ``VACUUM FULL`` so the table files
are rewritten without them. PostgreSQL's write-ahead log keeps old records until it recycles
its segments, which is outside regard's control (see docs).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from regard.store.base import Neighbor, as_vector
from regard.store.migrations import all_migrations, statements
from regard.store.sql import FACE_COLUMNS, INSERT_FACE, SqlStore, Tx
from regard.types import Embeddings

log = logging.getLogger(__name__)

#: How long :meth:`PostgresStore.compact` waits for older snapshots to end (seconds).
SNAPSHOT_WAIT_S = 120.0
#: Other sessions of this database whose snapshot or transaction began before a given xid.
OLDER_SNAPSHOTS = """
SELECT pid, backend_type, coalesce(query, '') FROM pg_stat_activity
WHERE datid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND pid <> pg_backend_pid()
  AND ((backend_xmin IS NOT NULL AND age(backend_xmin) > age(%s::xid8::xid))
    OR (backend_xid IS NOT NULL AND age(backend_xid) > age(%s::xid8::xid)))
"""

#: Advisory lock id that serialises migrations between servers.
MIGRATION_LOCK = 0x7265676172640001
#: Build parameters of each collection's HNSW index (pgvector's defaults). At 1M faces the build
#: took 463 s (2 GB maintenance_work_mem, 2 cores) and the index is 832 B/face; see
#: docs/benchmarks.md, "PostgreSQL + pgvector at 1M". m=24, ef_construction 128 reached the same
#: recall at ef_search 200 (0.9927) but took 1,587 s to build at 1M and 946 B/face.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
#: ``hnsw.ef_search`` per query. With the build above, recall@10 at 1M synthetic faces against
#: an exact scan was 0.9000 at 100, 0.9857 at 400, 0.9943 at 600 and 0.9980 at 1000
#: (bench/bench_pgvector.py, 2026-11-30); 600 is the smallest swept value that reaches 0.99.
#: Smaller collections need less (0.9937 at 200 for 200k faces) but gain recall from more.
EF_SEARCH = 600
#: pgvector's cap on ``hnsw.ef_search``.
MAX_EF_SEARCH = 1000
#: Collections at least this large get a partial HNSW index; smaller ones are scanned exactly.
ANN_MIN_FACES = 20_000


def migrate(conn: psycopg.Connection[Any]) -> None:
    """Apply the migrations ``conn``'s database lacks, serialised between servers by an advisory
    lock (every node may open the database at once)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT, applied_at DOUBLE PRECISION)"
        )
        for m in all_migrations():
            if conn.execute("SELECT 1 FROM schema_migrations WHERE version = %s", (m.version,)).fetchone():
                continue
            for stmt in statements(m.postgres):
                conn.execute(stmt.encode())
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                (m.version, m.name, time.time()),
            )


class PostgresStore(SqlStore):
    """A store in one PostgreSQL database (``postgresql://`` URL) with the ``vector`` extension."""

    placeholder = "%s"
    lock_row = " FOR UPDATE"
    log_changes = False

    def __init__(
        self,
        url: str,
        *,
        ef_search: int = EF_SEARCH,
        ann_min_faces: int = ANN_MIN_FACES,
        build_memory: str = "512MB",
    ) -> None:
        if not re.fullmatch(r"\d+(kB|MB|GB)", build_memory):
            raise ValueError("build_memory must look like 512MB")
        self.url = url
        self.ef_search = ef_search
        self.ann_min_faces = ann_min_faces
        self.build_memory = build_memory
        self._indexed: set[int] = set()
        self._local = threading.local()
        self._conns: list[psycopg.Connection[Any]] = []
        self._conns_lock = threading.Lock()
        self._closed = False
        self._migrate()
        self._token_secret()  # made at open, so that listing never has to write

    # -- connections ------------------------------------------------------------------------
    def _raw(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            if self._closed:
                raise RuntimeError("store is closed")
            conn = psycopg.connect(self.url, autocommit=True)
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _conn(self) -> psycopg.Connection[Any]:
        conn = self._raw()
        if not getattr(self._local, "vector", False):
            register_vector(conn)
            self._local.vector = True
        return conn

    @contextmanager
    def _write(self) -> Iterator[Tx]:
        conn = self._conn()
        with conn.transaction(), conn.cursor() as cur:
            yield Tx(cur, "%s")

    @contextmanager
    def _read(self) -> Iterator[Tx]:
        conn = self._conn()
        with conn.transaction(), conn.cursor() as cur:
            yield Tx(cur, "%s")

    def _migrate(self) -> None:
        migrate(self._raw())

    def schema_version(self) -> int:
        row = self._raw().execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0) if row else 0

    # -- vectors ----------------------------------------------------------------------------
    def _encode(self, vector: Embeddings) -> Any:
        return as_vector(vector)

    def _decode(self, raw: Any) -> Embeddings:
        values = raw.to_numpy() if hasattr(raw, "to_numpy") else raw  # pgvector's Vector
        return np.asarray(values, dtype=np.float32)

    def _unique_violation(self, exc: BaseException) -> bool:
        return isinstance(exc, psycopg.errors.UniqueViolation)

    def _insert_faces(self, tx: Tx, key: int, rows: Sequence[Sequence[Any]]) -> list[int]:
        tx.many(INSERT_FACE, rows)
        return []  # no in-process index to feed: PostgreSQL searches its own

    def _ensure_index(self, key: int, face_count: int) -> None:
        """Build the collection's HNSW index once it is large enough (first search after crossing)."""
        if key in self._indexed or face_count < self.ann_min_faces:
            return
        name = f"faces_hnsw_{int(key)}"
        conn = self._conn()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (MIGRATION_LOCK >> 32, int(key)))
            exists = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
            if exists is None or exists[0] is None:
                conn.execute(f"SET LOCAL maintenance_work_mem = '{self.build_memory}'".encode())
                conn.execute(
                    f"CREATE INDEX {name} ON faces USING hnsw (embedding vector_l2_ops) "
                    f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION}) "
                    f"WHERE collection = {int(key)}".encode()
                )
        # Fresh statistics, or the planner may keep sorting a bitmap scan instead of using the graph.
        conn.execute("ANALYZE faces")
        self._indexed.add(key)

    def _collection_dropped(self, tx: Tx, key: int) -> None:
        tx.run(f"DROP INDEX IF EXISTS faces_hnsw_{int(key)}")

    # -- search -----------------------------------------------------------------------------
    def nearest(self, collection_id: str, probe: Embeddings, k: int, max_distance: float) -> list[Neighbor]:
        return self._nearest(collection_id, probe, k, max_distance, exact=False)

    def exact_search(self, collection_id: str, probe: Embeddings, k: int) -> list[Neighbor]:
        """The oracle: a full scan with the HNSW index switched off (tests, benchmarks)."""
        return self._nearest(collection_id, probe, k, float("inf"), exact=True)

    def _nearest(
        self, collection_id: str, probe: Embeddings, k: int, max_distance: float, *, exact: bool
    ) -> list[Neighbor]:
        q = as_vector(probe)
        if not exact:
            with self._read() as tx:
                row = tx.one(
                    "SELECT id, face_count FROM collections WHERE collection_id = ?", (collection_id,)
                )
            if row is not None:
                self._ensure_index(int(row[0]), int(row[1]))
        with self._read() as tx:
            key = self._key(tx, collection_id)
            ef = min(MAX_EF_SEARCH, max(self.ef_search, k))
            tx.run(f"SET LOCAL hnsw.ef_search = {int(ef)}")
            if k > MAX_EF_SEARCH:
                tx.run("SET LOCAL hnsw.iterative_scan = strict_order")
            if exact:
                tx.run("SET LOCAL enable_indexscan = off")
            rows = tx.all(
                f"SELECT {FACE_COLUMNS}, embedding <-> ? AS distance FROM faces "
                f"WHERE collection = {int(key)} ORDER BY embedding <-> ? LIMIT ?",
                (q, q, int(k)),
            )
        out: list[Neighbor] = []
        for r in rows:
            d = float(r[16])
            if d <= max_distance:
                out.append(Neighbor(face=self._face_from_row(r), distance=d))
        return out

    # -- maintenance ------------------------------------------------------------------------
    def compact(self) -> None:
        """Rewrite the tables without deleted rows (VACUUM FULL).

        VACUUM FULL copies a deleted row into the new table file while any transaction of this
        database still holds a snapshot that could see it (another node's long read, an
        autovacuum ANALYZE). So it first waits, up to :data:`SNAPSHOT_WAIT_S`, until every
        other session's snapshot is newer than the deletions; if one is still older then, the
        rewrite runs anyway and the sessions are logged, so that the operator can run
        ``regard erase`` again once they have ended.
        """
        conn = self._conn()
        self._wait_for_older_snapshots(conn)
        for table in ("faces", "users", "changes", "requests", "tags", "collections"):
            conn.execute(f"VACUUM FULL {table}".encode())

    def _wait_for_older_snapshots(self, conn: psycopg.Connection[Any]) -> None:
        row = conn.execute("SELECT pg_current_snapshot()::text").fetchone()
        assert row is not None
        horizon = row[0].split(":")[1]  # xmax: every deletion committed before it
        deadline = time.monotonic() + SNAPSHOT_WAIT_S
        while True:
            rows = conn.execute(OLDER_SNAPSHOTS, (horizon, horizon)).fetchall()
            if not rows:
                return
            if time.monotonic() >= deadline:
                log.warning(
                    "compacting while sessions hold snapshots older than the erasure, so their "
                    "deleted rows may survive this rewrite; run the erasure again when they end: %s",
                    ", ".join(f"pid {pid} ({kind}: {query[:60]!r})" for pid, kind, query in rows),
                )
                return
            time.sleep(0.2)

    def close(self) -> None:
        self._closed = True
        with self._conns_lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
        self._local = threading.local()
