"""Waiting for events a test caused, never for an amount of time."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


def wait_for(predicate: Callable[[], bool], what: str, limit: float = 120.0) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after a generous ``limit``."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def flock_waiters(path: Path) -> list[int]:
    """PIDs blocked right now in ``flock`` on ``path`` (Linux ``/proc/locks``: the ``->`` lines)."""
    inode = os.stat(path).st_ino
    pids = []
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()  # "2: -> FLOCK ADVISORY WRITE <pid> <major>:<minor>:<inode> 0 EOF"
        if len(fields) > 6 and fields[1:3] == ["->", "FLOCK"] and fields[6].rsplit(":", 1)[-1] == str(inode):
            pids.append(int(fields[5]))
    return pids
