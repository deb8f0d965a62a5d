"""Server lifecycle: the in-flight bound, and SIGTERM letting in-flight requests finish."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ClientError

from live_server import start_server, stop_server

pytestmark = pytest.mark.slow


def test_inflight_bound_and_graceful_shutdown(
    tmp_path_factory: pytest.TempPathFactory, photos: dict[str, bytes]
) -> None:
    server = start_server(tmp_path_factory.mktemp("graceful"), {"REGARD_API_MAX_INFLIGHT": "1"})
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
    # A second request while the first is in flight exceeds REGARD_API_MAX_INFLIGHT=1.
    with pytest.raises(ClientError) as info:
        server.client().describe_collection(CollectionId="anything")
    assert info.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
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
