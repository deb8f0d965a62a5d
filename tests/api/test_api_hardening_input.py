"""Hardening (issue 15) at the API edge: requests that left no record, and refusals that left too many.

Each test performs the attack on the in-process app (``create_app`` on an event loop, as
test_app_inprocess.py does; none of these findings is about the network):

- finding 5: NaN, Infinity and -Infinity, a number that overflows a double, a lone surrogate in a
  string and 10,000-deep nesting each gave HTTP 500 and no audit record (CompareFaces with a NaN
  threshold even ran the comparison first). Now: 400 ``SerializationException`` before the
  operation runs, with a ``kind: access`` record; and a 500 the guard did not record gets a record
  of its own;
- finding 15: a client that disconnects mid-body is logged as a disconnect (status 499), no
  traceback; a UTF-16 body is refused; a refused signature's record keeps the claimed key id; a
  credential scoped to another region than ``REGARD_REGION`` is refused;
- finding 3: 500 unsigned requests from one source make at most ``api_refusal_records + 1`` audit
  records (10 + 1 with the defaults), whose counts add up to 500, while each signed request in
  between is recorded. Windows run on a clock the test moves, never on the wall clock.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import test_app_inprocess as harness
from anyio.from_thread import start_blocking_portal
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from test_app_inprocess import HOST, JSON_11, InProcess, _perform, call_asgi

from regard.accountability.audit import AuditLog
from regard.api.app import create_app
from regard.api.jsonbody import MAX_DEPTH
from regard.api.refusals import RefusalLedger
from regard.config import Settings
from regard.keys import KeyStore

# the in-process harness's fixtures
make_app = harness.make_app
served = harness.served
request_log = harness.request_log


def _records(data_dir: Path) -> list[dict[str, Any]]:
    return list(AuditLog(data_dir).records())


def _one_access_record(served: InProcess, request_id: str, code: str) -> dict[str, Any]:
    [record] = served.audit(request_id)
    assert (record["kind"], record["outcome"], record["error"]["code"]) == ("access", "error", code)
    return record


# -- finding 5: every request that reaches the service leaves a record ----------------------------
@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_threshold_is_refused_before_the_comparison_and_recorded(
    served: InProcess, monkeypatch: pytest.MonkeyPatch, number: str
) -> None:
    ran: list[bool] = []
    _perform(monkeypatch, "CompareFaces", lambda ctx, p: ran.append(True))
    image = '{"S3Object":{"Bucket":"b","Name":"a.jpg"}}'
    body = f'{{"SourceImage":{image},"TargetImage":{image},"SimilarityThreshold":{number}}}'.encode()
    reply = served.post("CompareFaces", body=body)
    assert (reply.status, reply.error_type) == (400, "SerializationException"), reply.body
    assert ran == []  # refused before the operation
    record = _one_access_record(served, reply.headers["x-amzn-requestid"], "SerializationException")
    assert (record["operation"], record["access_key_id"]) == ("CompareFaces", served.access_key_id)


def test_a_lone_surrogate_is_refused_and_recorded(served: InProcess) -> None:
    body = b'{"Image":{"S3Object":{"Bucket":"photos","Name":"\\ud800"}}}'  # the JSON escape, as sent
    reply = served.post("DetectFaces", body=body)
    assert (reply.status, reply.error_type) == (400, "SerializationException")
    assert "surrogate" in reply.json()["message"]
    _one_access_record(served, reply.headers["x-amzn-requestid"], "SerializationException")
    # a proper pair (an emoji, escaped) is text: it reaches validation and fails there on its pattern
    emoji = served.post("DescribeCollection", body=b'{"CollectionId":"\\ud83d\\ude00"}')
    assert emoji.error_type == "InvalidParameterException"


def test_deep_nesting_is_refused_and_recorded(served: InProcess) -> None:
    deep = b'{"x":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    reply = served.post("ListCollections", body=deep)
    assert (reply.status, reply.error_type) == (400, "SerializationException")
    assert f"deeper than {MAX_DEPTH}" in reply.json()["message"]
    _one_access_record(served, reply.headers["x-amzn-requestid"], "SerializationException")
    # MAX_DEPTH levels are JSON like any other (an unknown member, ignored as AWS does)
    at_limit = b'{"x":' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}"
    assert served.post("ListCollections", body=at_limit).status == 200


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_a_body_not_in_utf8_is_a_serialization_error(served: InProcess, encoding: str) -> None:
    reply = served.post("ListCollections", body='{"MaxResults": 5}'.encode(encoding))
    assert (reply.status, reply.error_type) == (400, "SerializationException")
    _one_access_record(served, reply.headers["x-amzn-requestid"], "SerializationException")


def test_an_unexpected_error_before_the_guard_is_recorded_once(
    served: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    from regard.api.rekognition import shapes

    def broken(operation: str, params: Any) -> Any:
        raise RuntimeError("a bug in validation")

    monkeypatch.setattr(shapes, "validate", broken)
    reply = served.post("ListCollections")
    assert (reply.status, reply.error_type) == (500, "InternalServerError")
    record = _one_access_record(served, reply.headers["x-amzn-requestid"], "InternalServerError")
    assert record["access_key_id"] == served.access_key_id


def test_an_unexpected_error_in_the_operation_keeps_the_guards_one_record(
    served: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(ctx: Any, params: Any) -> Any:
        raise RuntimeError("a bug in the operation")

    _perform(monkeypatch, "ListCollections", broken)
    reply = served.post("ListCollections")
    assert (reply.status, reply.error_type) == (500, "InternalServerError")
    [record] = served.audit(reply.headers["x-amzn-requestid"])
    assert (record["operation"], record["outcome"]) == ("ListCollections", "error")


# -- finding 15: disconnects, claimed keys, regions ----------------------------------------------
def test_a_client_that_disconnects_mid_body_is_logged_as_a_disconnect(
    served: InProcess, request_log: Any, caplog: pytest.LogCaptureFixture
) -> None:
    body = b'{"CollectionId": "staff"}'
    headers = {"host": HOST, "x-amz-target": "RekognitionService.ListCollections"}
    headers["content-length"] = str(len(body))
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body[:5], "more_body": True}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50124),
        "server": (HOST, 80),
    }
    served.portal.call(served.app, scope, receive, send)
    [line] = request_log()
    assert (line["status"], line["error"]) == (499, "ClientDisconnected")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert all("Traceback" not in r.getMessage() for r in caplog.records)
    record = _one_access_record(served, line["request_id"], "ClientDisconnected")
    assert record["source"] == "127.0.0.1"


def test_a_refused_signature_keeps_the_claimed_key_id(served: InProcess, request_log: Any) -> None:
    real = served.access_key_id
    served.secret = "not-the-secret"
    wrong = served.post("ListCollections")
    assert wrong.error_type == "InvalidSignatureException"
    [line] = request_log()
    assert (line["access_key_id"], line["claimed_access_key_id"]) == (None, real)
    record = _one_access_record(served, wrong.headers["x-amzn-requestid"], "InvalidSignatureException")
    assert record["access_key_id"] is None  # nobody was authenticated
    assert record["claimed_access_key_id"] == real  # what the request claimed, unverified
    served.access_key_id = "AKIDNOBODYHASTHIS"
    unknown = served.post("ListCollections")
    assert unknown.error_type == "UnrecognizedClientException"
    record = _one_access_record(served, unknown.headers["x-amzn-requestid"], "UnrecognizedClientException")
    assert record["claimed_access_key_id"] == "AKIDNOBODYHASTHIS"


def _signed_for(served: InProcess, region: str, body: bytes) -> dict[str, str]:
    headers = {"Host": HOST, "X-Amz-Target": "RekognitionService.ListCollections", "Content-Type": JSON_11}
    request = AWSRequest(method="POST", url=f"http://{HOST}/", data=body, headers=headers)
    SigV4Auth(Credentials(served.access_key_id, served.secret), "rekognition", region).add_auth(request)
    return dict(request.headers.items())


def test_only_the_configured_region_is_accepted(make_app: Any) -> None:
    default: InProcess = make_app()
    body = b"{}"
    other = default.portal.call(
        call_asgi, default.app, "POST", "/", _signed_for(default, "eu-west-1", body), [body]
    )
    assert (other.status, other.error_type) == (403, "InvalidSignatureException")  # as AWS answers
    assert other.json()["message"] == "Credential should be scoped to a valid region, not 'eu-west-1'."
    record = _one_access_record(default, other.headers["x-amzn-requestid"], "InvalidSignatureException")
    assert record["claimed_access_key_id"] == default.access_key_id
    home = default.portal.call(
        call_asgi, default.app, "POST", "/", _signed_for(default, "us-east-1", body), [body]
    )
    assert home.status == 200
    # REGARD_REGION=eu-west-1: that region, and no other
    assert Settings.from_env({"REGARD_REGION": "eu-west-1"}).region == "eu-west-1"
    eu: InProcess = make_app(region="eu-west-1")
    ok = eu.portal.call(call_asgi, eu.app, "POST", "/", _signed_for(eu, "eu-west-1", body), [body])
    assert ok.status == 200
    refused = eu.portal.call(call_asgi, eu.app, "POST", "/", _signed_for(eu, "us-east-1", body), [body])
    assert refused.error_type == "InvalidSignatureException"


# -- finding 3: refusals of unauthenticated requests are aggregated and throttled ----------------
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@contextlib.contextmanager
def _app_until_shutdown(tmp_path: Path, **overrides: Any) -> Iterator[InProcess]:
    """An in-process app whose shutdown (lifespan end) the test chooses: it is at the block's end."""
    data_dir = tmp_path / "data"
    key, secret = KeyStore(data_dir).create("tests", role="admin", profile="admin")
    app = create_app(Settings(data_dir=data_dir, cache_dir=tmp_path / "cache", **overrides))
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(app.router.lifespan_context(app)),
    ):
        yield InProcess(app, portal, data_dir, key.access_key_id, secret)


def test_500_unsigned_requests_make_a_bounded_number_of_records_that_add_up(tmp_path: Path) -> None:
    settings = Settings()
    bound = settings.api_refusal_records + 1  # 10 records of their own + 1 summary = 11
    signed_ids: list[str] = []
    statuses: list[int] = []
    with _app_until_shutdown(tmp_path) as served:
        served.app.state.api.refusals.clock = FakeClock()  # one window: the clock does not move
        for i in range(500):
            reply = served.post("ListCollections", signed=False)
            statuses.append(reply.status)
            if i % 50 == 0:  # authenticated work in between: each request recorded
                ok = served.post("ListCollections")
                assert ok.status == 200
                signed_ids.append(ok.headers["x-amzn-requestid"])
        data_dir = served.data_dir
    # the first 100 (REGARD_API_REFUSAL_THROTTLE) got their own error, the rest 503 ThrottlingException
    assert statuses == [403] * settings.api_refusal_throttle + [503] * (500 - settings.api_refusal_throttle)
    records = _records(data_dir)
    refused = [r for r in records if r["kind"] == "access"]
    assert len(refused) == bound
    single = [r for r in refused if r["request_id"] is not None]
    [summary] = [r for r in refused if r["request_id"] is None]
    assert len(single) == settings.api_refusal_records
    assert all(r["error"]["code"] == "MissingAuthenticationTokenException" for r in single)
    assert all(r["source"] == "127.0.0.1" for r in refused)
    counts = summary["refusals"]
    assert len(single) + counts["count"] == 500 == counts["total"]  # the count adds up
    assert counts["by_code"] == {"MissingAuthenticationTokenException": 90, "ThrottlingException": 400}
    assert counts["throttled"] == 400
    assert summary["error"]["code"] == "RefusalsAggregated"
    # every authenticated request has its record
    by_id = {r["request_id"]: r for r in records}
    assert all(by_id[i]["outcome"] == "success" for i in signed_ids) and len(signed_ids) == 10


def test_each_window_ends_with_its_summary_and_sources_are_counted_apart() -> None:
    clock, wall = FakeClock(), FakeClock()
    ledger = RefusalLedger(interval=60, records=2, throttle=4, clock=clock, wall=wall)
    decisions = [ledger.refused("10.0.0.1", "InvalidSignatureException") for _ in range(6)]
    assert decisions == ["record", "record", "count", "count", "throttle", "throttle"]
    assert ledger.refused("10.0.0.2", "RequestTimeoutException") == "record"  # another source
    # body refusals (408, 413, disconnects) are counted but never throttled
    assert [ledger.refused("10.0.0.2", "RequestTimeoutException") for _ in range(6)][-1] == "count"
    assert ledger.due() == []  # the window has not ended
    clock.now += 60
    summaries = {s["source"]: s["refusals"] for s in ledger.due()}
    assert summaries["10.0.0.1"]["count"] == 4 and summaries["10.0.0.1"]["throttled"] == 2
    assert summaries["10.0.0.2"] == summaries["10.0.0.2"] | {"count": 5, "throttled": 0, "total": 7}
    # a new window: recorded again
    assert ledger.refused("10.0.0.1", "InvalidSignatureException") == "record"
    assert ledger.due(everything=True) == []  # nothing unrecorded in it


def test_at_shutdown_the_open_windows_summaries_are_written(tmp_path: Path) -> None:
    with _app_until_shutdown(tmp_path, api_refusal_records=3) as served:
        served.app.state.api.refusals.clock = FakeClock()
        for _ in range(8):
            assert served.post("ListCollections", signed=False).status == 403
        data_dir = served.data_dir
        assert len(_records(data_dir)) == 3  # the summary waits for the window's end
    [summary] = [r for r in _records(data_dir) if r["request_id"] is None]
    assert summary["refusals"]["count"] == 5 and summary["refusals"]["total"] == 8
    assert json.dumps(summary)  # a plain JSON record


def test_unsigned_review_requests_are_counted_the_same_way(tmp_path: Path) -> None:
    with _app_until_shutdown(tmp_path, api_refusal_records=2, api_refusal_throttle=5) as served:
        served.app.state.api.refusals.clock = FakeClock()
        statuses = [served.get("/regard/review/leads", signed=False).status for _ in range(8)]
        assert served.get("/regard/review/leads").json() == {"Leads": []}  # signed: served
        data_dir = served.data_dir
    assert statuses == [403] * 5 + [503] * 3
    refused = [r for r in _records(data_dir) if r["kind"] == "access"]
    assert [r["operation"] for r in refused if r["request_id"]] == ["ReviewList", "ReviewList"]
    [summary] = [r["refusals"] for r in refused if r["request_id"] is None]
    assert (summary["count"], summary["throttled"], summary["total"]) == (6, 3, 8)


# -- the same over a live server: a real socket, SIGTERM ---------------------------------------
def test_live_disconnect_region_and_refusal_summary_at_shutdown(tmp_path: Path) -> None:
    """``regard serve`` on loopback: a client that closes its socket mid-body is a 499 line, not an
    unhandled error with a traceback; a client configured for another region gets botocore's
    InvalidSignatureException; those two refusals and 30 unsigned requests, all from 127.0.0.1,
    leave 3 records and, at SIGTERM, a summary of the other 29 (a day-long window, so the wall
    clock cannot end it during the test)."""
    import socket
    import urllib.error
    import urllib.request

    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    from live_server import start_server, stop_server
    from waiting import wait_for

    env = {
        "REGARD_WARM_UP": "0",
        "REGARD_API_REFUSAL_INTERVAL": "86400",
        "REGARD_API_REFUSAL_RECORDS": "3",
    }
    server = start_server(tmp_path / "live", env)
    try:
        host, port = server.endpoint.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(
                b"POST / HTTP/1.1\r\nHost: x\r\nX-Amz-Target: RekognitionService.ListCollections\r\n"
                b"Content-Length: 100000\r\n\r\n" + b'{"MaxResults":'
            )
        wait_for(lambda: any(line.get("status") == 499 for line in server.log_lines()), "the 499 line")
        [gone] = [line for line in server.log_lines() if line.get("status") == 499]
        assert gone["error"] == "ClientDisconnected" and gone["event"] == "request"
        assert not [line for line in server.log_lines() if line.get("event") == "unhandled"]
        assert "Traceback" not in server.log_path.read_text()

        elsewhere = boto3.client(
            "rekognition",
            endpoint_url=server.endpoint,
            region_name="eu-west-1",
            aws_access_key_id=server.access_key_id,
            aws_secret_access_key=server.secret,
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
        )
        with pytest.raises(ClientError) as refused:
            elsewhere.list_collections()
        error = refused.value.response["Error"]
        assert error["Code"] == "InvalidSignatureException"
        assert error["Message"].startswith("Credential should be scoped to a valid region")
        assert server.client().list_collections()["CollectionIds"] == []  # us-east-1: served

        for _ in range(30):
            req = urllib.request.Request(server.endpoint + "/", data=b"{}", method="POST")
            with pytest.raises(urllib.error.HTTPError) as unsigned:
                urllib.request.urlopen(req, timeout=30)
            assert unsigned.value.code == 403
            unsigned.value.close()
    finally:
        stop_server(server)
    records = _records(server.data_dir)
    refused_records = [r for r in records if r["kind"] == "access"]
    # the disconnect and the region refusal took 2 of the 3 records; the first unsigned one the third
    assert len(refused_records) == 4
    [summary] = [r for r in refused_records if r["request_id"] is None]
    assert summary["refusals"]["count"] == 29 and summary["refusals"]["total"] == 32
    assert summary["refusals"]["by_code"] == {"MissingAuthenticationTokenException": 29}
    assert AuditLog(server.data_dir).verify().ok
