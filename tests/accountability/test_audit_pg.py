"""Issue 16: one audit chain in the PostgreSQL database every node shares.

Appends from several processes (standing in for nodes) and threads are serialised by the
database; tampering with rows, the anchor row or the whole chain fails ``verify``; prune keeps
the retention floor and leaves an authenticated anchor; the intents of a writer killed with
SIGKILL are found (by its advisory lock, released when its connection dies) and reconciled once.
Every test runs against a real PostgreSQL server, in a fresh database (``pg_url``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from regard.accountability import audit_pg
from regard.accountability.audit import (
    GENESIS,
    INTENT_KIND,
    AuditChain,
    AuditError,
    canonical,
    export_text,
    parse_time,
    record_hash,
)
from regard.accountability.audit_pg import PgAuditLog, writer_lock_keys
from regard.errors import AccessDenied
from regard.shared_db import PostgresDb

pytestmark = pytest.mark.postgres

KEY = bytes(range(32))
FUTURE = datetime.now(UTC) + timedelta(days=400)  # "now" for prunes: every record is past the floor

#: A stand-in node: its own process, database connections and log; appends after a "go" line.
APPENDER = """
import sys
from regard.accountability.audit_pg import PgAuditLog
from regard.shared_db import PostgresDb
db = PostgresDb(sys.argv[1])
log = PgAuditLog(db, anchor_key=bytes.fromhex(sys.argv[2]))
name, n = sys.argv[3], int(sys.argv[4])
print("ready", flush=True)
sys.stdin.readline()
for i in range(n):
    log.append({"kind": "admin", "operation": "Test", "request_id": f"{name}-{i}"})
db.close()
"""

#: A writer that records an intent, says so, then waits to be killed.
INTENDER = """
import sys
from regard.accountability.audit_pg import PgAuditLog
from regard.shared_db import PostgresDb
db = PostgresDb(sys.argv[1])
log = PgAuditLog(db, anchor_key=bytes.fromhex(sys.argv[2]))
rec = log.append({"kind": "intent", "operation": "CreateUser", "request_id": "r-child",
                  "collection": "people", "parameters": {"UserId": "u"},
                  "collection_state": {"before": None}, "writer": log.writer_token(),
                  "outcome": "pending"})
print(rec["seq"], rec["writer"], flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def db(pg_url: str) -> Iterator[PostgresDb]:
    shared = PostgresDb(pg_url)
    yield shared
    shared.close()


@pytest.fixture
def log(db: PostgresDb) -> Iterator[PgAuditLog]:
    chain = PgAuditLog(db, anchor_key=KEY)
    yield chain
    chain.close()


@contextlib.contextmanager
def _child(script: str, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A Python child running ``script`` with pipes to its stdin and stdout; killed if still
    running when the block ends, its pipes closed."""
    with subprocess.Popen(
        [sys.executable, "-c", script, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            yield child
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()


def _fill(log: AuditChain, n: int, operation: str = "Test") -> list[dict[str, Any]]:
    return [log.append({"kind": "admin", "operation": operation, "results": {"i": i}}) for i in range(n)]


def _sql(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """One statement as someone with write access to the database runs it (not through regard)."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql.encode(), params)
        return list(cur.fetchall()) if cur.description else []


def _intent(log: PgAuditLog, request_id: str = "r-1") -> dict[str, Any]:
    return log.append(
        {
            "kind": INTENT_KIND,
            "operation": "CreateUser",
            "request_id": request_id,
            "collection": "people",
            "writer": log.writer_token(),
            "outcome": "pending",
        }
    )


def _unknown(intent: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "system", "operation": intent["operation"], "outcome": "unknown"}


def _outcomes_of(log: PgAuditLog, seq: int) -> list[dict[str, Any]]:
    return [r for r in log.records() if r.get("intent_seq") == seq and r.get("kind") != INTENT_KIND]


# -- the chain ------------------------------------------------------------------------------
def test_records_are_stored_as_their_canonical_text_and_verify(pg_url: str, log: PgAuditLog) -> None:
    written = _fill(log, 5)
    assert [r["seq"] for r in written] == [1, 2, 3, 4, 5]
    assert written[0]["prev_hash"] == GENESIS
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(written))
    assert all(r["hash"] == record_hash(r) for r in written)
    rows = _sql(pg_url, "SELECT seq, kind, intent_seq, record FROM audit_records ORDER BY seq")
    assert rows == [(r["seq"], "admin", None, canonical(r)) for r in written]
    assert list(log.records()) == written
    assert log.head() == (5, written[-1]["hash"])
    result = log.verify()
    assert result.ok and result.records == 5 and result.head_hash == written[-1]["hash"]
    assert export_text(log) == "".join(canonical(r) + "\n" for r in written)
    assert "PostgreSQL" in log.describe() and "audit_records" in log.describe()


def test_an_empty_chain_verifies_and_its_head_is_genesis(log: PgAuditLog) -> None:
    assert log.head() == (0, GENESIS)
    assert log.verify().ok and log.verify().records == 0
    assert list(log.records()) == []


def test_two_processes_and_threads_append_at_once_into_one_gapless_chain(
    pg_url: str, log: PgAuditLog
) -> None:
    per_child, threads, per_thread = 200, 2, 50
    with contextlib.ExitStack() as stack:
        children = [
            stack.enter_context(_child(APPENDER, pg_url, KEY.hex(), name, str(per_child)))
            for name in ("node-a", "node-b")
        ]
        for child in children:  # both connected and migrated before any of them appends
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        start = threading.Barrier(threads + 1)

        def append(name: str) -> None:
            start.wait()
            for i in range(per_thread):
                log.append({"kind": "admin", "operation": "Test", "request_id": f"{name}-{i}"})

        workers = [threading.Thread(target=append, args=(f"thread-{t}",)) for t in range(threads)]
        for w in workers:
            w.start()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        start.wait()
        for w in workers:
            w.join()
        for child in children:
            assert child.wait(timeout=300) == 0
    total = 2 * per_child + threads * per_thread
    records = list(log.records())
    assert [r["seq"] for r in records] == list(range(1, total + 1))
    expected = {f"node-{n}-{i}" for n in "ab" for i in range(per_child)}
    expected |= {f"thread-{t}-{i}" for t in range(threads) for i in range(per_thread)}
    assert sorted(r["request_id"] for r in records) == sorted(expected)
    # each writer's own records keep its order
    for name in ("node-a", "node-b", "thread-0"):
        mine = [int(r["request_id"].rsplit("-", 1)[1]) for r in records if r["request_id"].startswith(name)]
        assert mine == sorted(mine)
    result = log.verify()
    assert result.ok and result.records == total
    assert log.head() == (total, records[-1]["hash"])


def test_records_prune_and_verify_page_through_the_chain(
    monkeypatch: pytest.MonkeyPatch, log: PgAuditLog
) -> None:
    monkeypatch.setattr(audit_pg, "PAGE", 3)
    written = _fill(log, 10)
    assert list(log.records()) == written
    assert log.verify().ok and log.verify().records == 10
    before = parse_time(written[7]["time"])
    expected = next(i for i, r in enumerate(written) if parse_time(r["time"]) >= before)
    assert log.prune(before, actor="ops", now=FUTURE) == expected == 7
    assert [r["seq"] for r in log.records()] == [8, 9, 10, 11]


def test_an_append_inside_another_transaction_is_refused(db: PostgresDb, log: PgAuditLog) -> None:
    """Its record would commit (or roll back) with the caller's transaction, not before the answer."""
    with db.transaction(), pytest.raises(AuditError, match="transaction of its own"):
        log.append({"kind": "admin", "operation": "Test"})
    assert list(log.records()) == []
    assert log.append({"kind": "admin", "operation": "Test"})["seq"] == 1


def test_appends_read_what_committed_before_the_lock_whatever_the_default_isolation(pg_url: str) -> None:
    (name,) = _sql(pg_url, "SELECT current_database()")[0]
    _sql(pg_url, f"ALTER DATABASE {name} SET default_transaction_isolation = 'repeatable read'")
    db = PostgresDb(pg_url)
    try:
        log = PgAuditLog(db, anchor_key=KEY)
        assert db.connection().execute("SHOW transaction_isolation").fetchone() == ("repeatable read",)
        with log._appending() as cur:
            assert cur.execute("SHOW transaction_isolation").fetchone() == ("read committed",)
        _fill(log, 3)
        assert log.verify().ok and log.head()[0] == 3
    finally:
        db.close()


def test_bytes_and_reserved_fields_are_refused_and_strings_sanitised(log: PgAuditLog) -> None:
    with pytest.raises(TypeError, match="never go into the audit log"):
        log.append({"kind": "admin", "template": b"\x00\x01"})
    with pytest.raises(Exception, match="may not set seq"):
        log.append({"kind": "admin", "seq": 7})
    record = log.append({"kind": "admin", "request_id": "r\n1", "error": "x" * 5000})
    assert record["request_id"] == "r\\u000a1"
    assert len(record["error"]) < 1200 and "truncated: 5000 characters" in record["error"]
    assert list(log.records()) == [record]


# -- tampering ------------------------------------------------------------------------------
def test_an_edited_record_fails_verify_naming_its_seq(pg_url: str, log: PgAuditLog) -> None:
    _fill(log, 10)
    _sql(
        pg_url,
        'UPDATE audit_records SET record = replace(record, \'"operation":"Test"\', '
        '\'"operation":"Other"\') WHERE seq = 5',
    )
    assert '"operation":"Other"' in _sql(pg_url, "SELECT record FROM audit_records WHERE seq = 5")[0][0]
    result = log.verify()
    assert not result.ok
    assert (result.broken_seq, result.broken_line, result.records) == (5, 5, 4)
    assert result.reason == "hash does not match the record's content"
    assert "seq 5 (row 5)" in result.describe()


def test_a_record_whose_text_is_not_canonical_fails(pg_url: str, log: PgAuditLog) -> None:
    _fill(log, 3)
    _sql(pg_url, "UPDATE audit_records SET record = replace(record, ',', ', ') WHERE seq = 2")
    result = log.verify()
    assert (result.ok, result.broken_seq) == (False, 2)
    assert result.reason == "bytes differ from the record's canonical form"


def test_an_index_column_that_disagrees_with_the_record_fails(pg_url: str, log: PgAuditLog) -> None:
    """Hiding an intent from the orphan query by editing its ``kind`` column is caught."""
    _fill(log, 2)
    _intent(log)
    _sql(pg_url, "UPDATE audit_records SET kind = 'admin' WHERE seq = 3")
    result = log.verify()
    assert (result.ok, result.broken_seq) == (False, 3)
    assert result.reason is not None and "kind column" in result.reason


def test_a_deleted_middle_row_fails_verify(pg_url: str, log: PgAuditLog) -> None:
    _fill(log, 10)
    _sql(pg_url, "DELETE FROM audit_records WHERE seq = 6")
    result = log.verify()
    assert not result.ok
    assert (result.broken_seq, result.broken_line, result.records) == (6, 6, 5)
    assert result.reason == "seq is 7, expected 6"


def test_a_deleted_last_row_is_caught_by_a_head_recorded_earlier(pg_url: str, log: PgAuditLog) -> None:
    _fill(log, 10)
    head = log.head()
    _sql(pg_url, "DELETE FROM audit_records WHERE seq = 10")
    assert log.verify().ok  # a shorter chain is a valid chain ...
    result = log.verify([head])  # ... but not the one whose head was published
    assert not result.ok and result.broken_seq == 10
    assert result.reason == f"expected head 10:{head[1]} is not in the log"


@pytest.mark.parametrize(
    "forger_key", [None, b"attacker's own key, not the one"], ids=["made-up", "other-key"]
)
def test_deleting_the_first_rows_and_forging_the_anchor_fails_naming_the_anchor(
    pg_url: str, log: PgAuditLog, forger_key: bytes | None
) -> None:
    written = _fill(log, 150)
    with pytest.raises(AccessDenied, match="retention floor"):  # regard refuses this deletion
        log.prune(datetime.now(UTC) + timedelta(seconds=1), actor="attacker")
    last = written[99]
    pruned_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    mac = "0" * 64 if forger_key is None else AuditChain._anchor_mac(forger_key, 100, last["hash"], pruned_at)
    _sql(pg_url, "DELETE FROM audit_records WHERE seq <= 100")
    _sql(
        pg_url,
        "INSERT INTO audit_anchor (id, seq, hash, pruned_at, mac) VALUES (1, %s, %s, %s, %s)",
        (100, last["hash"], pruned_at, mac),
    )
    assert next(r["seq"] for r in log.records()) == 101  # the remaining rows link to the anchor
    result = log.verify()
    assert not result.ok
    assert (result.broken_seq, result.broken_line, result.records) == (100, 0, 0)
    assert result.reason is not None and "anchor" in result.reason and "not authentic" in result.reason


def test_an_attacker_holding_the_key_is_caught_by_heads_recorded_earlier(
    pg_url: str, log: PgAuditLog
) -> None:
    written = _fill(log, 20)
    early, late = log.head(), (15, written[14]["hash"])
    assert early[0] == 20
    # Rewrite record 3 and re-seal every record after it, as someone with the database does.
    rows = _sql(pg_url, "SELECT seq, record FROM audit_records ORDER BY seq")
    prev = GENESIS
    for seq, text in rows:
        rec = json.loads(text)
        if seq == 3:
            rec["operation"] = "Nothing happened"
        rec["prev_hash"] = prev
        rec["hash"] = record_hash(rec)
        prev = rec["hash"]
        _sql(pg_url, "UPDATE audit_records SET record = %s WHERE seq = %s", (canonical(rec), seq))
    assert log.verify().ok  # self-consistent: only a head kept outside regard tells
    for head in (early, late):
        result = log.verify([head])
        assert not result.ok and result.broken_seq == head[0]
        assert result.reason is not None and "does not match" in result.reason
    # With the key, the start can also be deleted under a signed anchor; a head from before says so.
    first_kept = json.loads(rows[5][1])["seq"]
    assert first_kept == 6
    _sql(pg_url, "DELETE FROM audit_records WHERE seq <= 5")
    anchor_hash = next(log.records())["prev_hash"]
    pruned_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    mac = AuditChain._anchor_mac(KEY, 5, anchor_hash, pruned_at)
    _sql(pg_url, "INSERT INTO audit_anchor VALUES (1, 5, %s, %s, %s)", (anchor_hash, pruned_at, mac))
    assert log.verify().ok
    result = log.verify([(3, written[2]["hash"])])
    assert not result.ok
    assert result.reason == f"expected head 3:{written[2]['hash']} is pruned (the anchor is at seq 5)"


def test_verify_reads_one_snapshot_while_others_append_and_prune(db: PostgresDb, log: PgAuditLog) -> None:
    _fill(log, 10)
    other = PgAuditLog(PostgresDb(db.url), anchor_key=KEY)  # another node
    with log._snapshot() as snap:
        assert other.prune(datetime.now(UTC), actor="ops", now=FUTURE) == 10
        _fill(other, 3)
        result = log._verify(snap, {})
    assert result.ok and result.records == 10  # the chain as it was when verify began
    after = log.verify()
    assert after.ok and after.records == 4  # the prune's record and three more
    other.db.close()


# -- retention ------------------------------------------------------------------------------
def test_prune_keeps_the_floor_leaves_an_anchor_and_the_chain_continues(pg_url: str, log: PgAuditLog) -> None:
    written = _fill(log, 12)
    with pytest.raises(AccessDenied, match="retention floor of 183 days"):
        log.prune(datetime.now(UTC) - timedelta(days=30), actor="ops")
    assert len(list(log.records())) == 12  # nothing deleted
    before = parse_time(written[6]["time"])
    expected = next(i for i, r in enumerate(written) if parse_time(r["time"]) >= before)
    assert expected == 6
    assert log.prune(before, actor="ops", now=FUTURE) == 6
    records = list(log.records())
    assert [r["seq"] for r in records] == list(range(7, 14))
    assert all(parse_time(r["time"]) >= before for r in records)
    prune_record = records[-1]
    assert (prune_record["operation"], prune_record["principal"]) == ("AuditPrune", "ops")
    assert prune_record["results"] == {"pruned": 6}
    ((seq, digest, pruned_at, mac),) = _sql(pg_url, "SELECT seq, hash, pruned_at, mac FROM audit_anchor")
    assert (seq, digest) == (6, written[5]["hash"])
    assert mac == AuditChain._anchor_mac(KEY, 6, digest, pruned_at)
    assert log.verify().ok and log.verify().records == 7
    assert log.verify([(6, written[5]["hash"]), (9, written[8]["hash"])]).ok
    more = _fill(log, 2)
    assert [r["seq"] for r in more] == [14, 15]
    # a second prune moves the anchor on; pruning everything leaves only its own record
    assert log.prune(datetime.now(UTC) + timedelta(seconds=1), actor="ops", now=FUTURE) == 9
    assert [r["operation"] for r in log.records()] == ["AuditPrune"]
    assert log.head()[0] == 16 and log.verify().ok
    assert _sql(pg_url, "SELECT seq FROM audit_anchor") == [(15,)]


def test_a_broken_chain_is_not_pruned(pg_url: str, log: PgAuditLog) -> None:
    _fill(log, 5)
    _sql(pg_url, "DELETE FROM audit_records WHERE seq = 3")
    with pytest.raises(AuditError, match="refusing to prune a broken log"):
        log.prune(datetime.now(UTC), actor="ops", now=FUTURE)
    assert [r["seq"] for r in log.records()] == [1, 2, 4, 5]


def test_a_verifier_without_the_key_rejects_the_anchor(db: PostgresDb, log: PgAuditLog) -> None:
    _fill(log, 4)
    log.prune(datetime.now(UTC), actor="ops", now=FUTURE)
    other = PgAuditLog(db, anchor_key=b"a node with another master key")
    result = other.verify()
    assert not result.ok and result.reason is not None and "anchor" in result.reason
    assert log.verify().ok


# -- intents --------------------------------------------------------------------------------
def test_a_live_writers_open_intent_is_not_an_orphan_until_it_closes(db: PostgresDb) -> None:
    writer = PgAuditLog(db, anchor_key=KEY)
    node = PgAuditLog(PostgresDb(db.url), anchor_key=KEY)
    intent = _intent(writer)
    assert writer.writer_token() == intent["writer"]  # one token for the writer's life
    assert writer.orphan_intents() == [] and node.orphan_intents() == []
    done = _intent(writer, "r-2")
    writer.append(
        {"kind": "admin", "operation": "CreateUser", "intent_seq": done["seq"], "outcome": "success"}
    )
    writer.close()  # its lock is released before close returns
    assert node.orphan_intents() == [intent]  # the one without an outcome
    node.db.close()


def test_a_writer_whose_connection_died_takes_a_new_token(pg_url: str, db: PostgresDb) -> None:
    """As after a server restart: the old token's intents are orphans, new intents are not."""
    writer = PgAuditLog(db, anchor_key=KEY)
    node = PgAuditLog(PostgresDb(pg_url), anchor_key=KEY)
    old = _intent(writer, "r-old")
    assert writer._writer is not None
    pid = writer._writer[1].info.backend_pid
    assert _sql(pg_url, "SELECT pg_terminate_backend(%s, 60000)", (pid,)) == [(True,)]  # waits for its end
    new = _intent(writer, "r-new")
    assert new["writer"] != old["writer"]
    assert node.orphan_intents() == [old]
    writer.close()
    node.db.close()


def test_a_writer_killed_with_sigkill_leaves_an_orphan_that_is_reconciled_once(
    pg_url: str, db: PostgresDb, log: PgAuditLog
) -> None:
    _fill(log, 2)
    with _child(INTENDER, pg_url, KEY.hex()) as child:
        assert child.stdout is not None
        seq_text, token = child.stdout.readline().split()
        seq = int(seq_text)
        assert seq == 3
        assert log.orphan_intents() == []  # its writer is alive
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=60) == -signal.SIGKILL
    # The server releases a dead session's locks when it notices the connection closed; wait for
    # that by taking the lock (the database tells when, no sleeping), then let it go.
    keys = writer_lock_keys(token)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '60s'")
        conn.execute("SELECT pg_advisory_lock(%s, %s)", keys)
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", keys)
    (orphan,) = log.orphan_intents()
    assert (orphan["seq"], orphan["request_id"], orphan["writer"]) == (3, "r-child", token)

    # Two nodes reconcile at the same moment, and one of them again: one outcome is written.
    nodes = [PgAuditLog(PostgresDb(pg_url), anchor_key=KEY) for _ in range(2)]
    start = threading.Barrier(len(nodes))
    appended: list[list[dict[str, Any]]] = []

    def reconcile(node: PgAuditLog) -> None:
        start.wait()
        appended.append(node.reconcile({seq: _unknown(orphan)}))

    workers = [threading.Thread(target=reconcile, args=(node,)) for node in nodes]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(len(a) for a in appended) == [0, 1]
    assert log.reconcile({seq: _unknown(orphan)}) == []
    (outcome,) = _outcomes_of(log, seq)
    assert (outcome["intent_seq"], outcome["outcome"], outcome["seq"]) == (3, "unknown", 4)
    assert log.orphan_intents() == []
    assert log.verify().ok and log.head()[0] == 4
    for node in nodes:
        node.db.close()


def test_reconcile_skips_intents_recorded_meanwhile_and_commits_the_rest_together(log: PgAuditLog) -> None:
    writer = PgAuditLog(log.db, anchor_key=KEY)
    first, second = _intent(writer, "r-1"), _intent(writer, "r-2")
    writer.close()
    assert [r["seq"] for r in log.orphan_intents()] == [first["seq"], second["seq"]]
    log.append(
        {"kind": "system", "operation": "CreateUser", "intent_seq": first["seq"], "outcome": "success"}
    )
    out = log.reconcile({first["seq"]: _unknown(first), second["seq"]: _unknown(second)})
    assert [(r["intent_seq"], r["outcome"]) for r in out] == [(second["seq"], "unknown")]
    assert log.orphan_intents() == []
    assert log.reconcile({}) == []


def test_an_intent_names_no_intent_and_an_unknown_writer_is_gone(log: PgAuditLog) -> None:
    """An intent without a writer token (or a token no one holds) is an orphan, as in the file log."""
    record = log.append({"kind": INTENT_KIND, "operation": "DeleteCollection", "outcome": "pending"})
    assert log.orphan_intents() == [record]
    assert log.append({"kind": INTENT_KIND, "operation": "X", "writer": log.writer_token()})["seq"] == 2
    assert log.orphan_intents() == [record]  # this log's own writer is alive


# -- through the guard and the command line -------------------------------------------------
def test_the_guard_writes_intents_and_outcomes_into_the_shared_chain_and_reconciles_a_dead_writer(
    tmp_path: Path, db: PostgresDb, log: PgAuditLog
) -> None:
    from regard.accountability.guard import Guard
    from regard.accountability.request import RequestInfo
    from regard.service import Service

    from .helpers import ADMIN

    with Service.open(tmp_path) as service:
        guard = Guard(tmp_path, service_factory=lambda: service, audit=PgAuditLog(db, anchor_key=KEY))
        guard.run(
            "CreateCollection",
            {"CollectionId": "people"},
            ADMIN,
            RequestInfo(request_id="create-people"),
            lambda p: service.create_collection(p["CollectionId"]),
        )
        intent, outcome = log.records()
        assert (intent["kind"], intent["outcome"]) == (INTENT_KIND, "pending")
        assert (outcome["intent_seq"], outcome["outcome"]) == (intent["seq"], "success")
        # a writer that died between its intent and its outcome: the next guard records it
        dead = PgAuditLog(db, anchor_key=KEY)
        fields = {k: v for k, v in intent.items() if k not in ("seq", "time", "prev_hash", "hash")}
        dead.append({**fields, "request_id": "r-dead", "writer": dead.writer_token()})
        dead.close()
        Guard(tmp_path, service_factory=lambda: service, audit=PgAuditLog(db, anchor_key=KEY))
        guard.audit.close()
    last = list(log.records())[-1]
    assert (last["request_id"], last["outcome"], last["intent_seq"]) == ("r-dead", "unknown", 3)
    assert last["collection_state"]["found"] is not None  # the collection as found afterwards
    assert log.orphan_intents() == [] and log.verify().ok


def test_regard_audit_verify_and_head_check_the_shared_chain_from_any_node(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.fernet import Fernet

    from regard.cli.main import main
    from regard.workspace import Workspace

    monkeypatch.setenv("REGARD_MASTER_KEY", Fernet.generate_key().decode())
    a, b = tmp_path / "node-a", tmp_path / "node-b"
    nodes = [Workspace.open(data_dir=d, database_url=pg_url) for d in (a, b)]
    chains = [ws.audit() for ws in nodes]
    assert all(isinstance(c, PgAuditLog) for c in chains)
    _fill(chains[0], 5)
    _fill(chains[1], 5)
    assert chains[1].prune(datetime.now(UTC), actor="ops", now=FUTURE) == 10  # anchor signed by B

    def cli(data_dir: Path, *args: str) -> tuple[int, str]:
        code = main(["audit", *args, "--data-dir", str(data_dir), "--database-url", pg_url])
        return code, capsys.readouterr().out

    code, out = cli(a, "head")
    assert code == 0 and out.split() == [str(n) for n in chains[0].head()]
    code, out = cli(a, "verify", "--json", "--expect", f"{out.split()[0]}:{out.split()[1]}")
    assert code == 0 and json.loads(out)["ok"] is True  # A checks B's anchor with the same derived key
    _sql(pg_url, "UPDATE audit_records SET record = replace(record, 'ops', 'someone else') WHERE seq = 11")
    code, out = cli(b, "verify", "--json")
    report = json.loads(out)
    assert code == 1 and (report["ok"], report["broken_seq"], report["broken_line"]) == (False, 11, 1)
    for ws in nodes:
        db = ws.db()
        assert db is not None
        db.close()
