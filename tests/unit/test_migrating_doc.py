"""Issue 19, item 14: docs/migrating.md carries the tables bench/bench_thresholds.py makes."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import bench_thresholds  # noqa: E402


def _section() -> str:
    doc = (ROOT / "docs" / "migrating.md").read_text()
    found = re.search(
        re.escape(bench_thresholds.BEGIN) + "(.*?)" + re.escape(bench_thresholds.END), doc, re.S
    )
    assert found, "docs/migrating.md lacks the bench_thresholds section"
    return found[1]


def test_the_threshold_table_comes_from_the_script() -> None:
    section = _section()
    assert "Made by `bench/bench_thresholds.py`" in section
    for t in bench_thresholds.THRESHOLDS:
        assert re.search(rf"^\| {t:g} \| [0-9.e-]+ \| [0-9.e-]+ \[", section, re.M), t


def test_the_floors_table_matches_the_default_policy() -> None:
    """The floors need no dataset: the script's table must be the one in the document."""
    assert "\n".join(bench_thresholds.floors_table()) in _section()
