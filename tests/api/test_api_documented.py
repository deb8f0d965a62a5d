"""Behaviours docs/accountability.md and docs/http-api.md promise, shown on a live ``regard serve``.

- fail closed when an audit record cannot be written, and what happens to a change already made;
- the ``x-regard-threshold-fmr`` header (after the floor) and ``x-regard-review: NO_CANDIDATES``;
- the 1,024-printable-character limit on the accountability headers;
- two-person review over HTTP: ``reject``, ``status=ALL`` and who may do what;
- ``REGARD_MAX_IMAGE_BYTES`` / ``REGARD_MAX_IMAGE_PIXELS`` and the exceptions a client gets;
- ``regard serve --graceful-timeout``: within it an in-flight request completes, after it the
  request is cut.

Requests are held in flight deterministically, never by timing: their image is an
``Image.S3Object`` served by a stub S3 endpoint on loopback that answers the download only
when the test releases it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from live_server import spawn_serve
from regard.accountability.audit import AuditLog
from regard.accountability.policy import PolicyStore
from regard.accountability.review import ReviewQueue
from regard.calibrate import fmr_from_similarity
from regard.keys import KeyStore

pytestmark = pytest.mark.slow

CASE = {"x-regard-purpose": "locate a missing person", "x-regard-case-reference": "CASE-13"}
PROVENANCE = {"x-regard-source": "photo handed in by the family", "x-regard-legal-basis": "consent"}
#: key name -> (role, profile); each test that spends rate-limited tokens has keys of its own.
KEYS = {
    "admin": ("admin", "admin"),
    "clerk": ("operator", "verification"),
    "investigator": ("operator", "identification"),
    "writer": ("operator", "identification"),
    "requester": ("operator", "identification"),
    "raiser": ("operator", "raiser"),
    "vera": ("verifier", "identification"),
    "victor": ("verifier", "identification"),
}


def _wait_for(predicate: Callable[[], bool], what: str, limit: float = 120.0) -> None:
    """Wait for an event the test caused (never for an amount of time)."""
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


class StubS3:
    """A loopback S3 stand-in for one object: HEAD answers at once with ``size`` (default: the
    body's length); GET counts itself and, when ``hold`` is set, waits for :meth:`release`."""

    def __init__(self, body: bytes, *, size: int | None = None, hold: bool = False) -> None:
        self.body = body
        self.size = len(body) if size is None else size
        self.gets = 0
        self.requested = threading.Event()
        self.released = threading.Event()
        if not hold:
            self.released.set()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _headers(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(stub.size))
                self.send_header("ETag", '"0"')
                self.end_headers()

            def do_HEAD(self) -> None:
                self._headers()

            def do_GET(self) -> None:
                stub.gets += 1
                stub.requested.set()
                stub.released.wait(timeout=300)
                try:
                    self._headers()
                    self.wfile.write(stub.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the server that asked is gone (the request was cut)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def env(self) -> dict[str, str]:
        return {
            "REGARD_S3_ENDPOINT_URL": self.url,
            "REGARD_S3_ACCESS_KEY_ID": "stub",
            "REGARD_S3_SECRET_ACCESS_KEY": "stub",
        }

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Server:
    endpoint: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    keys: dict[str, tuple[str, str]]

    def client(self, who: str, headers: dict[str, str] | None = None) -> Any:
        import boto3
        from botocore.config import Config

        akid, secret = self.keys[who]
        client = boto3.client(
            "rekognition",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=akid,
            aws_secret_access_key=secret,
            # total_max_attempts counts the first attempt; botocore's max_attempts counts retries only
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=300),
        )
        if headers:

            def add(request: Any, **_: Any) -> None:
                for k, v in headers.items():
                    request.headers[k] = v

            client.meta.events.register("before-sign.rekognition.*", add)
        return client

    def signed(self, who: str, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """A SigV4-signed request to the review endpoints; (HTTP status, JSON body)."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        akid, secret = self.keys[who]
        data = json.dumps(body).encode() if body is not None else b""
        req = AWSRequest(method=method, url=self.endpoint + path, data=data)
        SigV4Auth(Credentials(akid, secret), "rekognition", "us-east-1").add_auth(req)
        raw = urllib.request.Request(
            self.endpoint + path,
            data=data if method == "POST" else None,
            method=method,
            headers=dict(req.headers),
        )
        try:
            with urllib.request.urlopen(raw, timeout=120) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            with e:
                return e.code, json.loads(e.read())

    def audit(self) -> list[dict[str, Any]]:
        return list(AuditLog(self.data_dir).records())

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def _start(data_dir: Path, env: dict[str, str] | None = None, extra_args: tuple[str, ...] = ()) -> Server:
    store = KeyStore(data_dir)
    keys = {}
    for name, (role, profile) in KEYS.items():
        key, secret = store.create(name, role=role, profile=profile)
        keys[name] = (key.access_key_id, secret)
    full_env = dict(os.environ, REGARD_DATA_DIR=str(data_dir), **(env or {}))
    endpoint, proc, log_path = spawn_serve(data_dir, full_env, 1, extra_args)
    return Server(endpoint, data_dir, proc, log_path, keys)


@pytest.fixture(scope="module")
def photos(fr_images: Path) -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in sorted(fr_images.glob("*.jpg"))}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("documented")
    # A profile of our own (a new name in policy.toml starts from the defaults): 1:N at an FPIR of
    # 1e-5 per search, thresholds below the floor raised rather than refused, two-person review.
    policies = PolicyStore(data_dir)
    for setting, value in (
        ("operations", "*"),
        ("max_fpir", "1e-5"),
        ("on_low_threshold", "raise"),
        ("two_person_review", "true"),
    ):
        policies.set("raiser", setting, value)
    s = _start(data_dir)
    yield s
    s.stop()


def _headers(response: dict[str, Any]) -> dict[str, str]:
    headers: dict[str, str] = response["ResponseMetadata"]["HTTPHeaders"]
    return headers


def _face_id(response: dict[str, Any]) -> str:
    face_id: str = response["FaceRecords"][0]["Face"]["FaceId"]
    return face_id


def _record(server: Server, seq: str | int) -> dict[str, Any]:
    return next(r for r in server.audit() if r["seq"] == int(seq))


# -- x-regard-threshold-fmr and x-regard-review: NO_CANDIDATES -----------------------------------


def test_threshold_fmr_header_and_no_candidates(server: Server, photos: dict[str, bytes]) -> None:
    admin = server.client("admin")
    admin.create_collection(CollectionId="watch")
    inv = server.client("investigator", {**CASE, **PROVENANCE})
    inv.index_faces(CollectionId="watch", Image={"Bytes": photos["obama"]})
    leads_before = len(ReviewQueue(server.data_dir).list(status=None))

    # A search without candidates (Biden against a gallery of Obama): NO_CANDIDATES, no lead.
    # Gallery of 1: per-comparison floor min(max_fmr 1e-4, max_fpir 1e-3 / 1) = 1e-4 = similarity 80.
    none = inv.search_faces_by_image(CollectionId="watch", Image={"Bytes": photos["biden"]})
    assert none["FaceMatches"] == []
    h = _headers(none)
    assert h["x-regard-review"] == "NO_CANDIDATES"
    assert h["x-regard-effective-threshold"] == "80.0000"
    assert h["x-regard-threshold-fmr"] == "0.0001"
    assert len(ReviewQueue(server.data_dir).list(status=None)) == leads_before
    rec = _record(server, h["x-regard-audit-seq"])
    assert rec["results"]["match_count"] == 0
    assert rec["threshold"]["effective_fmr"] == pytest.approx(float(h["x-regard-threshold-fmr"]))

    # A stricter request than the floor: the header gives the FMR of the threshold asked for.
    strict = inv.search_faces_by_image(
        CollectionId="watch", Image={"Bytes": photos["biden"]}, FaceMatchThreshold=90
    )
    h = _headers(strict)
    assert h["x-regard-effective-threshold"] == "90.0000"
    assert h["x-regard-threshold-fmr"] == f"{fmr_from_similarity(90.0):.6g}" == "3.16228e-05"

    # After the floor: FPIR 1e-5 over one face allows FMR 1e-5 per comparison (similarity 100);
    # the profile raises 80 to it, and Obama's second photo (a match at 80, as the admin key,
    # which has no floor, sees) is no candidate there.
    at80 = admin.search_faces_by_image(CollectionId="watch", Image={"Bytes": photos["obama2"]})
    assert len(at80["FaceMatches"]) == 1
    assert "x-regard-review" not in _headers(at80)  # no two-person review in the admin profile
    raised = server.client("raiser", CASE).search_faces_by_image(
        CollectionId="watch", Image={"Bytes": photos["obama2"]}, FaceMatchThreshold=80
    )
    assert raised["FaceMatches"] == []
    h = _headers(raised)
    assert h["x-regard-review"] == "NO_CANDIDATES"
    assert h["x-regard-effective-threshold"] == "100.0000"
    assert h["x-regard-threshold-fmr"] == "1e-05"
    rec = _record(server, h["x-regard-audit-seq"])
    assert rec["threshold"]["raised"] is True and rec["threshold"]["gallery_size"] == 1

    # 1:1 in the verification profile: the FMR of SimilarityThreshold, floored at max_fmr 1e-4.
    clerk = server.client("clerk")
    compared = clerk.compare_faces(
        SourceImage={"Bytes": photos["obama"]},
        TargetImage={"Bytes": photos["obama2"]},
        SimilarityThreshold=95,
    )
    assert _headers(compared)["x-regard-threshold-fmr"] == f"{fmr_from_similarity(95.0):.6g}"


# -- the 1,024-character limit on accountability headers -----------------------------------------


@pytest.mark.parametrize("header", ["x-regard-purpose", "x-regard-case-reference"])
def test_accountability_headers_hold_at_most_1024_printable_characters(
    server: Server, photos: dict[str, bytes], header: str
) -> None:
    admin = server.client("admin")
    if "long-headers" not in admin.list_collections()["CollectionIds"]:
        admin.create_collection(CollectionId="long-headers")
    longest = "p" * 1024
    ok = server.client("writer", {**CASE, header: longest}).search_faces_by_image(
        CollectionId="long-headers", Image={"Bytes": photos["biden"]}
    )
    rec = _record(server, _headers(ok)["x-regard-audit-seq"])
    field = "purpose" if header == "x-regard-purpose" else "case_reference"
    assert rec[field] == longest

    for bad in ("p" * 1025, "tab\there"):
        client = server.client("writer", {**CASE, header: bad})
        with pytest.raises(client.exceptions.InvalidParameterException) as info:
            client.search_faces_by_image(CollectionId="long-headers", Image={"Bytes": photos["biden"]})
        message = info.value.response["Error"]["Message"]
        assert header in message and "1024 printable characters" in message
        refused = next(
            r
            for r in server.audit()
            if r.get("request_id") == info.value.response["ResponseMetadata"]["RequestId"]
        )
        assert refused["outcome"] == "error" and refused["error"]["code"] == "InvalidParameterException"
        assert bad not in json.dumps(refused)  # the refused value is not copied into the log


# -- two-person review over HTTP: reject, status=ALL ---------------------------------------------


def test_review_reject_and_status_all_over_http(server: Server, photos: dict[str, bytes]) -> None:
    server.client("admin").create_collection(CollectionId="review-http")
    req = server.client("requester", {**CASE, **PROVENANCE})
    face = _face_id(req.index_faces(CollectionId="review-http", Image={"Bytes": photos["obama"]}))
    lead_ids = []
    for probe in ("obama2", "obama3"):
        found = req.search_faces_by_image(CollectionId="review-http", Image={"Bytes": photos[probe]})
        assert _headers(found)["x-regard-review"] == "PENDING_VERIFICATION"
        (match,) = found["FaceMatches"]
        assert match["Face"]["FaceId"] == face
        lead_ids.append(_lead_of(server, _headers(found)["x-regard-audit-seq"]))
    rejected, pending = lead_ids

    # One verifier's rejection closes a lead.
    status, body = server.signed("vera", "POST", f"/regard/review/leads/{rejected}/reject", {"Note": "ears"})
    assert status == 200
    assert body["Status"] == "REJECTED" and body["DecidedAt"]
    assert [(d["Principal"], d["Decision"], d["Note"]) for d in body["Decisions"]] == [
        ("vera", "reject", "ears")
    ]
    # A decided lead takes no further decisions.
    for decision in ("confirm", "reject"):
        status, body = server.signed("victor", "POST", f"/regard/review/leads/{rejected}/{decision}", {})
        assert (status, body["__type"]) == (400, "ConflictException")
        assert "already REJECTED" in body["message"]
    # Only verifiers decide: not the requester, not an admin.
    for who in ("requester", "admin"):
        status, body = server.signed(who, "POST", f"/regard/review/leads/{pending}/reject", {})
        assert (status, body["__type"]) == (400, "AccessDeniedException")
    status, body = server.signed("victor", "POST", f"/regard/review/leads/{pending}/confirm", {})
    assert status == 200 and body["Status"] == "PENDING_VERIFICATION"

    def listed(who: str, query: str) -> dict[str, str]:
        status, body = server.signed(who, "GET", "/regard/review/leads" + query)
        assert status == 200, body
        return {x["LeadId"]: x["Status"] for x in body["Leads"] if x["CollectionId"] == "review-http"}

    both = {rejected: "REJECTED", pending: "PENDING_VERIFICATION"}
    assert listed("victor", "?status=ALL") == both
    assert listed("victor", "?status=all") == both
    assert listed("admin", "?status=ALL") == both  # admins may list
    assert listed("vera", "") == {pending: "PENDING_VERIFICATION"}  # the default: pending only
    assert listed("vera", "?status=REJECTED") == {rejected: "REJECTED"}
    assert listed("vera", "?status=CONFIRMED") == {}
    status, body = server.signed("requester", "GET", "/regard/review/leads?status=ALL")
    assert (status, body["__type"]) == (400, "AccessDeniedException")
    status, body = server.signed("vera", "GET", "/regard/review/leads?status=MAYBE")
    assert (status, body["__type"]) == (400, "InvalidParameterException")

    rejects = [
        r
        for r in server.audit()
        if r["operation"] == "ReviewReject" and r["parameters"]["lead_id"] == rejected
    ]
    assert [(r["principal"], r["outcome"]) for r in rejects] == [("vera", "success"), ("victor", "error")]
    assert rejects[0]["results"]["lead_status"] == "REJECTED"
    assert rejects[0]["parameters"]["note"] == "ears"
    assert rejects[0]["case_reference"] == "CASE-13"


def _lead_of(server: Server, seq: str) -> str:
    (match,) = _record(server, seq)["results"]["matches"]
    lead_id: str = match["lead_id"]
    return lead_id


# -- fail closed when the audit record cannot be written -----------------------------------------


def test_requests_fail_closed_when_the_audit_log_cannot_be_written(
    server: Server, photos: dict[str, bytes]
) -> None:
    admin = server.client("admin")
    admin.create_collection(CollectionId="closed")
    first = admin.index_faces(
        CollectionId="closed", Image={"Bytes": photos["obama"]}, ExternalImageId="logged"
    )
    last_known = _record(server, _headers(first)["x-regard-audit-seq"])["collection_state"]["after"]
    log = AuditLog(server.data_dir)
    records_before = len(server.audit())

    # The log file becomes a directory: no append can open it, whoever runs the server (root too).
    aside = log.path.with_name("audit.jsonl.aside")
    log.path.rename(aside)
    log.path.mkdir()
    try:
        with pytest.raises(admin.exceptions.InternalServerError) as searched:
            admin.search_faces_by_image(CollectionId="closed", Image={"Bytes": photos["obama2"]})
        with pytest.raises(admin.exceptions.InternalServerError) as indexed:
            admin.index_faces(
                CollectionId="closed", Image={"Bytes": photos["obama3"]}, ExternalImageId="unlogged"
            )
    finally:
        log.path.rmdir()
        aside.rename(log.path)
    for failed in (searched, indexed):
        response = failed.value.response
        assert response["ResponseMetadata"]["HTTPStatusCode"] == 500
        assert "audit log" in response["Error"]["Message"]
        assert "FaceMatches" not in response and "FaceRecords" not in response  # no result is given out

    # Nothing was logged meanwhile, not even the refusals, and the chain is whole.
    records = server.audit()
    assert len(records) == records_before
    failed_ids = {f.value.response["ResponseMetadata"]["RequestId"] for f in (searched, indexed)}
    assert not failed_ids & {r.get("request_id") for r in records}
    assert log.verify().ok

    # The face was committed before its record failed: it stays (the store is not rolled back).
    faces = admin.list_faces(CollectionId="closed")["Faces"]
    assert sorted(f["ExternalImageId"] for f in faces) == ["logged", "unlogged"]
    # The next record about the collection shows the unlogged change in its state before.
    described = admin.describe_collection(CollectionId="closed")
    before = _record(server, _headers(described)["x-regard-audit-seq"])["collection_state"]["before"]
    assert before["face_count"] == last_known["face_count"] + 1 == 2
    assert before["content_version"] != last_known["content_version"]
    assert before["content_hash"] != last_known["content_hash"]
    assert log.verify().ok


# -- image limits from the environment -----------------------------------------------------------

#: obama2.jpg (184,455 bytes, 626x1200 = 751,200 px) is within both limits; biden.jpg (353,723
#: bytes) is over the byte limit; obama.jpg (279,922 bytes, 910x1137 = 1,034,670 px) is within the
#: byte limit and over the pixel limit.
MAX_BYTES = 300_000
MAX_PIXELS = 1_000_000


@pytest.fixture(scope="module")
def small_s3() -> Iterator[StubS3]:
    """An S3 object that says it is one byte over MAX_BYTES."""
    stub = StubS3(b"\xff" * 16, size=MAX_BYTES + 1)
    yield stub
    stub.close()


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, small_s3: StubS3) -> Iterator[Server]:
    env = {
        "REGARD_MAX_IMAGE_BYTES": str(MAX_BYTES),
        "REGARD_MAX_IMAGE_PIXELS": str(MAX_PIXELS),
        **small_s3.env(),
    }
    s = _start(tmp_path_factory.mktemp("limited"), env)
    yield s
    s.stop()


def test_image_limits_come_from_the_environment(
    limited: Server, small_s3: StubS3, photos: dict[str, bytes]
) -> None:
    assert (len(photos["obama2"]), len(photos["biden"]), len(photos["obama"])) == (184_455, 353_723, 279_922)
    rek = limited.client("admin")
    assert len(rek.detect_faces(Image={"Bytes": photos["obama2"]})["FaceDetails"]) == 1

    with pytest.raises(rek.exceptions.ImageTooLargeException) as info:
        rek.detect_faces(Image={"Bytes": photos["biden"]})
    assert f"the limit is {MAX_BYTES}" in info.value.response["Error"]["Message"]
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400

    with pytest.raises(rek.exceptions.ImageTooLargeException) as info:
        rek.detect_faces(Image={"Bytes": photos["obama"]})
    assert "pixels" in info.value.response["Error"]["Message"]
    assert str(MAX_PIXELS) in info.value.response["Error"]["Message"]

    # Either image of a CompareFaces counts.
    with pytest.raises(rek.exceptions.ImageTooLargeException):
        rek.compare_faces(SourceImage={"Bytes": photos["obama2"]}, TargetImage={"Bytes": photos["biden"]})

    # An S3 object over the byte limit is refused before it is downloaded.
    with pytest.raises(rek.exceptions.ImageTooLargeException):
        rek.detect_faces(Image={"S3Object": {"Bucket": "photos", "Name": "big.jpg"}})
    assert small_s3.gets == 0

    # Not an image (within the limits): InvalidImageFormatException.
    with pytest.raises(rek.exceptions.InvalidImageFormatException):
        rek.detect_faces(Image={"Bytes": photos["obama2"][: len(photos["obama2"]) // 2] + b"\0" * 10})
    with pytest.raises(rek.exceptions.InvalidImageFormatException):
        rek.detect_faces(Image={"Bytes": b"GIF89a but not really"})

    # The request body limit follows the byte limit: two base64 images at it plus 64 KiB.
    body_limit = 2 * -(-MAX_BYTES * 4 // 3) + 64 * 1024
    blob = b"\0" * (body_limit * 3 // 4 + 1)  # its base64 alone is over the body limit
    assert len(blob) < 5 * 1024 * 1024  # far under the default limits
    with pytest.raises(ClientError) as info:
        rek.detect_faces(Image={"Bytes": blob})
    assert info.value.response["Error"]["Code"] == "RequestEntityTooLargeException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413


# -- regard serve --graceful-timeout -------------------------------------------------------------


def _held_compare(server: Server, photos: dict[str, bytes]) -> tuple[threading.Thread, dict[str, Any]]:
    """CompareFaces whose source image is the stub's held S3 object, in a thread."""
    client = server.client("admin")
    results: dict[str, Any] = {}

    def call() -> None:
        try:
            results["response"] = client.compare_faces(
                SourceImage={"S3Object": {"Bucket": "photos", "Name": "obama3.jpg"}},
                TargetImage={"Bytes": photos["biden"]},
            )
        except Exception as exc:  # reported by the test
            results["error"] = exc

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    return caller, results


def _refused(endpoint: str) -> bool:
    url = urlsplit(endpoint)
    try:
        with socket.create_connection((url.hostname, url.port), timeout=30):
            return False
    except ConnectionRefusedError:
        return True


@pytest.fixture
def held_s3(photos: dict[str, bytes]) -> Iterator[StubS3]:
    stub = StubS3(photos["obama3"], hold=True)
    yield stub
    stub.close()


def test_within_the_graceful_timeout_a_request_in_flight_completes(
    tmp_path: Path, photos: dict[str, bytes], held_s3: StubS3
) -> None:
    server = _start(tmp_path, held_s3.env(), ("--graceful-timeout", "300"))
    try:
        caller, results = _held_compare(server, photos)
        assert held_s3.requested.wait(timeout=120), "the server never fetched the S3 image"
        server.process.send_signal(signal.SIGTERM)
        _wait_for(lambda: "Shutting down" in server.log_path.read_text(), "uvicorn to begin shutting down")
        # It stops accepting connections at once, and still works on the request in flight.
        assert _refused(server.endpoint)
        assert server.process.poll() is None
        held_s3.release()
        caller.join(timeout=300)
        status = server.process.wait(timeout=300)
    finally:
        held_s3.release()
        server.stop()
    assert "error" not in results, results.get("error")
    assert results["response"]["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert len(results["response"]["UnmatchedFaces"]) == 1
    assert status in (0, -15)
    log = server.log_path.read_text()
    assert "timeout graceful shutdown exceeded" not in log
    assert log.index("Shutting down") < log.index('"operation":"CompareFaces"')


def test_after_the_graceful_timeout_a_request_in_flight_is_cut(
    tmp_path: Path, photos: dict[str, bytes], held_s3: StubS3
) -> None:
    server = _start(tmp_path, held_s3.env(), ("--graceful-timeout", "1"))
    try:
        caller, results = _held_compare(server, photos)
        assert held_s3.requested.wait(timeout=120), "the server never fetched the S3 image"
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        # The image is never released while the server runs: the request cannot finish in time.
        status = server.process.wait(timeout=300)
        waited = time.monotonic() - signalled
        caller.join(timeout=300)
    finally:
        held_s3.release()
        server.stop()
    assert not caller.is_alive()
    assert "response" not in results
    # uvicorn answers a cancelled request with a bare HTTP 500 (or the connection just closes).
    error = results["error"]
    if isinstance(error, ClientError):
        assert error.response["ResponseMetadata"]["HTTPStatusCode"] == 500, error.response
    else:
        assert isinstance(error, BotoCoreError), error
    assert status in (0, -15)
    log = server.log_path.read_text()
    assert "Cancel 1 running task(s), timeout graceful shutdown exceeded" in log
    assert '"operation":"CompareFaces"' not in log
    # Nothing was acknowledged, so nothing was logged for it.
    assert "CompareFaces" not in {r.get("operation") for r in AuditLog(tmp_path).records()}
    # The configured second, not the default 30 s, set the cut (a bound 30x the setting, not a race).
    assert waited < 30, f"shutdown took {waited:.1f} s: --graceful-timeout 1 was not applied"
