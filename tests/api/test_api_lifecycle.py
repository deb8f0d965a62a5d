"""Server lifecycle: the in-flight bound, and SIGTERM letting in-flight requests finish.

The in-flight request is held open deterministically, not by timing: its source image is an
``Image.S3Object`` served by a stub S3 endpoint on loopback that answers the download only when
the test releases it.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

import pytest
from botocore.exceptions import ClientError

from live_server import StubS3, start_server, stop_server
from waiting import wait_for

pytestmark = pytest.mark.slow


def test_inflight_bound_and_graceful_shutdown(
    tmp_path_factory: pytest.TempPathFactory, photos: dict[str, bytes], held_s3: StubS3
) -> None:
    env = {**held_s3.env(), "REGARD_API_MAX_INFLIGHT": "1"}
    server = start_server(tmp_path_factory.mktemp("graceful"), env)
    try:
        client = server.client()
        results: dict[str, Any] = {}

        def held_call() -> None:
            try:
                results["response"] = client.compare_faces(
                    SourceImage={"S3Object": {"Bucket": "photos", "Name": "obama3.jpg"}},
                    TargetImage={"Bytes": photos["biden"]},
                )
            except Exception as exc:  # reported below
                results["error"] = exc

        caller = threading.Thread(target=held_call)
        caller.start()
        assert held_s3.requested.wait(timeout=120), "the server never fetched the S3 image"
        # The first request is in flight (waiting for its image): a second exceeds the bound of 1.
        with pytest.raises(ClientError) as info:
            server.client().describe_collection(CollectionId="anything")
        assert info.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
        # SIGTERM while it is still in flight; the image arrives only once shutdown has begun.
        server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "Shutting down" in server.log_path.read_text(), "uvicorn to begin shutting down")
        held_s3.release()
        caller.join(timeout=120)
        status = server.process.wait(timeout=120)
    finally:
        held_s3.release()
        if server.process.poll() is None:
            stop_server(server)
    assert "error" not in results, results.get("error")
    assert results["response"]["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert len(results["response"]["UnmatchedFaces"]) == 1
    assert status in (0, -15)
    log = server.log_path.read_text()
    assert "Application shutdown complete" in log
    # uvicorn logged the shutdown before the request finished: it really was in flight.
    assert log.index("Shutting down") < log.index('"operation":"CompareFaces"')
