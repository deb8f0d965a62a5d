"""Unauthenticated refusals, per source address: a bounded number of audit records, then a count.

Anyone who can reach the port can send requests that are refused before a key is verified (no
signature, a wrong one, an unknown key, a body too large or too slow). Writing a full, fsync'ed
audit record for each would let one client fill the log and the disk at the rate it can send
(367 records a second from one client before issue 15). So, per source address and fixed window
of ``REGARD_API_REFUSAL_INTERVAL`` seconds (default 60):

- the first ``REGARD_API_REFUSAL_RECORDS`` refusals (default 10) each get their own record, as
  before, with the source address and the claimed access key id;
- the window's later refusals are only counted; when the window ends (checked at each refusal and
  every few seconds by the server) or at shutdown, one ``kind: access`` summary record carries
  how many there were, by error code, and how many were throttled;
- beyond ``REGARD_API_REFUSAL_THROTTLE`` authentication refusals in the window (default 100), the
  source's further refusals are answered HTTP 503 ``ThrottlingException`` (which SDKs back off on)
  instead of their own error, until the window ends.

Requests whose signature holds are never counted here: each is recorded by the guard. So from one
source, a window holds at most ``REGARD_API_REFUSAL_RECORDS + 1`` records of refusals, whatever
their number. At most :data:`MAX_SOURCES` sources are tracked at once; beyond that the oldest
window is closed early (its summary written), so memory stays bounded too.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

#: Source addresses with an open window at once.
MAX_SOURCES = 4096

#: Refusals that mean "could not authenticate", the ones that are throttled.
AUTHENTICATION_CODES = frozenset(
    {
        "MissingAuthenticationTokenException",
        "IncompleteSignatureException",
        "InvalidSignatureException",
        "UnrecognizedClientException",
        "ThrottlingException",
    }
)

Decision = Literal["record", "count", "throttle"]


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds")


@dataclass
class _Window:
    opened: float  # on the ledger's clock
    first: float  # wall time of the first refusal (for the summary)
    last: float
    refusals: int = 0
    recorded: int = 0
    authentication: int = 0
    throttled: int = 0
    unrecorded: Counter[str] = field(default_factory=Counter)


class RefusalLedger:
    """Decides, per unauthenticated refusal, whether it is recorded, counted or throttled, and
    makes the summary records of the windows that ended. Thread-safe; writes nothing itself."""

    def __init__(
        self,
        *,
        interval: float,
        records: int,
        throttle: int,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.interval = interval
        self.records = records
        self.throttle = throttle
        self.clock = clock
        self.wall = wall
        self._windows: dict[str, _Window] = {}
        #: Windows closed early (a new window of the same source, or too many sources) whose
        #: summaries :meth:`due` has not handed out yet.
        self._pending: list[tuple[str, _Window]] = []
        self._lock = threading.Lock()

    def refused(self, source: str, code: str) -> Decision:
        """Count one refusal of ``code`` from ``source``: ``record`` it (its own audit record),
        ``count`` it (in the window's summary) or ``throttle`` it (answer 503, counted)."""
        now, wall = self.clock(), self.wall()
        with self._lock:
            window = self._windows.get(source)
            if window is None or now - window.opened >= self.interval:
                if window is not None:
                    self._pending.append((source, window))
                if window is None and len(self._windows) >= MAX_SOURCES:
                    oldest = min(self._windows, key=lambda s: self._windows[s].opened)
                    self._pending.append((oldest, self._windows.pop(oldest)))
                window = self._windows[source] = _Window(opened=now, first=wall, last=wall)
            window.refusals += 1
            window.last = wall
            authentication = code in AUTHENTICATION_CODES
            if authentication:
                window.authentication += 1
            if self.throttle and authentication and window.authentication > self.throttle:
                window.throttled += 1
                window.unrecorded["ThrottlingException"] += 1
                return "throttle"
            if window.recorded < self.records:
                window.recorded += 1
                return "record"
            window.unrecorded[code] += 1
            return "count"

    def due(self, *, everything: bool = False) -> list[dict[str, Any]]:
        """Summary records of the windows that ended (all open windows with ``everything``, at
        shutdown); windows without unrecorded refusals need none."""
        now = self.clock()
        with self._lock:
            closed = self._pending[:]
            self._pending.clear()
            for source in list(self._windows):
                if everything or now - self._windows[source].opened >= self.interval:
                    closed.append((source, self._windows.pop(source)))
        return [self._summary(source, w) for source, w in closed if sum(w.unrecorded.values())]

    def _summary(self, source: str, window: _Window) -> dict[str, Any]:
        unrecorded = sum(window.unrecorded.values())
        return {
            "kind": "access",
            "request_id": None,
            "access_key_id": None,
            "operation": None,
            "outcome": "error",
            "error": {
                "code": "RefusalsAggregated",
                "message": f"{unrecorded} more unauthenticated requests from {source} refused",
            },
            "source": source,
            "refusals": {
                "count": unrecorded,
                "by_code": dict(sorted(window.unrecorded.items())),
                "throttled": window.throttled,
                "recorded_individually": window.recorded,
                "total": window.refusals,
                "first": _iso(window.first),
                "last": _iso(window.last),
                "interval_s": self.interval,
            },
        }
