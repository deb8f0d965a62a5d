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
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import BotoCoreError, ClientError

from accountability.helpers import open_gate
from live_server import KeyedServer, StubS3, start_keyed
from regard.accountability.audit import AuditLog
from regard.accountability.policy import PolicyStore
from regard.accountability.review import ReviewQueue
from regard.scoring.calibrate import fmr_from_similarity
from waiting import wait_for

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


def _start(
    data_dir: Path, env: dict[str, str] | None = None, extra_args: tuple[str, ...] = ()
) -> KeyedServer:
    return start_keyed(data_dir, KEYS, env, extra_args)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fr_images: Path) -> Iterator[KeyedServer]:
    data_dir = tmp_path_factory.mktemp("documented")
    open_gate(data_dir, ["*"], fr_images)  # identification needs an approved assessment
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


def _record(server: KeyedServer, seq: str | int) -> dict[str, Any]:
    return next(r for r in server.audit() if r["seq"] == int(seq))


# -- x-regard-threshold-fmr and x-regard-review: NO_CANDIDATES -----------------------------------


def test_threshold_fmr_header_and_no_candidates(server: KeyedServer, photos: dict[str, bytes]) -> None:
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
    server: KeyedServer, photos: dict[str, bytes], header: str
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


def test_review_reject_and_status_all_over_http(server: KeyedServer, photos: dict[str, bytes]) -> None:
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


def _lead_of(server: KeyedServer, seq: str) -> str:
    (match,) = _record(server, seq)["results"]["matches"]
    lead_id: str = match["lead_id"]
    return lead_id


# -- fail closed when the audit record cannot be written -----------------------------------------


def test_requests_fail_closed_when_the_audit_log_cannot_be_written(
    server: KeyedServer, photos: dict[str, bytes]
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

    # IndexFaces could not write its intent record, so it never ran: no unlogged face is stored
    # (a failure after the store commit is test_audit_intent.py's).
    faces = admin.list_faces(CollectionId="closed")["Faces"]
    assert sorted(f["ExternalImageId"] for f in faces) == ["logged"]
    described = admin.describe_collection(CollectionId="closed")
    before = _record(server, _headers(described)["x-regard-audit-seq"])["collection_state"]["before"]
    assert before == last_known
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
def limited(tmp_path_factory: pytest.TempPathFactory, small_s3: StubS3) -> Iterator[KeyedServer]:
    env = {
        "REGARD_MAX_IMAGE_BYTES": str(MAX_BYTES),
        "REGARD_MAX_S3_IMAGE_BYTES": str(MAX_BYTES),
        "REGARD_MAX_IMAGE_PIXELS": str(MAX_PIXELS),
        **small_s3.env(),
    }
    s = _start(tmp_path_factory.mktemp("limited"), env)
    yield s
    s.stop()


def test_image_limits_come_from_the_environment(
    limited: KeyedServer, small_s3: StubS3, photos: dict[str, bytes]
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


def _held_compare(server: KeyedServer, photos: dict[str, bytes]) -> tuple[threading.Thread, dict[str, Any]]:
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


def test_within_the_graceful_timeout_a_request_in_flight_completes(
    tmp_path: Path, photos: dict[str, bytes], held_s3: StubS3
) -> None:
    server = _start(tmp_path, held_s3.env(), ("--graceful-timeout", "300"))
    try:
        caller, results = _held_compare(server, photos)
        assert held_s3.requested.wait(timeout=120), "the server never fetched the S3 image"
        server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: "Shutting down" in server.log_path.read_text(), "uvicorn to begin shutting down")
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
