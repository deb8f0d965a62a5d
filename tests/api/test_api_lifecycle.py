"""Server lifecycle: the in-flight bound, and SIGTERM letting in-flight requests finish.

The in-flight request is held open deterministically, not by timing: its source image is an
``Image.S3Object`` served by a stub S3 endpoint on loopback that answers the download only when
the test releases it.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.exceptions import ClientError

from live_server import start_server, stop_server

pytestmark = pytest.mark.slow


class HeldS3:
    """A loopback S3 stand-in: HEAD answers at once, GET waits until :meth:`release`."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.requested = threading.Event()
        self.released = threading.Event()
        held = self

        class Handler(BaseHTTPRequestHandler):
            def _headers(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(held.body)))
                self.send_header("ETag", '"0"')
                self.end_headers()

            def do_HEAD(self) -> None:
                self._headers()

            def do_GET(self) -> None:
                held.requested.set()
                held.released.wait(timeout=120)
                self._headers()
                self.wfile.write(held.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def held_s3(photos: dict[str, bytes]) -> Iterator[HeldS3]:
    stub = HeldS3(photos["obama3"])
    yield stub
    stub.close()


def _wait_for(predicate: Any, what: str, limit: float = 120.0) -> None:
    """Wait for an event the test caused (never for an amount of time)."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def test_inflight_bound_and_graceful_shutdown(
    tmp_path_factory: pytest.TempPathFactory, photos: dict[str, bytes], held_s3: HeldS3
) -> None:
    env = {
        "REGARD_API_MAX_INFLIGHT": "1",
        "REGARD_S3_ENDPOINT_URL": held_s3.url,
        "REGARD_S3_ACCESS_KEY_ID": "stub",
        "REGARD_S3_SECRET_ACCESS_KEY": "stub",
    }
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
        _wait_for(lambda: "Shutting down" in server.log_path.read_text(), "uvicorn to begin shutting down")
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
