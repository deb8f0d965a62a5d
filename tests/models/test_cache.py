"""The converted-model cache: keyed by source hashes, rebuilt when corrupt, safe across processes."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from regard.models.cache import cached_model, entry_state, is_valid, list_entries, model_file
from waiting import flock_waiters

VERSION = "test-1"


def _payload(source: Path) -> bytes:
    # Deterministic content derived from the source, large enough to make a torn write visible.
    seed = hashlib.sha256(source.read_bytes()).digest()
    return seed * 40_000


def _prepare(source: str, cache_dir: str, log: str, out: str) -> None:
    """One of two preparers (a spawned process). Whoever builds holds the lock until it sees the
    other blocked on it, so the two contend every time, not when a sleep happens to be long enough."""
    src = Path(source)
    model = model_file("demo", [src], version=VERSION, cache_dir=Path(cache_dir))
    lock = model.with_name(model.name + ".lock")

    def build() -> bytes:
        with open(log, "a") as fh:
            fh.write(f"built {os.getpid()}\n")
        deadline = time.monotonic() + 120
        while True:
            waiters = flock_waiters(lock)
            if waiters:
                with open(log, "a") as fh:
                    fh.writelines(f"waiter {pid}\n" for pid in waiters)
                break
            if Path(log).read_text().count("built ") > 1:
                break  # the other one is building too (no lock): let the test see two builds
            if time.monotonic() > deadline:
                raise RuntimeError("the other preparer never blocked on the lock")
            time.sleep(0.01)
        return _payload(src)

    path = cached_model("demo", [src], build, version=VERSION, cache_dir=Path(cache_dir))
    Path(out).write_text(str(path))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "weights.dat"
    src.write_bytes(b"pretend weights " * 100)
    return src


def test_builds_once_and_reuses(tmp_path: Path, source: Path) -> None:
    calls: list[int] = []

    def build() -> bytes:
        calls.append(1)
        return _payload(source)

    cache = tmp_path / "cache"
    first = cached_model("demo", [source], build, version=VERSION, cache_dir=cache)
    second = cached_model("demo", [source], build, version=VERSION, cache_dir=cache)
    assert first == second
    assert first.parent == cache / "models"
    assert first.name.startswith("demo-") and first.name.endswith(".onnx")
    assert first.read_bytes() == _payload(source)
    assert len(calls) == 1
    assert is_valid(first)
    assert entry_state("demo", [source], version=VERSION, cache_dir=cache) == "valid"
    [entry] = list_entries(cache)
    assert (entry.name, entry.path, entry.state) == ("demo", first, "valid")


def test_two_processes_end_with_one_valid_model(tmp_path: Path, source: Path) -> None:
    cache = tmp_path / "cache"
    log = tmp_path / "builds.log"
    if not Path("/proc/locks").exists():
        pytest.skip("needs Linux /proc/locks to see a process blocked in flock")
    ctx = multiprocessing.get_context("spawn")  # no fork of a process that may run other threads
    outs = [tmp_path / f"out{i}.txt" for i in range(2)]
    procs = [ctx.Process(target=_prepare, args=(str(source), str(cache), str(log), str(out))) for out in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    paths = {o.read_text() for o in outs}
    assert len(paths) == 1
    path = Path(paths.pop())
    events = [tuple(line.split()) for line in log.read_text().splitlines()]
    pids = {str(p.pid) for p in procs}
    builders = [pid for what, pid in events if what == "built"]
    assert len(builders) == 1 and builders[0] in pids, events
    # while one built, the other was blocked on the lock: they contended, and the second did not build
    assert [pid for what, pid in events if what == "waiter"] == list(pids - set(builders)), events
    assert path.read_bytes() == _payload(source)
    assert is_valid(path)
    # No temporary files left behind; only the model, its hash sidecar and the lock file.
    names = sorted(p.name for p in (cache / "models").iterdir())
    assert names == sorted([path.name, path.name + ".sha256", path.name + ".lock"])


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete_sidecar"])
def test_corrupt_file_is_detected_and_rebuilt(tmp_path: Path, source: Path, damage: str) -> None:
    cache = tmp_path / "cache"
    calls: list[int] = []

    def build() -> bytes:
        calls.append(1)
        return _payload(source)

    path = cached_model("demo", [source], build, version=VERSION, cache_dir=cache)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    else:
        path.with_name(path.name + ".sha256").unlink()
    assert not is_valid(path)
    assert entry_state("demo", [source], version=VERSION, cache_dir=cache) == "corrupt"
    assert [e.state for e in list_entries(cache)] == ["corrupt"]
    again = cached_model("demo", [source], build, version=VERSION, cache_dir=cache)
    assert again == path
    assert again.read_bytes() == _payload(source)
    assert is_valid(again)
    assert len(calls) == 2


def test_changed_source_or_version_rebuilds(tmp_path: Path, source: Path) -> None:
    cache = tmp_path / "cache"
    first = cached_model("demo", [source], lambda: _payload(source), version=VERSION, cache_dir=cache)
    # A different size, so the change shows whatever the clock: source hashes are memoised per
    # (path, size, mtime), and two writes can share an mtime tick.
    source.write_bytes(b"new weights " * 100)
    assert source.stat().st_size != len(b"pretend weights " * 100)
    assert entry_state("demo", [source], version=VERSION, cache_dir=cache) == "missing"
    second = cached_model("demo", [source], lambda: _payload(source), version=VERSION, cache_dir=cache)
    assert second != first
    assert second.read_bytes() == _payload(source)
    third = cached_model("demo", [source], lambda: b"v2", version="test-2", cache_dir=cache)
    assert third not in (first, second)
    assert model_file("demo", [source], version="test-2", cache_dir=cache) == third
    assert len(list_entries(cache)) == 3
