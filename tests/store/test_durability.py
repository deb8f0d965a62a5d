"""Durability and concurrency, for real: kill -9 mid-write, threads and processes writing at once."""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from regard.service import Service
from store.synthetic import new_faces, people

WORKER = Path(__file__).with_name("worker.py")


def _target(service: Service, tmp_path: Path) -> str:
    url = getattr(service.store, "url", None)
    return str(url) if url else str(tmp_path / "data")


def _groups(service: Service, collection: str) -> dict[str, int]:
    faces = service.list_faces(collection, max_results=4096).faces
    return dict(collections.Counter(f.image_id for f in faces))


@pytest.mark.slow
def test_acknowledged_faces_survive_kill_9_and_batches_are_atomic(service: Service, tmp_path: Path) -> None:
    service.create_collection("c")
    target = _target(service, tmp_path)
    acked: list[str] = []
    rng = random.Random(7)
    for round_ in range(4):
        with subprocess.Popen(
            [sys.executable, str(WORKER), target, "c", "1000", "40", str(round_)],
            stdout=subprocess.PIPE,
            text=True,
        ) as proc:
            assert proc.stdout is not None
            wanted = 3 + 4 * round_
            while wanted:
                line = proc.stdout.readline()
                assert line, "the worker died before acknowledging"
                acked.append(line.strip())
                wanted -= 1
            threading.Event().wait(rng.uniform(0.0, 0.05))  # land somewhere inside a later batch
            os.kill(proc.pid, signal.SIGKILL)
            acked.extend(line.strip() for line in proc.stdout if line.strip())
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
    groups = _groups(service, "c")
    assert set(acked) <= set(groups)
    assert set(groups.values()) == {40}  # every batch all or nothing
    d = service.describe_collection("c")
    assert d.face_count == 40 * len(groups)
    # The index catches up with what the killed writers committed.
    some = service.list_faces("c", max_results=1).faces[0]
    hit = service.search_faces_by_vector("c", some.embedding, max_faces=1)
    assert hit[0].face.face_id == some.face_id


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
            [sys.executable, str(WORKER), target, "c", "10", "6", str(10 + i)], stdout=subprocess.PIPE
        )
        for i in range(3)
    ]
    # Meanwhile this process searches; it must see whole batches only.
    while any(p.poll() is None for p in procs):
        assert set(_groups(service, "c").values()) <= {6}
    for p in procs:
        out, _ = p.communicate()
        assert p.returncode == 0
        assert len(out.split()) == 10
    assert service.describe_collection("c").face_count == 180
    assert set(_groups(service, "c").values()) == {6}
    fresh = open_service()
    some = fresh.list_faces("c", max_results=1).faces[0]
    assert fresh.search_faces_by_vector("c", some.embedding, max_faces=1)[0].face.face_id == some.face_id
