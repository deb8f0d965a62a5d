"""The audit chain in the PostgreSQL database every node shares: one chain for all nodes.

The records are the file log's (:mod:`regard.accountability.audit`): the same canonical text,
``seq`` 1, 2, 3... without gaps, ``prev_hash`` and ``hash``, checked by the same verify walk.
Each is a row of ``audit_records`` holding its exact canonical text, plus ``kind`` and
``intent_seq`` copied out of it to index intents (verify checks that they agree with the text).

Appends are serialised across threads, processes and nodes by a transaction-scoped advisory
lock (:data:`AUDIT_LOCK`): under it the append reads the newest row (or the anchor), seals the
record and inserts it, and the transaction (READ COMMITTED, so that what it reads after the lock
is what committed before it) commits before :meth:`PgAuditLog.append` returns, so an acknowledged
operation's record is in the database; a lock not granted within :data:`LOCK_TIMEOUT` fails the
append (closed). An append therefore needs a transaction of its own: called while this thread's
connection is inside another, it fails (the record would otherwise commit, or roll back, with the
caller's transaction). A record's ``time`` is the database server's clock, read under the lock:
one clock for every node, not each node's own. There is no torn tail here: a record is a row that
a transaction inserts whole or not at all, so the file log's repair step does not exist on
PostgreSQL.

A prune deletes the oldest rows, writes the single ``audit_anchor`` row (the last pruned record's
seq and hash, when, and an HMAC-SHA256 under ``anchor_key`` over the same fields as the file
log's anchor) and records itself, in one transaction under the append lock. ``anchor_key`` comes
from the caller (derived from the master key every node shares), so any node can prune and verify.

A writer's liveness is a session-level advisory lock (two int4 keys derived from its token) that
a dedicated connection holds for the writer's life: when the process dies, its connection closes
and the server releases the lock; an open intent whose writer's lock can be taken
(``pg_try_advisory_lock``, released again at once) is an orphan. A node that vanishes without
closing its socket is noticed through TCP keepalives (set on that connection), not at once.
That connection needs a session of its own for its life: behind a pooler in transaction mode
(PgBouncer's ``pool_mode = transaction``) session advisory locks do not hold, so point regard at
PostgreSQL or at a session-mode pool. A writer whose connection dies while its process lives
(the server restarted) loses its lock: another node may then record its open intent's outcome
as unknown, and the real outcome record follows it, naming the same intent.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import pq

from regard.accountability.audit import (
    DEFAULT_RETENTION_FLOOR_DAYS,
    GENESIS,
    INTENT_KIND,
    AuditChain,
    AuditError,
    ChainSnapshot,
    StoredRecord,
    canonical,
    index_columns,
    now_iso,
    parse_time,
    sanitise,
)
from regard.shared_db import Cursor, PostgresDb

#: The advisory lock (one bigint key) every append, prune and reconcile takes for its transaction.
AUDIT_LOCK = 0x7265676172640006  # "regard" and the migration step; the migrations' lock ends in 01
#: How long an append waits for that lock before failing closed (an operation is then refused).
LOCK_TIMEOUT = "30s"
#: Rows read per page or per fetch of a server-side cursor.
PAGE = 1000
#: Keepalives on a writer's liveness connection: a vanished node's lock goes within about 2 minutes.
WRITER_SETTINGS = (
    "SET tcp_keepalives_idle = 60",
    "SET tcp_keepalives_interval = 10",
    "SET tcp_keepalives_count = 6",
)

_NEWEST = (
    "SELECT clock_timestamp(), r.seq, r.record FROM (SELECT 1) AS one LEFT JOIN LATERAL "
    "(SELECT seq, record FROM audit_records ORDER BY seq DESC LIMIT 1) AS r ON true"
)
_ANCHOR = "SELECT seq, hash, pruned_at, mac FROM audit_anchor WHERE id = 1"
#: Intents no record names by ``intent_seq`` (an intent itself never names one).
_OPEN_INTENTS = (
    "SELECT i.record FROM audit_records AS i WHERE i.kind = %s AND NOT EXISTS "
    "(SELECT 1 FROM audit_records AS o WHERE o.intent_seq = i.seq AND o.kind IS DISTINCT FROM %s) "
    "ORDER BY i.seq"
)


def writer_lock_keys(token: str) -> tuple[int, int]:
    """The two int4 advisory-lock keys a writer with ``token`` holds while it lives."""
    digest = hashlib.sha256(b"regard audit writer\0" + token.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big", signed=True), int.from_bytes(digest[4:8], "big", signed=True)


def _hash_of(text: str) -> str:
    try:
        return str(json.loads(text)["hash"])
    except (ValueError, KeyError, TypeError) as exc:
        raise AuditError("the newest audit record is unreadable; run `regard audit verify`") from exc


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class PgAuditLog(AuditChain):
    """The one audit chain of every node sharing ``db``."""

    position_name = "row"

    def __init__(
        self,
        db: PostgresDb,
        *,
        anchor_key: bytes,
        retention_floor_days: int = DEFAULT_RETENTION_FLOOR_DAYS,
    ) -> None:
        if len(anchor_key) < 16:
            raise ValueError("the audit anchor key must be at least 16 bytes")
        self.db = db
        self._anchor_key = bytes(anchor_key)
        self.retention_floor_days = retention_floor_days
        self._writer: tuple[str, psycopg.Connection[Any]] | None = None
        self._writer_lock = threading.Lock()

    def describe(self) -> str:
        return f"{self.db.describe()}, tables audit_records and audit_anchor"

    # -- writing ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _appending(self) -> Iterator[Cursor]:
        """A transaction of its own holding the append lock, committed when the block ends."""
        try:
            if self.db.connection().info.transaction_status != pq.TransactionStatus.IDLE:
                raise AuditError(
                    "an audit record is committed in a transaction of its own, but this thread's "
                    "database connection is inside another"
                )
            with self.db.transaction() as cur:
                # READ COMMITTED whatever the database's default: each statement after the lock
                # sees every append committed before it was granted (under REPEATABLE READ the
                # snapshot would predate the lock, and the newest row read would be stale).
                cur.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
                cur.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                cur.execute("SELECT pg_advisory_xact_lock(?)", (AUDIT_LOCK,))
                yield cur
        except psycopg.Error as exc:
            raise AuditError(f"cannot write the audit chain in {self.db.describe()}: {exc}") from exc

    def _append_sanitised(self, event: Mapping[str, Any]) -> dict[str, Any]:
        with self._appending() as cur:
            return self._append_in(cur, event)

    def _append_in(self, cur: Cursor, event: Mapping[str, Any]) -> dict[str, Any]:
        """Seal ``event`` as the next record and insert it (under the append lock)."""
        now, seq, text = cur.execute(_NEWEST).fetchone()
        if seq is None:
            seq, prev = self._anchor_in(cur)
        else:
            prev = _hash_of(text)
        record = self._seal(event, int(seq) + 1, prev, _iso(now))
        columns = index_columns(record)
        cur.execute(
            "INSERT INTO audit_records (seq, kind, intent_seq, record) VALUES (?, ?, ?, ?)",
            (record["seq"], columns["kind"], columns["intent_seq"], canonical(record)),
        )
        return record

    @staticmethod
    def _anchor_in(cur: Cursor) -> tuple[int, str]:
        row = cur.execute(_ANCHOR).fetchone()
        return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))

    # -- reading ----------------------------------------------------------------------------
    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """One statement on this thread's connection (``%s`` placeholders)."""
        try:
            return list(self.db.connection().execute(sql.encode(), params).fetchall())
        except psycopg.Error as exc:
            raise AuditError(f"cannot read the audit chain in {self.db.describe()}: {exc}") from exc

    def records(self) -> Iterator[dict[str, Any]]:
        """Every parseable record in seq order, read in pages of :data:`PAGE` rows (no
        transaction stays open between them); use :meth:`verify` to check them."""
        after = 0
        while True:
            rows = self._query(
                "SELECT seq, record FROM audit_records WHERE seq > %s ORDER BY seq LIMIT %s", (after, PAGE)
            )
            for _, text in rows:
                with contextlib.suppress(ValueError):
                    yield json.loads(text)
            if len(rows) < PAGE:
                return
            after = int(rows[-1][0])

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the newest record (a prune always leaves its own record)."""
        rows = self._query("SELECT seq, record FROM audit_records ORDER BY seq DESC LIMIT 1")
        if rows:
            return int(rows[0][0]), _hash_of(rows[0][1])
        anchor = self._query("SELECT seq, hash FROM audit_anchor WHERE id = 1")
        return (int(anchor[0][0]), str(anchor[0][1])) if anchor else (0, GENESIS)

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[ChainSnapshot]:
        """One read-only REPEATABLE READ transaction on a connection of its own: the anchor and
        the rows as they were at one moment, whatever appends or prunes run meanwhile."""
        try:
            conn = psycopg.connect(self.db.url, autocommit=True)
        except psycopg.Error as exc:
            raise AuditError(f"cannot read the audit chain in {self.db.describe()}: {exc}") from exc
        try:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.transaction():
                yield _PgSnapshot(conn, self._anchor_key)
        except psycopg.Error as exc:
            raise AuditError(f"cannot read the audit chain in {self.db.describe()}: {exc}") from exc
        finally:
            conn.close()

    # -- intents ----------------------------------------------------------------------------
    def writer_token(self) -> str:
        """This log object's writer token; the first call opens a connection that holds the
        token's session-level advisory lock until :meth:`close` or the process's end.

        Each call checks that connection with one round trip: one that died (the server
        restarted, or it was terminated) has lost the lock, and the intents written under its
        token are orphans to every other node now, so a new token and connection replace it
        rather than letting the next intent look abandoned from the start."""
        with self._writer_lock:
            if self._writer is not None:
                token, conn = self._writer
                with contextlib.suppress(psycopg.Error):
                    if not conn.closed:
                        conn.execute(b"SELECT 1")
                        return token
                self._writer = None
                with contextlib.suppress(psycopg.Error):
                    conn.close()
            token = uuid.uuid4().hex
            try:
                conn = psycopg.connect(self.db.url, autocommit=True, application_name="regard audit writer")
                try:
                    for setting in WRITER_SETTINGS:
                        conn.execute(setting.encode())
                    if conn.info.server_version >= 140000:  # an idle writer is a live one
                        conn.execute(b"SET idle_session_timeout = 0")
                    conn.execute("SELECT pg_advisory_lock(%s, %s)", writer_lock_keys(token))
                except BaseException:
                    conn.close()
                    raise
            except psycopg.Error as exc:
                raise AuditError(f"cannot register an audit writer in {self.db.describe()}: {exc}") from exc
            self._writer = (token, conn)
            return token

    def close(self) -> None:
        """End this writer (closing its connection releases its lock): its intents without an
        outcome are then orphans that the next :meth:`orphan_intents` reports."""
        with self._writer_lock:
            if self._writer is not None:
                token, conn = self._writer
                self._writer = None
                with contextlib.suppress(psycopg.Error):  # released before close() returns
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", writer_lock_keys(token))
                with contextlib.suppress(psycopg.Error):
                    conn.close()

    def _writer_gone(self, token: str) -> bool:
        if self._writer is not None and self._writer[0] == token:
            return False
        keys = writer_lock_keys(token)
        (got,) = self._query("SELECT pg_try_advisory_lock(%s, %s)", keys)[0]
        if got:
            self._query("SELECT pg_advisory_unlock(%s, %s)", keys)
        return bool(got)

    def orphan_intents(self) -> list[dict[str, Any]]:
        """Intent records that no record names by ``intent_seq`` (found by index, not by reading
        the chain) whose writer is gone, oldest first."""
        gone: dict[str, bool] = {}
        out = []
        for (text,) in self._query(_OPEN_INTENTS, (INTENT_KIND, INTENT_KIND)):
            try:
                rec = json.loads(text)
            except ValueError:
                continue  # verify names it
            token = str(rec.get("writer", ""))
            if token not in gone:
                gone[token] = self._writer_gone(token)
            if gone[token]:
                out.append(rec)
        return out

    def reconcile(self, outcome: Mapping[int, Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Append, for each intent seq of ``outcome``, its record (``intent_seq`` set), unless one
        is recorded already, checked under the append lock so that nodes reconciling at once
        record each outcome once; returns the records appended (committed together)."""
        if not outcome:
            return []
        seqs = sorted(int(s) for s in outcome)
        with self._appending() as cur:
            done = {
                int(row[0])
                for row in cur.execute(
                    "SELECT DISTINCT intent_seq FROM audit_records "
                    "WHERE intent_seq = ANY(?) AND kind IS DISTINCT FROM ?",
                    (seqs, INTENT_KIND),
                ).fetchall()
            }
            return [
                self._append_in(cur, sanitise({**outcome[seq], "intent_seq": seq}))
                for seq in seqs
                if seq not in done
            ]

    # -- retention --------------------------------------------------------------------------
    def prune(self, before: datetime, *, actor: str, now: datetime | None = None) -> int:
        """Delete the records older than ``before`` (the oldest ones, up to the first that is not);
        refused if that reaches inside the retention floor. The last pruned record's seq and hash
        become the authenticated anchor the rest continue from; the deletion, the anchor and the
        prune's own record commit together."""
        self._check_floor(before, now)
        with self._appending() as cur:
            anchor_seq, _ = self._anchor_in(cur)
            last: tuple[int, str] | None = None
            after = anchor_seq
            while True:
                rows = cur.execute(
                    "SELECT seq, record FROM audit_records WHERE seq > ? ORDER BY seq LIMIT ?", (after, PAGE)
                ).fetchall()
                stop = False
                for seq, text in rows:
                    rec = json.loads(text)
                    if parse_time(str(rec["time"])) >= before:
                        stop = True
                        break
                    last = (int(seq), str(rec["hash"]))
                if stop or len(rows) < PAGE:
                    break
                after = int(rows[-1][0])
            pruned = 0
            if last is not None:
                pruned = last[0] - anchor_seq
                cur.execute("DELETE FROM audit_records WHERE seq <= ?", (last[0],))
                pruned_at = now_iso()
                mac = self._anchor_mac(self._anchor_key, last[0], last[1], pruned_at)
                cur.execute(
                    "INSERT INTO audit_anchor (id, seq, hash, pruned_at, mac) VALUES (1, ?, ?, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash, "
                    "pruned_at = EXCLUDED.pruned_at, mac = EXCLUDED.mac",
                    (last[0], last[1], pruned_at, mac),
                )
            self._append_in(cur, sanitise(self._prune_event(before, actor, pruned)))
        return pruned


class _PgSnapshot:
    """The anchor row and ``audit_records`` in one transaction, as verify walks them."""

    def __init__(self, conn: psycopg.Connection[Any], key: bytes) -> None:
        self.conn = conn
        self.key = key
        self.row = conn.execute(_ANCHOR.encode()).fetchone()

    def anchor(self) -> tuple[int, str]:
        return (0, GENESIS) if self.row is None else (int(self.row[0]), str(self.row[1]))

    def anchor_problem(self) -> str | None:
        if self.row is None:
            return None
        seq, digest, pruned_at, mac = self.row
        expected = AuditChain._anchor_mac(self.key, int(seq), str(digest), str(pruned_at))
        if not isinstance(mac, str) or not hmac.compare_digest(mac, expected):
            return (
                "the anchor row (audit_anchor) is not authentic (its MAC does not match): "
                "regard's prune did not write it"
            )
        return None

    def stored(self) -> Iterator[StoredRecord]:
        with self.conn.cursor(name="regard_audit_verify") as cur:
            cur.itersize = PAGE
            cur.execute(b"SELECT seq, kind, intent_seq, record FROM audit_records ORDER BY seq")
            for position, (seq, kind, intent_seq, text) in enumerate(cur, start=1):
                raw = (text + "\n").encode("utf-8")
                yield StoredRecord(position, raw, {"seq": seq, "kind": kind, "intent_seq": intent_seq})
