"""The readers-writer lock that lets searches of one collection run side by side."""

from __future__ import annotations

import threading
import time

from regard.store.locks import SharedLock

WAIT_S = 5.0


def test_shared_holders_overlap() -> None:
    lock = SharedLock()
    inside = threading.Barrier(2, timeout=WAIT_S)  # both must be inside at once to pass it

    def search() -> None:
        with lock.shared():
            inside.wait()

    threads = [threading.Thread(target=search) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT_S)
    assert not inside.broken and not any(t.is_alive() for t in threads)


class _Watched(threading.Condition):
    """The lock's condition, noting the name of each thread that waits on it (blocked in the lock)."""

    def __init__(self) -> None:
        super().__init__()
        self.waited: set[str] = set()

    def wait(self, timeout: float | None = None) -> bool:
        self.waited.add(threading.current_thread().name)  # called with the condition's lock held
        return super().wait(timeout)

    def has_waited(self, name: str) -> bool:
        with self:
            return name in self.waited


def _until_waiting(cond: _Watched, thread: threading.Thread) -> None:
    """Return once ``thread`` is blocked in the lock; fail if it finishes (got in) or never waits."""
    deadline = time.monotonic() + WAIT_S
    while not cond.has_waited(thread.name):
        assert thread.is_alive(), f"{thread.name} went through the lock without waiting"
        assert time.monotonic() < deadline, f"{thread.name} never waited"
        time.sleep(0.001)


def test_a_writer_waits_for_searches_and_holds_off_new_ones() -> None:
    lock = SharedLock()
    cond = lock._cond = _Watched()
    order: list[str] = []
    release_first = threading.Event()
    first_in = threading.Event()

    def first_search() -> None:
        with lock.shared():
            first_in.set()
            release_first.wait(WAIT_S)
            order.append("search 1 done")

    def writer() -> None:
        with lock.exclusive():
            order.append("write")

    def second_search() -> None:
        with lock.shared():
            order.append("search 2")

    a = threading.Thread(target=first_search, name="search 1")
    a.start()
    assert first_in.wait(WAIT_S)
    w = threading.Thread(target=writer, name="writer")
    w.start()
    _until_waiting(cond, w)  # the writer is queued behind the first search
    assert lock._writers_waiting == 1
    b = threading.Thread(target=second_search, name="search 2")
    b.start()
    _until_waiting(cond, b)  # a waiting writer holds off a new search: it blocks, it does not go in
    assert order == [] and lock._readers == 1
    release_first.set()
    for t in (a, w, b):
        t.join(WAIT_S)
    assert not any(t.is_alive() for t in (a, w, b))
    assert order == ["search 1 done", "write", "search 2"]
