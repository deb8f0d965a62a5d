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


def test_a_writer_waits_for_searches_and_holds_off_new_ones() -> None:
    lock = SharedLock()
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

    a = threading.Thread(target=first_search)
    a.start()
    assert first_in.wait(WAIT_S)
    w = threading.Thread(target=writer)
    w.start()
    deadline = time.monotonic() + WAIT_S
    while not lock._writers_waiting:  # the writer is queued behind the first search
        assert time.monotonic() < deadline, "the writer never queued"
        time.sleep(0.001)
    b = threading.Thread(target=second_search)
    b.start()
    b.join(0.2)
    assert b.is_alive() and order == []  # a waiting writer holds off a new search
    release_first.set()
    for t in (a, w, b):
        t.join(WAIT_S)
    assert order == ["search 1 done", "write", "search 2"]
