"""The converted-model cache: keyed by source hashes, rebuilt when corrupt, safe across processes."""

from __future__ import annotations

import hashlib
import multiprocessing
import time
from pathlib import Path

import pytest

from regard.models.cache import cached_model, entry_state, is_valid, list_entries, model_file

VERSION = "test-1"


def _payload(source: Path) -> bytes:
    # Deterministic content derived from the source, large enough to make a torn write visible.
    seed = hashlib.sha256(source.read_bytes()).digest()
    return seed * 40_000


def _prepare(source: str, cache_dir: str, log: str, out: str) -> None:
    src = Path(source)

    def build() -> bytes:
        with open(log, "a") as fh:
            fh.write("built\n")
        time.sleep(0.5)  # hold the lock long enough for the other process to contend
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
    ctx = multiprocessing.get_context("fork")
    outs = [tmp_path / f"out{i}.txt" for i in range(2)]
    procs = [ctx.Process(target=_prepare, args=(str(source), str(cache), str(log), str(out))) for out in outs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    paths = {o.read_text() for o in outs}
    assert len(paths) == 1
    path = Path(paths.pop())
    assert log.read_text().count("built") == 1
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
    time.sleep(0.01)
    source.write_bytes(b"new weights " * 100)
    assert entry_state("demo", [source], version=VERSION, cache_dir=cache) == "missing"
    second = cached_model("demo", [source], lambda: _payload(source), version=VERSION, cache_dir=cache)
    assert second != first
    assert second.read_bytes() == _payload(source)
    third = cached_model("demo", [source], lambda: b"v2", version="test-2", cache_dir=cache)
    assert third not in (first, second)
    assert model_file("demo", [source], version="test-2", cache_dir=cache) == third
    assert len(list_entries(cache)) == 3
