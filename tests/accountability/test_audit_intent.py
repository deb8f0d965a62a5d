"""Issue 15, finding 4: no stored change without an audit record, whenever the process dies.

A state-changing operation appends an ``intent`` record (synced) before it runs and its outcome
record (naming the intent by ``intent_seq``) after. The crash is injected in-process: the log's
append is made to fail for the outcome record right after the store committed (as a full disk or
a kill -9 there would), or the typed call never returns. Opening a guard afterwards records the
outcome as unknown, with the collection's state as found.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from regard.accountability.audit import AuditError, AuditLog
from regard.accountability.guard import Guard
from regard.accountability.request import RequestInfo
from regard.service import Service

from .helpers import ADMIN


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    with Service.open(tmp_path) as svc:
        yield svc


def _guard(tmp_path: Path, service: Service) -> Guard:
    return Guard(tmp_path, service_factory=lambda: service)


def _create_collection(guard: Guard, service: Service, name: str = "people") -> None:
    guard.run(
        "CreateCollection",
        {"CollectionId": name},
        ADMIN,
        RequestInfo(request_id=f"create-{name}"),
        lambda p: service.create_collection(p["CollectionId"]),
    )


def test_a_change_writes_its_intent_before_it_runs_and_its_outcome_after(
    tmp_path: Path, service: Service
) -> None:
    guard = _guard(tmp_path, service)
    _create_collection(guard, service)
    seen_while_running: list[dict[str, Any]] = []

    def create_user(params: dict[str, Any]) -> None:
        seen_while_running.append(list(AuditLog(tmp_path).records())[-1])  # on disk before it runs
        service.create_user(params["CollectionId"], params["UserId"])

    guard.run(
        "CreateUser",
        {"CollectionId": "people", "UserId": "u1"},
        ADMIN,
        RequestInfo(request_id="r-user"),
        create_user,
    )
    guard.run(
        "DescribeCollection",
        {"CollectionId": "people"},
        ADMIN,
        RequestInfo(request_id="r-read"),
        lambda p: service.describe_collection(p["CollectionId"]),
    )
    records = list(AuditLog(tmp_path).records())
    assert [(r["kind"], r["operation"], r["outcome"]) for r in records] == [
        ("intent", "CreateCollection", "pending"),
        ("admin", "CreateCollection", "success"),
        ("intent", "CreateUser", "pending"),
        ("admin", "CreateUser", "success"),
        ("admin", "DescribeCollection", "success"),  # read-only: one record
    ]
    intent, outcome = records[2], records[3]
    assert seen_while_running == [intent]
    assert intent["request_id"] == outcome["request_id"] == "r-user"
    assert intent["parameters"] == outcome["parameters"] == {"UserId": "u1"}
    assert intent["collection"] == outcome["collection"] == "people"
    assert intent["collection_state"]["before"] == outcome["collection_state"]["before"]
    assert outcome["intent_seq"] == intent["seq"] and records[1]["intent_seq"] == records[0]["seq"]
    assert "intent_seq" not in records[4]
    assert AuditLog(tmp_path).verify().ok and AuditLog(tmp_path).orphan_intents() == []


def test_a_change_whose_outcome_record_failed_is_reconciled_when_the_log_is_opened_again(
    tmp_path: Path, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    guard = _guard(tmp_path, service)
    _create_collection(guard, service)
    log = guard.audit
    real_append = log.append

    def append(event: dict[str, Any]) -> dict[str, Any]:
        if event.get("kind") != "intent" and "intent_seq" in event:  # the store has committed
            raise AuditError("injected: the process dies before the outcome is on disk")
        return real_append(event)

    monkeypatch.setattr(log, "append", append)
    with pytest.raises(AuditError, match="injected"):
        guard.run(
            "CreateUser",
            {"CollectionId": "people", "UserId": "never-acknowledged"},
            ADMIN,
            RequestInfo(request_id="r-lost"),
            lambda p: service.create_user(p["CollectionId"], p["UserId"]),
        )
    assert [u.user_id for u in service.list_users("people").users] == ["never-acknowledged"]
    intent = list(AuditLog(tmp_path).records())[-1]
    assert intent["kind"] == "intent" and intent["request_id"] == "r-lost"

    # While its writer lives the intent is in flight, not an orphan: another guard leaves it.
    _guard(tmp_path, service)
    assert list(AuditLog(tmp_path).records())[-1] == intent

    log.close()  # the process ends (a kill -9 releases the writer's lock the same way)
    _guard(tmp_path, service)  # start-up
    reopened = AuditLog(tmp_path)
    record = list(reopened.records())[-1]
    assert record["intent_seq"] == intent["seq"]
    assert (record["operation"], record["request_id"], record["outcome"]) == (
        "CreateUser",
        "r-lost",
        "unknown",
    )
    assert (record["collection"], record["parameters"]) == ("people", {"UserId": "never-acknowledged"})
    assert record["results"] == {"interrupted": True}
    before, found = record["collection_state"]["before"], record["collection_state"]["found"]
    assert (before["user_count"], found["user_count"]) == (0, 1)
    assert (
        found["content_hash"] == service.describe_collection("people").content_hash != before["content_hash"]
    )
    assert reopened.verify().ok and reopened.orphan_intents() == []
    _guard(tmp_path, service)  # reconciled once only
    assert list(AuditLog(tmp_path).records())[-1] == record


class _Killed(BaseException):
    """The process dying inside the typed call: nothing after it runs, not even error handling."""


def test_an_operation_interrupted_before_it_changed_anything_says_so(
    tmp_path: Path, service: Service
) -> None:
    guard = _guard(tmp_path, service)
    _create_collection(guard, service)

    def killed(params: dict[str, Any]) -> None:
        raise _Killed

    with pytest.raises(_Killed):
        guard.run(
            "DeleteCollection", {"CollectionId": "people"}, ADMIN, RequestInfo(request_id="r-k"), killed
        )
    guard.audit.close()
    _guard(tmp_path, service)
    record = list(AuditLog(tmp_path).records())[-1]
    assert (record["operation"], record["outcome"]) == ("DeleteCollection", "unknown")
    assert record["collection_state"]["found"] == record["collection_state"]["before"]  # unchanged


def test_a_writer_killed_after_its_intent_is_reconciled_and_its_lock_file_swept(
    tmp_path: Path, service: Service
) -> None:
    """A real process writes an intent and dies at once (``os._exit``: no cleanup, as kill -9)."""
    child = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from regard.accountability.audit import AuditLog\n"
        "log = AuditLog(Path(sys.argv[1]))\n"
        "log.append({'kind': 'intent', 'operation': 'CreateUser', 'request_id': 'r-child',\n"
        "            'collection': 'people', 'parameters': {'UserId': 'u'},\n"
        "            'collection_state': {'before': None}, 'writer': log.writer_token(),\n"
        "            'outcome': 'pending'})\n"
        "os._exit(0)\n"
    )
    live = _guard(tmp_path, service)
    _create_collection(live, service)
    subprocess.run([sys.executable, "-c", child, str(tmp_path)], check=True, timeout=120)
    writers = tmp_path / "audit" / "writers"
    intent = list(AuditLog(tmp_path).records())[-1]
    lock = writers / f"{intent['writer']}.lock"  # left behind by the dead writer
    assert lock.exists()
    _guard(tmp_path, service)
    record = list(AuditLog(tmp_path).records())[-1]
    assert (record["request_id"], record["outcome"]) == ("r-child", "unknown")
    assert record["collection_state"]["found"]["user_count"] == 0
    assert not lock.exists()
    assert (writers / f"{live.audit.writer_token()}.lock").exists()  # a live writer's is kept
