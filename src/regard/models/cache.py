"""A cache of converted (ONNX) models, keyed by the hashes of the files they were built from.

Each entry is ``<cache_dir>/models/<name>-<key[:16]>.onnx`` where ``key`` is the SHA-256 over the
converter's ``version`` and each source file's SHA-256, so a new source file or a new converter
builds a new entry. Next to it, ``<file>.sha256`` holds the SHA-256 of the file's content; an entry
whose content does not match (truncated, corrupted) is rebuilt.

Building happens under an exclusive inter-process lock (``fcntl.flock`` on ``<file>.lock``), into a
temporary file that is then ``os.replace``'d, so concurrent preparers end with one valid file and
readers never see a partial one.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from regard.config import Settings
from regard.errors import ModelUnavailable
from regard.models.packaged import file_sha256

SUFFIX = ".onnx"


def models_dir(cache_dir: Path | None = None) -> Path:
    """The folder holding converted models."""
    base = cache_dir if cache_dir is not None else Settings.from_env().cache_dir
    return base / "models"


def cache_key(sources: Sequence[Path], version: str) -> str:
    """SHA-256 (hex) over ``version`` and each source file's SHA-256, in order."""
    digest = hashlib.sha256()
    digest.update(version.encode("utf-8"))
    for src in sources:
        digest.update(b"\0")
        digest.update(file_sha256(Path(src)).encode("ascii"))
    return digest.hexdigest()


def model_file(name: str, sources: Sequence[Path], *, version: str, cache_dir: Path | None = None) -> Path:
    """Where the converted model for these sources lives (whether or not it exists yet)."""
    return models_dir(cache_dir) / f"{name}-{cache_key(sources, version)[:16]}{SUFFIX}"


def _content_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def is_valid(path: Path) -> bool:
    """True when ``path`` and its sidecar exist and the content hash matches."""
    side = _sidecar(path)
    try:
        expected = side.read_text(encoding="ascii").strip()
        return bool(expected) and _content_sha256(path) == expected
    except (OSError, UnicodeDecodeError):
        return False


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    lock = path.with_name(path.name + ".lock")
    with open(lock, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def cached_model(
    name: str,
    sources: Sequence[Path],
    build: Callable[[], bytes],
    *,
    version: str,
    cache_dir: Path | None = None,
) -> Path:
    """Path of a valid converted model, calling ``build()`` (under a lock) when it is missing or bad.

    ``build`` returns the serialized model. Raises :class:`ModelUnavailable` when the cache folder
    cannot be written.
    """
    path = model_file(name, sources, version=version, cache_dir=cache_dir)
    if is_valid(path):
        return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path):
            if is_valid(path):  # another process built it while we waited
                return path
            data = build()
            _write_atomic(path, data)
            _write_atomic(_sidecar(path), (hashlib.sha256(data).hexdigest() + "\n").encode("ascii"))
    except OSError as exc:
        raise ModelUnavailable(f"cannot write converted model {path}: {exc}") from exc
    return path


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One file in the model cache and its state."""

    name: str
    path: Path
    size: int
    state: str  # "valid" or "corrupt"


def list_entries(cache_dir: Path | None = None) -> list[CacheEntry]:
    """Every converted model in the cache, with its state ("valid" or "corrupt")."""
    folder = models_dir(cache_dir)
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        stem = path.name[: -len(SUFFIX)]
        name = stem.rsplit("-", 1)[0]
        state = "valid" if is_valid(path) else "corrupt"
        out.append(CacheEntry(name, path, path.stat().st_size, state))
    return out


def entry_state(name: str, sources: Sequence[Path], *, version: str, cache_dir: Path | None = None) -> str:
    """ "valid", "corrupt" or "missing" for the entry these sources would map to."""
    path = model_file(name, sources, version=version, cache_dir=cache_dir)
    if not path.exists():
        return "missing"
    return "valid" if is_valid(path) else "corrupt"
