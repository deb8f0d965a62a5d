"""The audit log: chained, verifiable, tamper-evident, durable, serialised across processes."""

from __future__ import annotations

import io
import itertools
import json
import multiprocessing
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from regard.accountability.audit import GENESIS, AuditLog, canonical, export_text, parse_time, record_hash
from regard.errors import AccessDenied


def _event(i: int) -> dict[str, object]:
    return {
        "kind": "biometric",
        "request_id": f"req-{i}",
        "access_key_id": "RGK0000000000000001",
        "principal": "alice",
        "operation": "SearchFacesByImage",
        "collection": "watchlist",
        "purpose": "test ü",
        "parameters": {"FaceMatchThreshold": 90.0, "MaxFaces": 3},
        "results": {"matches": [{"face_id": f"f{i}", "similarity": 91.5, "fmr": 3.2e-5}]},
        "outcome": "success",
    }


@dataclass(frozen=True)
class Sync:
    """One ``os.fsync``/``os.fdatasync``: the inode, and what it held when the sync was asked for."""

    inode: int
    content: bytes | None  # a file's bytes
    entries: dict[str, int] | None  # a directory's names and their inodes


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> list[Sync]:
    """Every sync this process asks for, in order, with a snapshot of what it makes durable.

    kill -9 keeps the page cache, so a crash test passes with every sync removed; this seam shows
    what is synced and when, in-process (``os`` is patched for this test only). Linux: a file is
    re-read through ``/proc/self/fd`` (the descriptor may be write-only).
    """
    seen: list[Sync] = []

    def wrap(real: Callable[[int], None]) -> Callable[[int], None]:
        def sync(fd: int) -> None:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                names = os.listdir(fd)
                inodes = {n: os.stat(n, dir_fd=fd, follow_symlinks=False).st_ino for n in names}
                seen.append(Sync(info.st_ino, None, inodes))
            else:
                with open(f"/proc/self/fd/{fd}", "rb") as f:
                    seen.append(Sync(info.st_ino, f.read(), None))
            real(fd)

        return sync

    monkeypatch.setattr(os, "fsync", wrap(os.fsync))
    monkeypatch.setattr(os, "fdatasync", wrap(os.fdatasync))
    return seen


def _synced_file(syncs: list[Sync], path: Path, content: bytes) -> int:
    """Index of the first sync of ``path``'s inode while it held exactly ``content``, else -1."""
    inode = path.stat().st_ino
    return next((i for i, s in enumerate(syncs) if s.inode == inode and s.content == content), -1)


def _synced_entry(syncs: list[Sync], path: Path) -> int:
    """Index of the first sync of ``path``'s directory while it named ``path``'s current inode, else -1."""
    folder, inode = path.parent.stat().st_ino, path.stat().st_ino
    return next(
        (i for i, s in enumerate(syncs) if s.inode == folder and (s.entries or {}).get(path.name) == inode),
        -1,
    )


def test_records_are_chained_and_verify(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    recs = [log.append(_event(i)) for i in range(5)]
    assert [r["seq"] for r in recs] == [1, 2, 3, 4, 5]
    assert recs[0]["prev_hash"] == GENESIS
    for a, b in itertools.pairwise(recs):
        assert b["prev_hash"] == a["hash"]
    assert all(r["hash"] == record_hash(r) for r in recs)
    result = log.verify()
    assert result.ok and result.records == 5 and result.head_hash == recs[-1]["hash"]
    assert log.head() == (5, recs[-1]["hash"])
    on_disk = [json.loads(line) for line in log.path.read_text(encoding="utf-8").splitlines()]
    assert on_disk == recs


def test_flipping_any_byte_breaks_verification_at_that_record(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    for i in range(3):
        log.append(_event(i))
    original = log.path.read_bytes()
    line_of = []
    line = 1
    for b in original:
        line_of.append(line)
        if b == ord("\n"):
            line += 1
    for pos in range(len(original)):
        mask = 0x01 if pos % 2 else 0x80  # low and high bit flips, alternately
        data = bytearray(original)
        data[pos] ^= mask
        log.path.write_bytes(bytes(data))
        result = log.verify()
        assert not result.ok, f"flip of byte {pos} with {mask:#x} went unnoticed"
        # the named record is the one holding the byte (or, for its newline, that one)
        assert result.broken_seq == line_of[pos], (pos, result)
    log.path.write_bytes(original)
    assert log.verify().ok


def test_deleting_or_reordering_records_is_detected(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    for i in range(4):
        log.append(_event(i))
    lines = log.path.read_bytes().splitlines(keepends=True)
    log.path.write_bytes(b"".join(lines[:1] + lines[2:]))
    result = log.verify()
    assert not result.ok and result.broken_seq == 2
    log.path.write_bytes(b"".join([lines[1], lines[0], *lines[2:]]))
    assert log.verify().broken_seq == 1


def test_templates_and_image_bytes_are_refused(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    with pytest.raises(TypeError):
        log.append({"operation": "x", "results": {"template": np.zeros(128, np.float32)}})
    with pytest.raises(TypeError):
        log.append({"operation": "x", "parameters": {"Image": b"\xff\xd8\xff"}})
    assert not log.path.exists() or log.path.read_bytes() == b""


def test_each_append_is_synced_with_its_record_before_it_returns(tmp_path: Path, syncs: list[Sync]) -> None:
    log = AuditLog(tmp_path)
    for i in range(3):
        syncs.clear()
        rec = log.append(_event(i))
        on_disk = log.path.read_bytes()  # what append leaves, read the moment it returns
        assert on_disk.endswith((canonical(rec) + "\n").encode("utf-8"))
        # the log's own inode was synced, holding this record, before append returned
        assert _synced_file(syncs, log.path, on_disk) >= 0, (
            f"record {rec['seq']} was not synced before append returned"
        )


def test_opening_a_log_syncs_the_directory_entries_that_name_it(tmp_path: Path, syncs: list[Sync]) -> None:
    log = AuditLog(tmp_path / "data")  # creates data/, data/audit/ and data/audit/audit.jsonl
    assert _synced_entry(syncs, log.path) >= 0, "the log's directory entry was not synced"
    assert _synced_entry(syncs, log.dir) >= 0, "the audit folder's directory entry was not synced"
    assert _synced_entry(syncs, tmp_path / "data") >= 0
    # a second process opening the log syncs its entry too (the creator may not have yet)
    syncs.clear()
    AuditLog(tmp_path / "data")
    assert _synced_entry(syncs, log.path) >= 0


def test_pruning_syncs_new_files_before_the_rename_and_the_folder_after(
    tmp_path: Path, syncs: list[Sync]
) -> None:
    log = AuditLog(tmp_path)
    recs = [log.append(_event(i)) for i in range(4)]
    kept = b"".join(log.path.read_bytes().splitlines(keepends=True)[2:])
    syncs.clear()
    later = datetime.now(UTC) + timedelta(days=400)
    assert log.prune(parse_time(recs[2]["time"]), actor="ops", now=later) == 2
    assert log.verify().ok
    # the new log (kept records, before the AuditPrune record) and the new anchor were synced...
    new_log = _synced_file(syncs, log.path, kept)
    new_anchor = _synced_file(syncs, log.anchor_path, log.anchor_path.read_bytes())
    assert new_log >= 0 and new_anchor >= 0, "a new file was renamed into place unsynced"
    # ...before the folder was synced naming both under their new inodes (so after the renames)
    log_named, anchor_named = _synced_entry(syncs, log.path), _synced_entry(syncs, log.anchor_path)
    assert log_named >= 0 and anchor_named >= 0, "the renames were not synced"
    assert new_log < log_named and new_anchor < anchor_named
    # and the AuditPrune record was synced before prune returned
    assert _synced_file(syncs, log.path, log.path.read_bytes()) >= 0


def test_torn_tail_is_cut_and_the_repair_is_recorded(tmp_path: Path, syncs: list[Sync]) -> None:
    log = AuditLog(tmp_path)
    log.append(_event(0))
    with log.path.open("ab") as f:
        f.write(b'{"kind":"biometric","seq":2,"tru')  # a write cut short by a crash
    broken = log.verify()
    assert not broken.ok and broken.broken_seq == 2
    syncs.clear()
    rec = log.append(_event(1))
    assert rec["seq"] == 3
    assert _synced_file(syncs, log.path, log.path.read_bytes()) >= 0  # cut, repair and record synced
    records = list(log.records())
    assert records[1]["operation"] == "AuditLogRepair"
    assert records[1]["results"]["torn_bytes"] == len(b'{"kind":"biometric","seq":2,"tru')
    assert log.verify().ok


def _writer(data_dir: str, worker: int, n: int) -> None:
    """One of several writer processes (spawned: the target is importable, its arguments picklable)."""
    log = AuditLog(Path(data_dir))
    for i in range(n):
        log.append({"operation": "DetectFaces", "request_id": f"{worker}-{i}", "outcome": "success"})


def test_appends_from_several_processes_keep_one_chain(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")  # not fork: the parent may run other threads
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0
    log = AuditLog(tmp_path)
    result = log.verify()
    assert result.ok and result.records == 160
    ids = {r["request_id"] for r in log.records()}
    assert ids == {f"{w}-{i}" for w in range(4) for i in range(40)}


def test_export_jsonl_and_csv_with_time_window(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    recs = [log.append(_event(i)) for i in range(3)]
    everything = export_text(log)
    assert [json.loads(x)["seq"] for x in everything.splitlines()] == [1, 2, 3]

    buf = io.StringIO()
    since = datetime.fromisoformat(recs[1]["time"].replace("Z", "+00:00"))
    assert log.export(buf, since=since, fmt="csv") == 2
    rows = buf.getvalue().splitlines()
    assert rows[0].startswith("seq,time,kind,request_id")
    assert rows[1].startswith("2,") and rows[2].startswith("3,")
    buf = io.StringIO()
    assert log.export(buf, until=since, fmt="jsonl") == 1


def test_retention_floor_refuses_young_deletions_and_keeps_the_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, retention_floor_days=183)
    for i in range(4):
        log.append(_event(i))
    now = datetime.now(UTC)
    with pytest.raises(AccessDenied):
        log.prune(now - timedelta(days=30), actor="ops")
    assert log.verify().records == 4
    # a year from now every record is past the floor: pruning works and the chain still verifies
    later = now + timedelta(days=400)
    pruned = log.prune(now + timedelta(days=1), actor="ops", now=later)
    assert pruned == 4
    result = log.verify()
    assert result.ok and result.records == 1
    (only,) = list(log.records())
    assert only["operation"] == "AuditPrune" and only["seq"] == 5
