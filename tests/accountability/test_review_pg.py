"""The two-person review queue shared by several API nodes (issue 16): leads in the PostgreSQL
database every node uses, or in one ``review.sqlite3`` read by several queues.

The attacks: two verifiers confirm one lead at the same moment through two nodes (each reads "no
decision yet", so without a row lock neither sets CONFIRMED); a confirmation races a rejection;
one person decides twice through two nodes; the requester decides; a face is deleted through one
node while the lead about it was raised through another node (or no queue is open in the deleting
process); an erased FaceId lingers in the table files.
"""

from __future__ import annotations

import gc
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from regard.accountability.review import (
    CLOSED,
    CONFIRMED,
    PENDING,
    REJECTED,
    Candidate,
    ReviewQueue,
    ReviewRefused,
    _database,
)
from regard.errors import ConflictError
from regard.face.engine import Engine
from regard.scoring.calibrate import CalibrationTable, Scorer
from regard.service import Service
from regard.service.base import Removal
from regard.shared_db import PostgresDb
from regard.store.base import FaceRecord, NewFace
from regard.types import Box

INVESTIGATOR = ("RGKINV00000000000001", "investigator")
VERA = ("RGKVER00000000000001", "vera")
VICTOR = ("RGKVER00000000000002", "victor")
ROUNDS = 20

Nodes = Callable[[], ReviewQueue]


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Nodes]:
    """Opens the queue of one more node: on one data directory's file (SQLite) or on one
    PostgreSQL database, each node with its own connection and its own data directory."""
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    dbs: list[PostgresDb] = []

    def factory() -> ReviewQueue:
        if url is None:
            return ReviewQueue(tmp_path / "data")
        db = PostgresDb(url)
        dbs.append(db)
        return ReviewQueue(tmp_path / f"node-{len(dbs)}", db=db)

    yield factory
    for db in dbs:
        db.close()


@pytest.fixture
def pg_node(pg_url: str, tmp_path: Path) -> Iterator[Nodes]:
    """Like ``node``, PostgreSQL only."""
    dbs: list[PostgresDb] = []

    def factory() -> ReviewQueue:
        db = PostgresDb(pg_url)
        dbs.append(db)
        return ReviewQueue(tmp_path / f"node-{len(dbs)}", db=db)

    yield factory
    for db in dbs:
        db.close()


def _raise(
    queue: ReviewQueue, n: int = 1, collection: str = "c", face_ids: list[str] | None = None
) -> list[str]:
    ids = face_ids or [str(uuid.uuid4()) for _ in range(n)]
    return queue.add(
        request_id=str(uuid.uuid4()),
        requester_key=INVESTIGATOR[0],
        requester_principal=INVESTIGATOR[1],
        collection_id=collection,
        operation="SearchFacesByImage",
        candidates=[Candidate(f, None, f"ext-{f}", 97.5, 1e-6) for f in ids],
        purpose="locate a missing person",
        case_reference="CASE-16",
    )


def _decide(queue: ReviewQueue, lead_id: str, who: tuple[str, str], decision: str = "confirm") -> Any:
    return queue.decide(
        lead_id, reviewer_key=who[0], reviewer_principal=who[1], reviewer_role="verifier", decision=decision
    )


def _at_once(a: Callable[[], Any], b: Callable[[], Any], barrier: threading.Barrier) -> list[Any]:
    """Run ``a`` and ``b`` in two threads released together; returns each one's result or error."""

    def run(f: Callable[[], Any]) -> Any:
        barrier.wait()
        try:
            return f()
        except Exception as exc:
            return exc

    with ThreadPoolExecutor(2) as pool:
        fa, fb = pool.submit(run, a), pool.submit(run, b)
        return [fa.result(), fb.result()]


# -- one queue, several nodes ----------------------------------------------------------------------


def test_a_lead_raised_through_one_node_is_listed_and_read_by_another(node: Nodes) -> None:
    a, b = node(), node()
    face = str(uuid.uuid4())
    (lead_id,) = _raise(a, face_ids=[face])
    listed = b.list()
    assert [lead.lead_id for lead in listed] == [lead_id]
    lead = b.get(lead_id)
    assert (lead.status, lead.face_id, lead.similarity, lead.fmr) == (PENDING, face, 97.5, 1e-6)
    assert lead.requester_principal == INVESTIGATOR[1]
    assert [x.lead_id for x in b.list(face_ids=[face], status=None)] == [lead_id]
    assert b.list(face_ids=[]) == []


def _queue_order(queue: ReviewQueue, lead_ids: list[str]) -> list[str]:
    """``lead_ids`` in queue order (created_at, then lead_id), read one lead at a time."""
    return sorted(lead_ids, key=lambda i: (queue.get(i).created_at, i))


def test_listing_attaches_each_lead_its_own_decisions_in_queue_order(node: Nodes) -> None:
    a, b = node(), node()
    first, second, third = _queue_order(a, _raise(a, 3))
    _decide(a, first, VERA)
    _decide(b, third, VICTOR, "reject")
    listed = b.list(status=None)
    assert [lead.lead_id for lead in listed] == [first, second, third]
    assert [[d.reviewer_principal for d in lead.decisions] for lead in listed] == [["vera"], [], ["victor"]]
    assert [lead.status for lead in listed] == [PENDING, PENDING, REJECTED]
    assert [x.lead_id for x in a.list(status=None, limit=2, visible=lambda x: x.lead_id != second)] == [
        first,
        third,
    ]
    # Past one page of the batched read: the scope filter still applies before the limit.
    many = _raise(a, 510)
    hidden = set(many[:5])
    expected = [i for i in _queue_order(a, [first, second, *many]) if i not in hidden][:504]
    shown = b.list(status=PENDING, limit=504, visible=lambda x: x.lead_id not in hidden)
    assert [x.lead_id for x in shown] == expected
    assert all(x.decisions == () for x in shown if x.lead_id != first)


def test_two_verifiers_confirming_at_once_through_two_nodes_both_count(node: Nodes) -> None:
    a, b = node(), node()
    leads = _raise(a, ROUNDS)
    barrier = threading.Barrier(2)
    for lead_id in leads:
        results = _at_once(partial(_decide, a, lead_id, VERA), partial(_decide, b, lead_id, VICTOR), barrier)
        assert not [r for r in results if isinstance(r, Exception)], results
    for lead_id in leads:
        lead = a.get(lead_id)
        assert lead.status == CONFIRMED, lead
        assert sorted((d.reviewer_principal, d.decision) for d in lead.decisions) == [
            ("vera", "confirm"),
            ("victor", "confirm"),
        ]
        assert lead.decided_at is not None
    assert b.list() == []
    assert len(b.list(status=CONFIRMED)) == ROUNDS


def test_a_confirmation_racing_a_rejection_ends_rejected(node: Nodes) -> None:
    a, b = node(), node()
    leads = _raise(a, ROUNDS)
    barrier = threading.Barrier(2)
    for lead_id in leads:
        confirmed, rejected = _at_once(
            partial(_decide, a, lead_id, VERA), partial(_decide, b, lead_id, VICTOR, "reject"), barrier
        )
        assert not isinstance(rejected, Exception), rejected
        assert rejected.status == REJECTED
        lead = b.get(lead_id)
        assert lead.status == REJECTED
        decisions = sorted((d.reviewer_principal, d.decision) for d in lead.decisions)
        if isinstance(confirmed, Exception):  # the rejection came first: nothing more is taken
            assert isinstance(confirmed, ConflictError)
            assert decisions == [("victor", "reject")]
        else:  # the confirmation came first and stays on record
            assert confirmed.status == PENDING
            assert decisions == [("vera", "confirm"), ("victor", "reject")]


def test_one_person_cannot_decide_twice_through_two_nodes(node: Nodes) -> None:
    a, b = node(), node()
    lead_id, other = _raise(a, 2)
    _decide(a, lead_id, VERA)
    with pytest.raises(ReviewRefused):
        _decide(b, lead_id, VERA)
    with pytest.raises(ReviewRefused):  # another key, the same person's name written differently
        _decide(b, lead_id, ("RGKVER00000000000099", " VERA "))
    assert b.get(lead_id).status == PENDING
    assert len(b.get(lead_id).decisions) == 1
    # The same person racing themselves through two nodes: exactly one decision is taken.
    results = _at_once(lambda: _decide(a, other, VERA), lambda: _decide(b, other, VERA), threading.Barrier(2))
    assert sum(isinstance(r, ReviewRefused) for r in results) == 1, results
    assert [d.reviewer_principal for d in a.get(other).decisions] == ["vera"]
    assert a.get(other).status == PENDING


def test_the_requester_cannot_decide_on_their_own_leads(node: Nodes) -> None:
    a, b = node(), node()
    (lead_id,) = _raise(a)
    with pytest.raises(ReviewRefused):
        _decide(b, lead_id, INVESTIGATOR)
    with pytest.raises(ReviewRefused):  # a verifier key under the requester's name
        _decide(b, lead_id, ("RGKVER00000000000077", "Investigator"))
    with pytest.raises(ReviewRefused):
        b.decide(
            lead_id,
            reviewer_key=VERA[0],
            reviewer_principal=VERA[1],
            reviewer_role="admin",
            decision="confirm",
        )
    lead = a.get(lead_id)
    assert (lead.status, lead.decisions) == (PENDING, ())


def test_one_rejection_rejects_and_closes_the_lead_to_more_decisions(node: Nodes) -> None:
    a, b = node(), node()
    (lead_id,) = _raise(a)
    lead = _decide(b, lead_id, VICTOR, "reject")
    assert lead.status == REJECTED
    assert a.get(lead_id).status == REJECTED
    with pytest.raises(ConflictError):
        _decide(a, lead_id, VERA)
    assert [d.decision for d in a.get(lead_id).decisions] == ["reject"]


def test_withdrawal_through_one_node_closes_the_pending_lead_for_all(node: Nodes) -> None:
    a, b = node(), node()
    face, decided_face, kept_face = (str(uuid.uuid4()) for _ in range(3))
    pending, decided, kept = _raise(a, face_ids=[face, decided_face, kept_face])
    _decide(a, decided, VERA)
    _decide(b, decided, VICTOR)
    assert b.withdraw(Removal("c", face_ids=[face, decided_face])) == 2
    closed = a.get(pending)
    assert (closed.status, closed.face_id, closed.external_image_id) == (CLOSED, None, None)
    still = a.get(decided)
    assert (still.status, still.face_id) == (CONFIRMED, None)
    assert a.get(kept).face_id == kept_face
    with pytest.raises(ConflictError):
        _decide(a, pending, VERA)


# -- the backends ----------------------------------------------------------------------------------


def test_without_a_database_the_queue_is_the_data_directorys_file(tmp_path: Path) -> None:
    queue = ReviewQueue(tmp_path / "data")
    assert queue.path == tmp_path / "data" / "review.sqlite3"
    assert queue.data_dir == tmp_path / "data"
    assert queue.path.stat().st_mode & 0o777 == 0o600
    assert "review.sqlite3" in queue.describe()
    import sqlite3

    (lead_id,) = _raise(queue)
    with sqlite3.connect(queue.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT status FROM leads WHERE lead_id = ?", (lead_id,)).fetchone() == (PENDING,)


@pytest.mark.postgres
def test_a_postgres_queue_keeps_no_file_and_names_its_database_without_the_password(
    pg_url: str, tmp_path: Path
) -> None:
    url = pg_url.replace(":@", ":s3cret@", 1)
    assert "s3cret" in url  # the test server trusts local connections: any password opens it
    db = PostgresDb(url)
    try:
        queue = ReviewQueue(tmp_path / "node", db=db)
        _raise(queue)
        assert not queue.path.exists()
        assert queue.path.parent == queue.data_dir == tmp_path / "node"
        text = queue.describe()
        assert "PostgreSQL" in text
        assert "s3cret" not in text
    finally:
        db.close()


def test_database_urls_name_one_database_whatever_the_credentials() -> None:
    assert _database("postgresql://a:x@db.example:5432/regard") == _database(
        "postgresql://b@db.example/regard"
    )
    assert _database("postgresql://a@db.example/regard") != _database("postgresql://a@db.example/other")
    assert _database("postgresql://a@db.example/regard") != _database("postgresql://a@db.example:6543/regard")


# -- erasure leaves no trace in PostgreSQL ---------------------------------------------------------


def _database_files_holding(db: PostgresDb, needle: str) -> list[Path]:
    """The files of ``db``'s database directory holding ``needle``, after a checkpoint (so what
    the server holds in memory is in the files)."""
    conn = db.connection()
    conn.execute("CHECKPOINT")
    data = Path(conn.execute("SHOW data_directory").fetchone()[0])
    oid = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()[0]
    raw = needle.encode()
    return [p for p in (data / "base" / str(oid)).iterdir() if p.is_file() and raw in p.read_bytes()]


def _rows_mentioning(db: PostgresDb, needle: str) -> int:
    conn = db.connection()
    leads = conn.execute("SELECT count(*) FROM leads WHERE leads::text LIKE %s", (f"%{needle}%",)).fetchone()[
        0
    ]
    decisions = conn.execute(
        "SELECT count(*) FROM decisions d JOIN leads l USING (lead_id) WHERE l.face_id = %s", (needle,)
    ).fetchone()[0]
    return int(leads) + int(decisions)


@pytest.mark.postgres
def test_erasing_a_face_deletes_its_leads_and_the_face_id_leaves_the_table_files(pg_node: Nodes) -> None:
    a, b = pg_node(), pg_node()
    face, other = str(uuid.uuid4()), str(uuid.uuid4())
    erased, kept = _raise(a, face_ids=[face, other])
    _decide(b, erased, VERA)
    assert isinstance(a.db, PostgresDb)
    assert _rows_mentioning(a.db, face) == 2
    assert _database_files_holding(a.db, face)  # the attack would find it before erasure
    assert b.forget_faces([face]) == 1
    assert _rows_mentioning(a.db, face) == 0
    assert a.db.connection().execute("SELECT count(*) FROM decisions").fetchone()[0] == 0
    with pytest.raises(Exception, match="does not exist"):
        a.get(erased)
    assert a.get(kept).face_id == other
    assert _database_files_holding(a.db, face) == []


@pytest.mark.postgres
def test_withdrawal_wipes_the_face_id_from_the_postgres_table_files(pg_node: Nodes) -> None:
    a, b = pg_node(), pg_node()
    face = str(uuid.uuid4())
    (lead_id,) = _raise(a, face_ids=[face])
    assert isinstance(a.db, PostgresDb)
    assert _database_files_holding(a.db, face)
    b.withdraw(Removal("c", face_ids=[face]))
    lead = a.get(lead_id)
    assert (lead.status, lead.face_id, lead.external_image_id) == (CLOSED, None, None)
    assert _rows_mentioning(a.db, face) == 0
    assert _database_files_holding(a.db, face) == []


@pytest.mark.postgres
def test_the_planner_keeps_no_sample_of_ids(pg_node: Nodes) -> None:
    """ANALYZE would copy sample values into pg_statistic, where no deletion reaches them."""
    a = pg_node()
    _raise(a, 50)
    assert isinstance(a.db, PostgresDb)
    conn = a.db.connection()
    conn.execute("ANALYZE leads")
    sampled = {
        r[0]
        for r in conn.execute(
            "SELECT attname FROM pg_stats WHERE tablename = 'leads' AND "
            "(histogram_bounds IS NOT NULL OR most_common_vals IS NOT NULL)"
        )
    }
    assert "similarity" in sampled or "created_at" in sampled or "status" in sampled  # ANALYZE ran
    assert sampled.isdisjoint({"face_id", "user_id", "external_image_id"}), sampled


# -- deletion through a real PostgreSQL service, on any node ----------------------------------------


def _scorer() -> Scorer:
    return Scorer(
        CalibrationTable.from_dict(
            {
                "version": "test",
                "model": "synthetic",
                "dataset": "synthetic",
                "rows": [
                    {"distance": 0.5, "fmr": 1e-4, "fnmr": 0.5},
                    {"distance": 0.9, "fmr": 1.0, "fnmr": 0.1},
                ],
                "tail": {"slope": 10.0, "distance": 0.5, "log10_fmr": -4.0},
                "counts": {"genuine": 1, "impostor": 1},
            }
        )
    )


def _faces(service: Service, n: int, seed: int) -> list[FaceRecord]:
    vectors = (np.random.default_rng(seed).standard_normal((n, 128)) * 0.09).astype(np.float32)
    return service.add_templates(
        "c",
        [
            NewFace(str(uuid.uuid4()), str(uuid.uuid4()), f"x{i}", Box(0.1, 0.1, 0.5, 0.5), 99.0, v)
            for i, v in enumerate(vectors)
        ],
    )


@pytest.fixture
def pg_service(pg_url: str, tmp_path: Path, engine: Engine) -> Iterator[Service]:
    """Node A's service on the shared database."""
    service = Service.open(tmp_path / "node-a", database_url=pg_url, engine=engine, scorer=_scorer())
    service.create_collection("c")
    yield service
    service.close()


@pytest.mark.postgres
def test_deleting_a_face_through_one_node_withdraws_the_lead_raised_through_another(
    pg_service: Service, pg_node: Nodes
) -> None:
    queue_b = pg_node()
    face, other = _faces(pg_service, 2, seed=16)
    lead_id, kept = _raise(queue_b, face_ids=[face.face_id, other.face_id])
    pg_service.delete_faces("c", [face.face_id])
    lead = queue_b.get(lead_id)
    assert (lead.status, lead.face_id, lead.external_image_id) == (CLOSED, None, None)
    with pytest.raises(ConflictError):
        _decide(queue_b, lead_id, VERA)
    assert queue_b.get(kept).status == PENDING
    assert isinstance(queue_b.db, PostgresDb)
    assert _rows_mentioning(queue_b.db, face.face_id) == 0


@pytest.mark.postgres
def test_a_node_with_no_queue_open_still_withdraws(pg_service: Service, pg_url: str, tmp_path: Path) -> None:
    """The deleting process never read the queue: the lead raised by another node is withdrawn all
    the same, in the shared database."""
    face = _faces(pg_service, 1, seed=17)[0]
    raising = PostgresDb(pg_url)
    try:
        (lead_id,) = _raise(ReviewQueue(tmp_path / "node-b", db=raising), face_ids=[face.face_id])
    finally:
        raising.close()
    gc.collect()  # the raising node's queue is gone from this process
    pg_service.delete_faces("c", [face.face_id])
    reading = PostgresDb(pg_url)
    try:
        lead = ReviewQueue(tmp_path / "node-c", db=reading).get(lead_id)
        assert (lead.status, lead.face_id) == (CLOSED, None)
    finally:
        reading.close()


@pytest.mark.postgres
def test_a_queue_on_another_database_is_left_alone(
    pg_service: Service, pg_server: Any, tmp_path: Path
) -> None:
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    elsewhere = PostgresDb(str(pg_server.get_uri(database=name)))
    try:
        queue = ReviewQueue(tmp_path / "elsewhere", db=elsewhere)
        face = _faces(pg_service, 1, seed=18)[0]
        (lead_id,) = _raise(queue, face_ids=[face.face_id])
        pg_service.delete_faces("c", [face.face_id])
        lead = queue.get(lead_id)
        assert (lead.status, lead.face_id) == (PENDING, face.face_id)
    finally:
        elsewhere.close()
