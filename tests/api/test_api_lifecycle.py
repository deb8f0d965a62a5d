"""Server lifecycle: SIGTERM lets in-flight requests finish before the process exits."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from live_server import start_server, stop_server

pytestmark = pytest.mark.slow


def test_graceful_shutdown_finishes_in_flight_requests(
    tmp_path_factory: pytest.TempPathFactory, photos: dict[str, bytes]
) -> None:
    server = start_server(tmp_path_factory.mktemp("graceful"))
    client = server.client()
    results: dict[str, Any] = {}

    def slow_call() -> None:
        try:
            results["response"] = client.compare_faces(
                SourceImage={"Bytes": photos["obama3"]}, TargetImage={"Bytes": photos["biden"]}
            )
        except Exception as exc:  # reported below
            results["error"] = exc

    caller = threading.Thread(target=slow_call)
    caller.start()
    time.sleep(0.3)  # the request is uploaded (loopback) and the engine is working on it
    status = stop_server(server)
    caller.join(timeout=120)
    assert "error" not in results, results.get("error")
    assert results["response"]["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert len(results["response"]["UnmatchedFaces"]) == 1
    assert status in (0, -15)
    log = server.log_path.read_text()
    assert "Application shutdown complete" in log
    # uvicorn logged the shutdown before the request finished: it really was in flight.
    assert log.index("Shutting down") < log.index('"operation":"CompareFaces"')
