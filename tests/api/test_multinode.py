"""Two ``regard serve`` nodes on one PostgreSQL: one set of keys, collections, leads and one audit chain.

Each node has its own data directory (nothing in it is shared) and the same
``REGARD_DATABASE_URL`` and ``REGARD_MASTER_KEY``; boto3 drives both at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from accountability.helpers import approved_assessment, evaluation_report
from live_server import KeyedServer, spawn_serve, terminate
from regard.config import Settings
from regard.workspace import Workspace

BIN = Path(sys.executable).parent
CASE_HEADERS = {"x-regard-purpose": "locate a missing person", "x-regard-case-reference": "CASE-9"}
PROVENANCE_HEADERS = {"x-regard-source": "custody photo", "x-regard-legal-basis": "law enforcement"}
PEOPLE = {
    "admin": ("admin", "admin"),
    "investigator": ("operator", "identification"),
    "vera": ("verifier", "identification"),
    "victor": ("verifier", "identification"),
}

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@dataclass
class Cluster:
    url: str
    env: dict[str, str]
    nodes: list[KeyedServer]
    keys: dict[str, tuple[str, str]]
    root: Path

    def start(self, name: str) -> KeyedServer:
        data_dir = self.root / name
        data_dir.mkdir(exist_ok=True)
        env = dict(os.environ, REGARD_DATA_DIR=str(data_dir), **self.env)
        endpoint, proc, log_path = spawn_serve(data_dir, env)
        node = KeyedServer(endpoint, data_dir, proc, log_path, self.keys)
        self.nodes.append(node)
        return node

    def regard(self, *args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
        """``regard ARGS`` on a third data directory (an operator's shell) with the cluster's database."""
        where = data_dir or self.root / "shell"
        where.mkdir(exist_ok=True)
        env = dict(os.environ, REGARD_DATA_DIR=str(where), **self.env)
        return subprocess.run([str(BIN / "regard"), *args], capture_output=True, text=True, env=env)

    def workspace(self) -> Workspace:
        settings = Settings.from_env(
            {"REGARD_DATA_DIR": str(self.root / "shell"), **self.env}  # the test's own view
        )
        return Workspace(settings)


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str) -> Iterator[Cluster]:
    env = {"REGARD_DATABASE_URL": pg_url, "REGARD_MASTER_KEY": Fernet.generate_key().decode()}
    c = Cluster(pg_url, env, [], {}, tmp_path)
    ws = c.workspace()
    store = ws.keys()  # keys created once, in the shared database
    for name, (role, profile) in PEOPLE.items():
        key, secret = store.create(name, role=role, profile=profile)
        c.keys[name] = (key.access_key_id, secret)
    ws.close()
    c.start("node-a")
    c.start("node-b")
    yield c
    for node in c.nodes:
        terminate(node.process)


def _face_ids(client: Any, collection: str) -> list[str]:
    out: list[str] = []
    token: str | None = None
    while True:
        more = {"NextToken": token} if token else {}
        page = client.list_faces(CollectionId=collection, MaxResults=100, **more)
        out += [f["FaceId"] for f in page["Faces"]]
        token = page.get("NextToken")
        if not token:
            return out


def _audit(cluster: Cluster) -> list[dict[str, Any]]:
    ws = cluster.workspace()
    try:
        return list(ws.audit().records())
    finally:
        ws.close()


def test_two_nodes_share_faces_keys_and_one_audit_chain(cluster: Cluster, photos: dict[str, bytes]) -> None:
    a, b = cluster.nodes
    for node in (a, b):
        assert b"PostgreSQL" in node.log_path.read_bytes()  # each node says where its state is
    a.client("admin").create_collection(CollectionId="gallery")
    # a face indexed through A is found through B on the very next request
    first = a.client("admin").index_faces(
        CollectionId="gallery", Image={"Bytes": photos["obama"]}, ExternalImageId="first"
    )["FaceRecords"][0]["Face"]["FaceId"]
    found = b.client("admin").search_faces_by_image(CollectionId="gallery", Image={"Bytes": photos["obama2"]})
    assert first in [m["Face"]["FaceId"] for m in found["FaceMatches"]]

    # IndexFaces on both nodes at once
    acknowledged: dict[str, str] = {first: "a"}  # FaceId -> node
    request_ids: dict[str, set[str]] = {"a": set(), "b": set()}
    errors: list[str] = []
    lock = threading.Lock()

    def enrol(node: KeyedServer, name: str) -> None:
        client = node.client("admin")
        for i, photo in enumerate(["obama", "obama3", "biden", "obama2"]):
            try:
                r = client.index_faces(
                    CollectionId="gallery", Image={"Bytes": photos[photo]}, ExternalImageId=f"{name}-{i}"
                )
            except Exception as exc:  # pragma: no cover - reported below
                with lock:
                    errors.append(f"{name}: {exc!r}")
                return
            with lock:
                request_ids[name].add(r["ResponseMetadata"]["RequestId"])
                for rec in r["FaceRecords"]:
                    acknowledged[rec["Face"]["FaceId"]] = name

    threads = [threading.Thread(target=enrol, args=(a, "a")), threading.Thread(target=enrol, args=(b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert errors == []
    assert len(acknowledged) == 9
    for node in (a, b):  # every acknowledged face listed once, through either node
        listed = _face_ids(node.client("admin"), "gallery")
        assert sorted(listed) == sorted(acknowledged)

    # a NextToken from A pages on through B; a ClientRequestToken retried on B is the same request
    page = a.client("admin").list_faces(CollectionId="gallery", MaxResults=4)
    rest = b.client("admin").list_faces(CollectionId="gallery", MaxResults=100, NextToken=page["NextToken"])
    paged = [f["FaceId"] for f in page["Faces"] + rest["Faces"]]
    assert sorted(paged) == sorted(acknowledged)
    for node in (a, b):
        node.client("admin").create_user(CollectionId="gallery", UserId="u1", ClientRequestToken="tok-1")
    users = b.client("admin").list_users(CollectionId="gallery")["Users"]
    assert [u["UserId"] for u in users] == ["u1"]

    # delete through B: neither node lists or finds those faces any more
    gone = [f for f, n in acknowledged.items() if n == "a"][:3]
    deleted = b.client("admin").delete_faces(CollectionId="gallery", FaceIds=gone)["DeletedFaces"]
    assert sorted(deleted) == sorted(gone)
    for node in (a, b):
        client = node.client("admin")
        assert set(_face_ids(client, "gallery")) == set(acknowledged) - set(gone)
        hits = client.search_faces_by_image(
            CollectionId="gallery", Image={"Bytes": photos["obama"]}, MaxFaces=100, FaceMatchThreshold=0
        )["FaceMatches"]
        assert not {m["Face"]["FaceId"] for m in hits} & set(gone)
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.search_faces(CollectionId="gallery", FaceId=gone[0])

    # one chain, verified by `regard audit verify`, holding both nodes' requests
    verified = cluster.regard("audit", "verify", "--json")
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["ok"] is True
    assert "PostgreSQL" in verified.stderr  # the command says which store it opened
    logged = {r.get("request_id") for r in _audit(cluster)}
    assert request_ids["a"] and request_ids["a"] <= logged
    assert request_ids["b"] and request_ids["b"] <= logged


def test_leads_raised_on_one_node_are_confirmed_through_both(
    cluster: Cluster, photos: dict[str, bytes], fr_images: Path
) -> None:
    a, b = cluster.nodes
    ws = cluster.workspace()  # an approved assessment, in the shared database both nodes gate on
    approved_assessment(ws.assessments(), ws.policies(), ["watch"], evaluation_report(fr_images))
    ws.close()
    a.client("admin").create_collection(CollectionId="watch")
    inv_a = a.client("investigator", {**CASE_HEADERS, **PROVENANCE_HEADERS})
    face_id = inv_a.index_faces(CollectionId="watch", Image={"Bytes": photos["obama"]})["FaceRecords"][0][
        "Face"
    ]["FaceId"]
    found = inv_a.search_faces_by_image(CollectionId="watch", Image={"Bytes": photos["obama2"]})
    assert found["ResponseMetadata"]["HTTPHeaders"]["x-regard-review"] == "PENDING_VERIFICATION"

    status, body = b.signed("vera", "GET", "/regard/review/leads")  # raised on A, listed on B
    assert status == 200
    (lead,) = body["Leads"]
    assert lead["FaceId"] == face_id
    path = f"/regard/review/leads/{lead['LeadId']}/confirm"
    status, body = b.signed("investigator", "POST", path, {})
    assert status == 400 and body["__type"] == "AccessDeniedException"  # the requester, on the other node
    status, body = a.signed("vera", "POST", path, {"Note": "same ears"})
    assert status == 200 and body["Status"] == "PENDING_VERIFICATION"
    status, body = b.signed("vera", "POST", path, {})
    assert status == 400 and "already reviewed" in body["message"]  # once, whichever node she asks
    status, body = b.signed("victor", "POST", path, {"Note": "agree"})
    assert status == 200 and body["Status"] == "CONFIRMED"
    status, body = a.signed("victor", "GET", "/regard/review/leads?status=CONFIRMED")
    assert [x["LeadId"] for x in body["Leads"]] == [lead["LeadId"]]

    # a policy change made once reaches both nodes
    ws = cluster.workspace()
    try:
        ws.policies().set("identification", "rate_per_second", "0.001")
        ws.policies().set("identification", "burst", "1")
    finally:
        ws.close()
    for node in (a, b):
        client = node.client("investigator", CASE_HEADERS)
        with pytest.raises(client.exceptions.ThrottlingException):
            for _ in range(3):
                client.describe_collection(CollectionId="watch")
    records = _audit(cluster)
    decisions = [r["outcome"] for r in records if r.get("operation") == "ReviewConfirm"]
    assert decisions == ["error", "success", "error", "success"]
    verified = cluster.regard("audit", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_kill_9_of_one_node_during_writes_loses_no_acknowledged_face(
    cluster: Cluster, photos: dict[str, bytes]
) -> None:
    """Node A is killed while a client keeps it writing, inside a request: once 4 faces are
    acknowledged the test takes the audit chain's append lock in PostgreSQL itself, waits until
    PostgreSQL shows A's append waiting for it, and kills A there (no timing involved)."""
    import psycopg

    from regard.accountability.audit_pg import AUDIT_LOCK

    a, b = cluster.nodes
    b.client("admin").create_collection(CollectionId="load")
    acknowledged: list[str] = []
    cut_off: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def writer() -> None:
        client = a.client("admin")
        i = 0
        while not stop.is_set():
            i += 1
            photo = ("obama", "biden", "obama3")[i % 3]
            try:
                r = client.index_faces(
                    CollectionId="load", Image={"Bytes": photos[photo]}, ExternalImageId=f"w{i}"
                )
            except Exception as exc:
                with lock:
                    cut_off.append(type(exc).__name__)
                return
            with lock:
                acknowledged.extend(rec["Face"]["FaceId"] for rec in r["FaceRecords"])

    thread = threading.Thread(target=writer)
    thread.start()
    deadline = time.monotonic() + 600
    while len(acknowledged) < 4:
        assert time.monotonic() < deadline and thread.is_alive(), cut_off
        time.sleep(0.05)
    with psycopg.connect(cluster.url, autocommit=True) as holder:
        holder.execute("BEGIN")
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_LOCK,))  # A's next append waits here
        deadline = time.monotonic() + 600
        with psycopg.connect(cluster.url, autocommit=True) as watch:
            while True:
                row = watch.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                ).fetchone()
                if row and row[0]:
                    break
                assert time.monotonic() < deadline, "node A never waited on the audit chain's lock"
                time.sleep(0.01)
        os.kill(a.process.pid, signal.SIGKILL)  # mid-request: its face may be stored, not acknowledged
        a.process.wait()
        holder.execute("ROLLBACK")
    stop.set()
    thread.join(120)
    assert not thread.is_alive()
    assert cut_off, "no request was in flight when node A was killed"

    listed = _face_ids(b.client("admin"), "load")
    assert len(listed) == len(set(listed))
    assert set(acknowledged) <= set(listed)  # nothing acknowledged is lost
    verified = cluster.regard("audit", "verify", "--json")
    assert verified.returncode == 0 and json.loads(verified.stdout)["ok"], verified.stdout + verified.stderr
    # a node starting now records the killed node's open intent as interrupted, once
    c = cluster.start("node-c")
    assert c.client("admin").describe_collection(CollectionId="load")["FaceCount"] == len(listed)
    records = _audit(cluster)
    intents = [r for r in records if r["kind"] == "intent"]
    closed = [r.get("intent_seq") for r in records if r["kind"] != "intent" and r.get("intent_seq")]
    assert sorted(closed) == sorted(r["seq"] for r in intents)  # every intent has one outcome
