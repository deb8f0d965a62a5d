"""Hardening (issue 15): request bodies cannot starve signed clients or exhaust memory.

Each test performs the attack against a live ``regard serve`` with raw sockets:

- slow bodies: many connections send their headers and 2 of 1,000 declared body bytes, then
  stall. They do not count against ``REGARD_API_MAX_INFLIGHT`` (only a read, signed request
  does), so a signed client is still served while they stall; past ``REGARD_API_BODY_TIMEOUT``
  each gets HTTP 408 and its connection is closed. Idle keep-alive connections are closed after
  ``REGARD_API_KEEP_ALIVE_TIMEOUT``.
- huge bodies: a body declared as 1 GiB, or streamed without a length, on ``POST /`` and on the
  review endpoint, without credentials, is refused with 413 after at most the limit has been read,
  and the server's resident memory does not grow with it.

Nothing here waits for an amount of time: the deadlines are set in the server's environment and
the test waits (with generous limits) for their outcome.
"""

from __future__ import annotations

import contextlib
import select
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from live_server import LiveServer, start_server, stop_server

pytestmark = pytest.mark.slow

STALLED = 70
DECLARED = 1000
GIB = 1 << 30
MIB = 1 << 20
#: The review endpoint's body limit (regard.api.accountability.MAX_REVIEW_BODY).
REVIEW_LIMIT = 16 * 1024


def _address(server: LiveServer) -> tuple[str, int]:
    parts = urlsplit(server.endpoint)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _stalled(server: LiveServer) -> socket.socket:
    """A connection that sends a ListCollections request's headers and 2 of its 1,000 declared
    body bytes, then nothing more."""
    sock = socket.create_connection(_address(server), timeout=120)
    host, port = _address(server)
    head = (
        "POST / HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "X-Amz-Target: RekognitionService.ListCollections\r\n"
        "Content-Type: application/x-amz-json-1.1\r\n"
        f"Content-Length: {DECLARED}\r\n\r\n"
    )
    sock.sendall(head.encode() + b"{}")
    return sock


@contextlib.contextmanager
def _attack(server: LiveServer, count: int) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(_stalled(server))
        # One more request on a fresh connection, answered after the stalled ones were accepted
        # and their headers read (one event loop, serving connections in the order they came).
        status, _ = _exchange(server, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status == 200
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _recv(sock: socket.socket) -> bytes:
    """The next bytes the server sent; empty once it closed (or reset) the connection."""
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (generous client-side limit)."""
    sock.settimeout(120)
    data = b""
    while True:
        chunk = _recv(sock)
        if not chunk:
            return data
        data += chunk


def _status(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response.split(b" ", 2)[1])


def _exchange(server: LiveServer, request: bytes) -> tuple[int, bytes]:
    with socket.create_connection(_address(server), timeout=120) as sock:
        sock.sendall(request)
        response = _read_all(sock)
    return _status(response), response


def _still_open_and_unanswered(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(1)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(120)
    return False


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/<pid>/status")


def test_stalled_bodies_do_not_lock_out_signed_clients(tmp_path_factory: pytest.TempPathFactory) -> None:
    # A body deadline far beyond the test: the stalled connections stay stalled throughout.
    env = {"REGARD_API_MAX_INFLIGHT": "2", "REGARD_API_BODY_TIMEOUT": "600", "REGARD_WARM_UP": "0"}
    server = start_server(tmp_path_factory.mktemp("stalled"), env)
    try:
        with _attack(server, STALLED) as socks:
            client = server.client()
            for _ in range(5):  # more calls than the in-flight bound of 2, one after another
                reply = client.list_collections()
                assert reply["ResponseMetadata"]["HTTPStatusCode"] == 200
            # every stalled connection is still open and unanswered: they really were stalling
            assert all(_still_open_and_unanswered(sock) for sock in socks)
        lines = [line for line in server.log_lines() if line.get("operation") == "ListCollections"]
        assert [line["status"] for line in lines if line["access_key_id"]] == [200] * 5
        assert not any(line.get("error") == "ProvisionedThroughputExceededException" for line in lines)
    finally:
        stop_server(server)


def test_stalled_bodies_are_answered_408_and_closed_at_the_deadline(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    env = {
        "REGARD_API_MAX_INFLIGHT": "2",
        "REGARD_API_BODY_TIMEOUT": "1",
        "REGARD_API_KEEP_ALIVE_TIMEOUT": "1",
        "REGARD_WARM_UP": "0",
    }
    server = start_server(tmp_path_factory.mktemp("deadline"), env)
    try:
        with _attack(server, STALLED) as socks:
            for sock in socks:
                response = _read_all(sock)  # returns once the server has closed the connection
                assert _status(response) == 408
                assert b"RequestTimeoutException" in response
                assert b"connection: close" in response.lower()
            assert server.client().list_collections()["ResponseMetadata"]["HTTPStatusCode"] == 200
        timed_out = [line for line in server.log_lines() if line.get("error") == "RequestTimeoutException"]
        assert len(timed_out) == STALLED
        assert all(line["status"] == 408 and line["access_key_id"] is None for line in timed_out)
        # an idle keep-alive connection is closed by the server once answered and left idle
        with socket.create_connection(_address(server), timeout=120) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            response = _read_all(sock)
        assert _status(response) == 200
        assert b"connection: close" not in response.lower()  # it was kept alive, then closed
    finally:
        stop_server(server)


def _read_response(sock: socket.socket) -> bytes:
    """One HTTP response (headers and a Content-Length body), or what came before the server closed."""
    sock.settimeout(120)
    data = b""
    while True:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            length = 0
            for line in data[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(data) >= end + 4 + length:
                return data
        chunk = _recv(sock)
        if not chunk:
            return data
        data += chunk


def _send_until_answered(sock: socket.socket, head: bytes, chunk: bytes, budget: int) -> tuple[int, bytes]:
    """Send ``head``, then ``chunk`` again and again until the server answers or closes, or ``budget``
    bytes of body were sent; (body bytes sent, the server's answer)."""
    sock.sendall(head)
    sent = 0
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        while sent < budget:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            sock.sendall(chunk)
            sent += len(chunk)
    return sent, _read_response(sock)


@pytest.mark.parametrize(
    ("path", "chunked"),
    [
        ("/regard/review/leads/lead-1/confirm", False),
        ("/regard/review/leads/lead-1/confirm", True),
        ("/", False),
        ("/", True),
    ],
    ids=["review-declared", "review-chunked", "rekognition-declared", "rekognition-chunked"],
)
def test_huge_unsigned_body_is_refused_413_without_reading_it(
    tmp_path_factory: pytest.TempPathFactory, path: str, chunked: bool
) -> None:
    server = start_server(tmp_path_factory.mktemp("huge"), {"REGARD_WARM_UP": "0"})
    try:
        pid = server.process.pid
        before = _rss_kib(pid)
        budget = 64 * MIB  # of the 1 GiB the request stands for
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {GIB}"
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\n"
            "X-Amz-Target: RekognitionService.ListCollections\r\n"
            f"Content-Type: application/json\r\n{framing}\r\n\r\n"
        ).encode()
        piece = b"0" * (64 * 1024)
        chunk = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece
        if not chunked:  # a declared length over the limit is answered before any body is sent
            with socket.create_connection(_address(server), timeout=120) as sock:
                sock.sendall(head)
                assert _status(_read_response(sock)) == 413
        with socket.create_connection(_address(server), timeout=120) as sock:
            sent, response = _send_until_answered(sock, head, chunk, budget)
        after = _rss_kib(pid)
        assert _status(response) == 413, response[:300]
        assert b"RequestEntityTooLargeException" in response
        # answered while most of the body was never sent (the rest would be discarded, not kept)
        assert sent < budget, f"{sent} body bytes sent and still no answer"
        assert after - before < 64 * 1024, f"RSS grew from {before} KiB to {after} KiB"
        print(f"{path} chunked={chunked}: {sent} body bytes sent; RSS {before} -> {after} KiB")
    finally:
        stop_server(server)


def test_review_body_over_its_limit_signed_is_413(tmp_path_factory: pytest.TempPathFactory) -> None:
    """A signed review decision with a body over 16 KiB is refused as too large, never read whole."""
    server = start_server(tmp_path_factory.mktemp("review"), {"REGARD_WARM_UP": "0"})
    try:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        from live_server import post_json

        path = "/regard/review/leads/lead-1/confirm"
        data = b'{"Note": "' + b"x" * REVIEW_LIMIT + b'"}'
        req = AWSRequest(method="POST", url=server.endpoint + path, data=data)
        SigV4Auth(Credentials(server.access_key_id, server.secret), "rekognition", "us-east-1").add_auth(req)
        status, body = post_json(server.endpoint + path, "POST", dict(req.headers), data)
        assert (status, body["__type"]) == (413, "RequestEntityTooLargeException")
        assert str(REVIEW_LIMIT) in body["message"]
    finally:
        stop_server(server)
