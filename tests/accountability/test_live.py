"""Accountability through a live ``regard serve``: headers, review endpoints, kill -9 durability."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from live_server import KeyedServer, start_keyed
from regard.accountability.audit import LOCK_NAME, AuditLog
from waiting import flock_waiters

from .helpers import open_gate

BIN = Path(sys.executable).parent
CASE_HEADERS = {"x-regard-purpose": "locate a missing person", "x-regard-case-reference": "CASE-7"}
PROVENANCE_HEADERS = {"x-regard-source": "photo handed in by the family", "x-regard-legal-basis": "consent"}


def _start(data_dir: Path) -> KeyedServer:
    return start_keyed(
        data_dir,
        {
            "admin": ("admin", "admin"),
            "investigator": ("operator", "identification"),
            "vera": ("verifier", "identification"),
            "victor": ("verifier", "identification"),
        },
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[KeyedServer]:
    s = _start(tmp_path)
    yield s
    s.stop()


@pytest.mark.slow
def test_identification_over_http_floor_leads_and_two_verifiers(
    server: KeyedServer, photos: dict[str, bytes], fr_images: Path
) -> None:
    open_gate(server.data_dir, ["watch"], fr_images)  # an approved human-rights impact assessment
    admin = server.client("admin")
    admin.create_collection(CollectionId="watch")
    bare = server.client("investigator")
    with pytest.raises(bare.exceptions.AccessDeniedException):
        bare.index_faces(CollectionId="watch", Image={"Bytes": photos["obama"]})  # no provenance, no purpose
    inv = server.client("investigator", {**CASE_HEADERS, **PROVENANCE_HEADERS})
    face_id = inv.index_faces(CollectionId="watch", Image={"Bytes": photos["obama"]})["FaceRecords"][0][
        "Face"
    ]["FaceId"]
    with pytest.raises(bare.exceptions.AccessDeniedException):
        bare.search_faces_by_image(CollectionId="watch", Image={"Bytes": photos["obama2"]})  # no purpose
    found = inv.search_faces_by_image(CollectionId="watch", Image={"Bytes": photos["obama2"]})
    assert [m["Face"]["FaceId"] for m in found["FaceMatches"]] == [face_id]
    headers = found["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-regard-review"] == "PENDING_VERIFICATION"
    assert float(headers["x-regard-effective-threshold"]) == 80.0
    seq = int(headers["x-regard-audit-seq"])

    status, body = server.signed("vera", "GET", "/regard/review/leads")
    assert status == 200
    (lead,) = body["Leads"]
    assert lead["FaceId"] == face_id and lead["CaseReference"] == "CASE-7"
    path = f"/regard/review/leads/{lead['LeadId']}/confirm"
    status, body = server.signed("investigator", "POST", path, {})
    assert status == 400 and body["__type"] == "AccessDeniedException"
    status, body = server.signed("vera", "POST", path, {"Note": "same ears"})
    assert status == 200 and body["Status"] == "PENDING_VERIFICATION"
    status, body = server.signed("vera", "POST", path, {})
    assert status == 400 and "already reviewed" in body["message"]
    status, body = server.signed("victor", "POST", path, {})
    assert status == 200 and body["Status"] == "CONFIRMED"
    status, body = server.signed("victor", "GET", "/regard/review/leads?status=CONFIRMED")
    assert [x["LeadId"] for x in body["Leads"]] == [lead["LeadId"]]

    records = list(AuditLog(server.data_dir).records())
    search = next(r for r in records if r["seq"] == seq)
    assert search["operation"] == "SearchFacesByImage" and search["case_reference"] == "CASE-7"
    assert search["results"]["matches"][0]["lead_id"] == lead["LeadId"]
    assert [r["outcome"] for r in records if r["operation"] == "ReviewConfirm"] == [
        "error",
        "success",
        "error",
        "success",
    ]
    # a policy change reaches the running server: a tight rate limit throttles the next calls
    from regard.accountability.policy import PolicyStore

    PolicyStore(server.data_dir).set("identification", "rate_per_second", "0.001")
    PolicyStore(server.data_dir).set("identification", "burst", "1")
    with pytest.raises(bare.exceptions.ThrottlingException):
        for _ in range(3):
            bare.describe_collection(CollectionId="watch")
    # unauthenticated requests are refused and logged
    req = urllib.request.Request(server.endpoint + "/", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=30)
    refused.value.close()
    assert AuditLog(server.data_dir).verify().ok
    assert list(AuditLog(server.data_dir).records())[-1]["kind"] == "access"


@pytest.mark.slow
def test_audit_log_survives_kill_9_with_every_acknowledged_operation(
    server: KeyedServer, photos: dict[str, bytes]
) -> None:
    """kill -9 a server that four clients keep busy, while it is inside a request, not by luck.

    Once 40 operations are acknowledged the test takes the audit log's lock itself: the server's
    next append blocks there, its operation done and its response not sent. When ``/proc/locks``
    shows the server blocked on that lock, it is killed. So the kill lands mid-request every
    time; what this shows is a process crash (the page cache survives it), not power loss
    (docs/testing.md; the syncs themselves are pinned in test_audit.py).
    """
    if not Path("/proc/locks").exists():
        pytest.skip("needs Linux /proc/locks to see the server blocked on the audit lock")
    admin = server.client("admin")
    admin.create_collection(CollectionId="load")
    acknowledged: list[str] = []
    cut_off: list[str] = []  # requests a worker had sent when the server died
    lock = threading.Lock()
    stop = threading.Event()

    def worker(n: int) -> None:
        client = server.client("admin")
        i = 0
        while not stop.is_set():
            i += 1
            try:
                if i % 3 == 0:
                    r = client.detect_faces(Image={"Bytes": photos["biden"]})
                else:
                    r = client.create_user(CollectionId="load", UserId=f"w{n}-{i}")
            except Exception as exc:  # the server is gone: nothing more is acknowledged
                with lock:
                    cut_off.append(f"worker {n}: {type(exc).__name__}")
                return
            with lock:
                acknowledged.append(r["ResponseMetadata"]["RequestId"])

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while len(acknowledged) < 40:
        assert time.monotonic() < deadline, f"only {len(acknowledged)} operations acknowledged"
        assert all(t.is_alive() for t in threads), cut_off
        time.sleep(0.05)
    audit_lock = server.data_dir / "audit" / LOCK_NAME
    fd = os.open(audit_lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the server's next append waits for this
        deadline = time.monotonic() + 120
        while server.process.pid not in flock_waiters(audit_lock):
            assert time.monotonic() < deadline, "the server never blocked on the audit lock"
            time.sleep(0.01)
        os.kill(server.process.pid, signal.SIGKILL)  # mid-request: blocked before its audit record
        server.process.wait()
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    stop.set()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert len(acknowledged) >= 40
    assert cut_off, "no request was in flight when the server was killed"

    log = AuditLog(server.data_dir)
    check = log.verify()
    assert check.ok, check.describe()  # nobody could be writing: the test held the lock
    logged = {r.get("request_id") for r in log.records()}
    missing = [rid for rid in acknowledged if rid not in logged]
    assert missing == [], f"{len(missing)} acknowledged operations are not in the audit log"
    outcomes = [
        r for r in log.records() if r["kind"] != "intent" and r.get("request_id") in set(acknowledged)
    ]
    assert all(r["outcome"] == "success" for r in outcomes)

    # Each state-changing request had its intent on disk before it ran: opening a guard records an
    # outcome (unknown: interrupted) for every intent the killed server left open.
    from regard.accountability.guard import Guard

    Guard(server.data_dir)
    closed = {r.get("intent_seq") for r in log.records() if r["kind"] != "intent"}
    assert all(r["seq"] in closed for r in log.records() if r["kind"] == "intent")
    assert log.orphan_intents() == [] and log.verify().ok


@pytest.mark.slow
def test_erasure_from_the_cli_while_the_server_runs(server: KeyedServer, photos: dict[str, bytes]) -> None:
    admin = server.client("admin")
    admin.create_collection(CollectionId="staff")
    erased = admin.index_faces(CollectionId="staff", Image={"Bytes": photos["obama"]}, ExternalImageId="s-1")
    admin.index_faces(CollectionId="staff", Image={"Bytes": photos["biden"]}, ExternalImageId="s-2")
    face_id = erased["FaceRecords"][0]["Face"]["FaceId"]
    assert admin.search_faces_by_image(CollectionId="staff", Image={"Bytes": photos["obama2"]})["FaceMatches"]
    from regard.service import Service

    with Service.open(server.data_dir) as svc:
        template = svc.list_faces("staff", face_ids=[face_id]).faces[0].embedding.tobytes()
    done = subprocess.run(
        [
            *(str(BIN / "regard"), "erase", "--external-image-id", "s-1", "--yes", "--actor", "dpo"),
            *("--reason", "art. 17", "--data-dir", str(server.data_dir)),
        ],
        capture_output=True,
        env=dict(os.environ, REGARD_DATA_DIR=str(server.data_dir)),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout)["DeletedFaces"] == [face_id]
    # the running server sees the erasure at once
    assert (
        admin.search_faces_by_image(CollectionId="staff", Image={"Bytes": photos["obama2"]})["FaceMatches"]
        == []
    )
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(60)  # graceful shutdown: the store saves its index files
    holders = [p for p in server.data_dir.rglob("*") if p.is_file() and template in p.read_bytes()]
    assert holders == []
    erasures = [r for r in AuditLog(server.data_dir).records() if r["operation"] == "Erase"]
    assert erasures[0]["principal"] == "dpo" and erasures[0]["parameters"]["reason"] == "art. 17"
