"""Durability and concurrency, for real: kill -9 mid-write, threads and processes writing at once."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from regard.service import Service
from regard.store.sqlite import SqliteStore
from regard.types import ModelIdentity
from store.synthetic import new_faces, people

WORKER = Path(__file__).with_name("worker.py")


def _target(service: Service, tmp_path: Path) -> str:
    url = getattr(service.store, "url", None)
    return str(url) if url else str(tmp_path / "data")


def _groups(service: Service, collection: str) -> dict[str, int]:
    faces = service.list_faces(collection, max_results=4096).faces
    return dict(collections.Counter(f.image_id for f in faces))


def _until_inside(proc: subprocess.Popen[str]) -> tuple[list[str], str]:
    """Read a held worker's acknowledgements up to its ``inside`` line: (acked ImageIds, held ImageId)."""
    assert proc.stdout is not None
    acked = []
    while True:
        line = proc.stdout.readline()
        assert line, "the worker died before reaching the batch it holds"
        words = line.split()
        if words[0] == "inside":
            _, image_id, rows = words
            assert int(rows) > 0, "the held transaction does not see its own batch"
            return acked, image_id
        acked.append(words[0])


@pytest.mark.slow
def test_acknowledged_faces_survive_kill_9_and_batches_are_atomic(service: Service, tmp_path: Path) -> None:
    """kill -9 a writer inside a batch's transaction (it says so before waiting there), four times.

    Each worker holds batch ``3 + 4 * round + 1`` open after writing all 40 of its rows and before
    COMMIT, and reports it; only then is it killed. So the kill lands mid-batch every time, not by
    chance. This shows a process crash, where the page cache survives; power loss is another
    matter (docs/testing.md).
    """
    service.create_collection("c")
    target = _target(service, tmp_path)
    acked: list[str] = []
    killed_inside: list[str] = []
    for round_ in range(4):
        hold_at = 3 + 4 * round_ + 1
        with subprocess.Popen(
            [sys.executable, str(WORKER), target, "c", "1000", "40", str(round_), str(hold_at)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as proc:
            done, held = _until_inside(proc)
            assert len(done) == hold_at - 1
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.stdout is not None
            after_kill = proc.stdout.read()
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        assert after_kill == ""  # it never got past the held batch
        acked.extend(done)
        killed_inside.append(held)
    groups = _groups(service, "c")
    # The workers were stopped between acknowledgements, so what is stored is exactly what they
    # acknowledged: every acknowledged batch, whole, and none of the four killed mid-way.
    assert set(groups) == set(acked)
    assert not set(killed_inside) & set(groups)
    assert set(groups.values()) == {40}  # every batch all or nothing
    d = service.describe_collection("c")
    assert d.face_count == 40 * len(groups) == 40 * len(acked)
    # The index catches up with what the killed writers committed.
    some = service.list_faces("c", max_results=1).faces[0]
    hit = service.search_faces_by_vector("c", some.embedding, max_faces=1)
    assert hit[0].face.face_id == some.face_id


def test_sqlite_store_runs_with_the_durability_settings_it_documents(tmp_path: Path) -> None:
    """What makes an acknowledged ``add_faces`` durable in SQLite, read back from the store's connections.

    In WAL mode with ``synchronous = FULL`` SQLite syncs the WAL at every COMMIT, before
    ``add_faces`` returns. A kill -9 test cannot tell (the page cache survives a process crash),
    so these settings are checked where they take effect: on the connection ``add_faces`` itself
    used, and on a connection opened by another thread (each thread has its own).
    """
    store = SqliteStore(tmp_path / "data")
    try:
        store.create_collection("c", "arn:c", ModelIdentity("test-model", "1", "0" * 64, "none"), {})
        store.add_faces("c", new_faces(people(2, 1, seed=1)))
        expected = {"journal_mode": "wal", "synchronous": 2, "foreign_keys": 1, "secure_delete": 1}  # 2: FULL

        def settings() -> dict[str, object]:
            conn = store._conn()
            return {name: conn.execute(f"PRAGMA {name}").fetchone()[0] for name in expected}

        assert settings() == expected
        seen: list[dict[str, object]] = []
        other = threading.Thread(target=lambda: seen.append(settings()))
        other.start()
        other.join()
        assert seen == [expected]
    finally:
        store.close()


@pytest.mark.slow
def test_concurrent_thread_writers_and_readers(service: Service) -> None:
    service.create_collection("c")
    errors: list[BaseException] = []
    done = threading.Event()
    writers_n, batches, per_batch = 4, 8, 5

    def writer(seed: int) -> None:
        try:
            vectors = people(batches * per_batch, 1, seed=100 + seed)
            for b in range(batches):
                service.add_templates("c", new_faces(vectors[b * per_batch : (b + 1) * per_batch]))
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            while not done.is_set():
                groups = _groups(service, "c")
                assert all(n == per_batch for n in groups.values()), groups
                for f in service.list_faces("c", max_results=3).faces:
                    for m in service.search_faces_by_vector("c", f.embedding, max_faces=2):
                        assert m.face.embedding.shape == (128,)
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(2)]
    writers = [threading.Thread(target=writer, args=(i,)) for i in range(writers_n)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    for t in readers:
        t.join()
    assert errors == []
    assert service.describe_collection("c").face_count == writers_n * batches * per_batch
    assert set(_groups(service, "c").values()) == {per_batch}


@pytest.mark.slow
def test_concurrent_process_writers(open_service: Callable[[], Service], tmp_path: Path) -> None:
    service = open_service()
    service.create_collection("c")
    target = _target(service, tmp_path)
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), target, "c", "10", "6", str(10 + i), *(["5"] if i == 0 else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    # The first worker stops inside its fifth batch, rows written and not committed; this process
    # searches meanwhile and must see whole, committed batches only.
    before, held = _until_inside(procs[0])
    groups = _groups(service, "c")
    assert held not in groups
    assert set(before) <= set(groups)
    assert set(groups.values()) <= {6}
    for f in service.list_faces("c", max_results=3).faces:
        assert all(
            m.face.image_id != held for m in service.search_faces_by_vector("c", f.embedding, max_faces=50)
        )
    assert procs[0].stdin is not None
    procs[0].stdin.write("go\n")
    procs[0].stdin.flush()
    # Then all three write while this process keeps searching.
    while any(p.poll() is None for p in procs):
        assert set(_groups(service, "c").values()) <= {6}
    outs = []
    for p in procs:
        out, _ = p.communicate()
        assert p.returncode == 0
        outs.append(out.split())
    assert len(outs[1]) == len(outs[2]) == 10
    assert len(before) + len(outs[0]) == 10 and outs[0][0] == held
    assert service.describe_collection("c").face_count == 180
    assert set(_groups(service, "c").values()) == {6}
    fresh = open_service()
    some = fresh.list_faces("c", max_results=1).faces[0]
    assert fresh.search_faces_by_vector("c", some.embedding, max_faces=1)[0].face.face_id == some.face_id
