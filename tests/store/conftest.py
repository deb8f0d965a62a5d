"""Fixtures for the collection store suite: both backends, synthetic templates (the PostgreSQL
server and its fresh databases, ``pg_server`` and ``pg_url``, are in the top-level conftest)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

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
