"""``create_app`` in process: routing, the steps of ``POST /`` and the one error handler.

Requests are SigV4-signed by botocore (a key made with :class:`regard.keys.KeyStore` in a temp
data dir) and handed straight to the ASGI app on an event loop in this process, so these tests
are fast and need no server, socket or model (but the one that compares the command line's audit
record with the API's, which indexes and searches a photo with the session's engine). A request
is held in flight by an operation that waits for the test's signal, never by a sleep. The SDK
suites against a live ``regard serve`` (test_api_live_*.py, test_api_lifecycle.py) stay as they are.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from starlette.applications import Starlette

from regard.accountability.audit import AuditLog
from regard.api.app import create_app, default_max_request_bytes
from regard.api.rekognition.operations import OPERATIONS
from regard.api.rekognition.shapes import service_model
from regard.config import Settings
from regard.errors import (
    ModelUnavailable,
    RegardError,
    ResourceAlreadyExists,
    ResourceNotFound,
    Throttling,
)
from regard.keys import KeyStore
from regard.service import ListCollectionsResult

if TYPE_CHECKING:
    from regard.face.engine import Engine

HOST = "testserver"
JSON_11 = "application/x-amz-json-1.1"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_type(self) -> str:
        """The error code as botocore reads it: the ``__type`` of the body (header agrees)."""
        code: str = self.json()["__type"]
        assert self.headers["x-amzn-errortype"] == code
        return code


async def call_asgi(
    app: Starlette, method: str, path: str, headers: dict[str, str], chunks: Sequence[bytes]
) -> Reply:
    """One HTTP request handed to ``app`` as ASGI messages; the body arrives in ``chunks``."""
    pending = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks or [b""])
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    path, _, query = path.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50123),
        "server": (HOST, 80),
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Reply(start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body)


@dataclass
class InProcess:
    """An app from ``create_app`` on a temp data dir, its event loop, and a key that signs requests."""

    app: Starlette
    portal: BlockingPortal
    data_dir: Path
    access_key_id: str
    secret: str

    def headers(
        self, method: str, path: str, body: bytes, target: str | None, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        """Headers of a request signed with SigV4 by botocore (service ``rekognition``)."""
        headers = {"Host": HOST, **(extra or {})}
        if target is not None:
            headers |= {"X-Amz-Target": target, "Content-Type": JSON_11}
        request = AWSRequest(method=method, url=f"http://{HOST}{path}", data=body, headers=headers)
        SigV4Auth(Credentials(self.access_key_id, self.secret), "rekognition", "us-east-1").add_auth(request)
        return dict(request.headers.items())

    def post(
        self,
        operation: str,
        params: dict[str, Any] | None = None,
        *,
        body: bytes | None = None,
        signed: bool = True,
        extra: dict[str, str] | None = None,
    ) -> Reply:
        """``POST /`` with ``X-Amz-Target: RekognitionService.<operation>`` (or ``operation`` as
        the whole target when it has a dot)."""
        target = operation if "." in operation else f"RekognitionService.{operation}"
        data = body if body is not None else json.dumps(params or {}).encode()
        if signed:
            headers = self.headers("POST", "/", data, target, extra)
        else:
            headers = {"Host": HOST, "X-Amz-Target": target, "Content-Type": JSON_11, **(extra or {})}
        headers["Content-Length"] = str(len(data))
        return self.portal.call(call_asgi, self.app, "POST", "/", headers, [data])

    def get(self, path: str, *, signed: bool = True) -> Reply:
        headers = self.headers("GET", path, b"", None) if signed else {"Host": HOST}
        return self.portal.call(call_asgi, self.app, "GET", path, headers, [])

    def audit(self, request_id: str) -> list[dict[str, Any]]:
        """The audit records of one request."""
        return [r for r in AuditLog(self.data_dir).records() if r.get("request_id") == request_id]


def _perform(monkeypatch: pytest.MonkeyPatch, operation: str, perform: Callable[..., Any]) -> None:
    """Serve ``operation`` with ``perform`` as its typed call (its renderer stays)."""
    monkeypatch.setitem(OPERATIONS, operation, dataclasses.replace(OPERATIONS[operation], perform=perform))


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Any]:
    """A factory: ``make_app(engine=None, **settings)`` starts an in-process app (lifespan
    included) on its own event loop and returns its :class:`InProcess`; all are shut down after
    the test."""
    numbers = itertools.count()
    with contextlib.ExitStack() as stack:

        def make(engine: Engine | None = None, **overrides: Any) -> InProcess:
            data_dir = tmp_path / f"data{next(numbers)}"
            settings = Settings(data_dir=data_dir, cache_dir=tmp_path / "cache", **overrides)
            key, secret = KeyStore(data_dir).create("tests", role="admin", profile="admin")
            app = create_app(settings, engine=engine)
            portal = stack.enter_context(start_blocking_portal())
            stack.enter_context(portal.wrap_async_context_manager(app.router.lifespan_context(app)))
            return InProcess(app, portal, data_dir, key.access_key_id, secret)

        yield make


@pytest.fixture
def served(make_app: Any) -> InProcess:
    app: InProcess = make_app()
    return app


@pytest.fixture
def request_log(caplog: pytest.LogCaptureFixture) -> Any:
    """The request log's JSON lines so far (logger ``regard.api``, event ``request``)."""
    caplog.set_level(logging.INFO, logger="regard.api")

    def lines() -> list[dict[str, Any]]:
        out = []
        for rec in caplog.records:
            if rec.name == "regard.api" and rec.getMessage().startswith("{"):
                data = json.loads(rec.getMessage())
                if data.get("event") == "request":
                    out.append(data)
        return out

    return lines


# -- routes beside POST / -----------------------------------------------------------------------
def test_health_answers_without_authentication(served: InProcess) -> None:
    reply = served.get("/health", signed=False)
    assert reply.status == 200
    assert reply.json()["status"] == "ok"


def test_review_endpoints_stay_routed_and_signed(served: InProcess) -> None:
    assert served.get("/regard/review/leads").json() == {"Leads": []}
    refused = served.get("/regard/review/leads", signed=False)
    assert (refused.status, refused.error_type) == (403, "MissingAuthenticationTokenException")


# -- POST /: success ----------------------------------------------------------------------------
def test_an_operation_answers_with_headers_audit_and_log_line(served: InProcess, request_log: Any) -> None:
    reply = served.post("ListCollections")
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == JSON_11
    assert reply.json()["CollectionIds"] == []
    request_id = reply.headers["x-amzn-requestid"]
    assert float(reply.headers["x-regard-operation-ms"]) >= 0
    [record] = served.audit(request_id)
    assert record["outcome"] == "success"
    assert reply.headers["x-regard-audit-seq"] == str(record["seq"])
    [line] = request_log()
    assert list(line) == [
        "event",
        "request_id",
        "pid",
        "remote",
        "operation",
        "access_key_id",
        "bytes_in",
        "status",
        "operation_ms",
        "total_ms",
    ]
    assert line["request_id"] == request_id
    assert line["pid"] == os.getpid()
    assert line["remote"] == "127.0.0.1"
    assert (line["operation"], line["access_key_id"]) == ("ListCollections", served.access_key_id)
    assert (line["bytes_in"], line["status"]) == (2, 200)


# -- POST /: refusals before the operation ------------------------------------------------------
def test_unsigned_request_is_refused_audited_and_logged(served: InProcess, request_log: Any) -> None:
    reply = served.post("ListCollections", signed=False)
    assert (reply.status, reply.error_type) == (403, "MissingAuthenticationTokenException")
    request_id = reply.headers["x-amzn-requestid"]
    [record] = served.audit(request_id)
    assert record["kind"] == "access"
    assert record["error"]["code"] == "MissingAuthenticationTokenException"
    [line] = request_log()
    assert line["access_key_id"] is None
    assert (line["status"], line["error"]) == (403, "MissingAuthenticationTokenException")
    assert line["message"] == reply.json()["message"]


def test_wrong_secret_is_an_invalid_signature(served: InProcess) -> None:
    served.secret = "not-the-secret"
    reply = served.post("ListCollections")
    assert (reply.status, reply.error_type) == (400, "InvalidSignatureException")


def _unserved_operation() -> str:
    return next(name for name in service_model().operation_names if name not in OPERATIONS)


@pytest.mark.parametrize(
    ("target", "code"),
    [
        ("RekognitionService.NoSuchOperation", "UnknownOperationException"),
        ("SomethingElse.ListCollections", "UnknownOperationException"),
        ("RekognitionService.", "UnknownOperationException"),
        (f"RekognitionService.{_unserved_operation()}", "UnsupportedOperationException"),
    ],
)
def test_a_target_regard_does_not_serve_is_the_rekognition_error(
    served: InProcess, request_log: Any, target: str, code: str
) -> None:
    reply = served.post(target)
    assert (reply.status, reply.error_type) == (400, code)
    [record] = served.audit(reply.headers["x-amzn-requestid"])
    assert (record["kind"], record["error"]["code"]) == ("access", code)
    [line] = request_log()
    assert line["operation"] == (target.removeprefix("RekognitionService.") or target)
    assert line["access_key_id"] == served.access_key_id


def test_body_that_is_not_json_is_a_serialization_error(served: InProcess) -> None:
    reply = served.post("ListCollections", body=b"{not json")
    assert (reply.status, reply.error_type) == (400, "SerializationException")
    reply = served.post("ListCollections", body=b"\xff\xfe")
    assert (reply.status, reply.error_type) == (400, "SerializationException")


def test_parameters_are_validated_against_the_model(served: InProcess) -> None:
    reply = served.post("ListCollections", {"MaxResults": "many"})
    assert (reply.status, reply.error_type) == (400, "InvalidParameterException")


def test_a_bad_accountability_header_is_refused_with_one_audit_record(served: InProcess) -> None:
    reply = served.post("ListCollections", extra={"x-regard-purpose": "x" * 2000})
    assert (reply.status, reply.error_type) == (400, "InvalidParameterException")
    [record] = served.audit(reply.headers["x-amzn-requestid"])
    assert (record["kind"], record["operation"]) == ("access", "ListCollections")


def test_body_over_the_limit_is_413(make_app: Any, request_log: Any) -> None:
    served: InProcess = make_app(max_image_bytes=3)
    limit = default_max_request_bytes(Settings(max_image_bytes=3))
    too_big = b"{" + b" " * limit + b"}"
    # declared by Content-Length: refused before the body is read (and before authentication)
    reply = served.post("ListCollections", body=too_big, signed=False)
    assert (reply.status, reply.error_type) == (413, "RequestEntityTooLargeException")
    assert str(limit) in reply.json()["message"]
    # streamed without a length: refused once the received bytes pass the limit
    half = len(too_big) // 2
    headers = {"Host": HOST, "X-Amz-Target": "RekognitionService.ListCollections"}
    chunks = [too_big[:half], too_big[half:]]
    streamed = served.portal.call(call_asgi, served.app, "POST", "/", headers, chunks)
    assert (streamed.status, streamed.error_type) == (413, "RequestEntityTooLargeException")
    lines = request_log()
    assert [line["status"] for line in lines] == [413, 413]
    assert all("bytes_in" not in line for line in lines)
    assert served.audit(streamed.headers["x-amzn-requestid"])[0]["kind"] == "access"
    # at the limit it is read (and here refused for the missing signature instead)
    at_limit = served.post("ListCollections", body=b"{" + b" " * (limit - 2) + b"}", signed=False)
    assert at_limit.status == 403


def test_over_the_inflight_bound_is_provisioned_throughput_exceeded(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    served: InProcess = make_app(api_max_inflight=1)
    entered, release = threading.Event(), threading.Event()

    def held(ctx: Any, params: dict[str, Any]) -> ListCollectionsResult:
        entered.set()
        assert release.wait(timeout=60), "the test never released the held request"
        return ListCollectionsResult([], [], None)

    _perform(monkeypatch, "ListCollections", held)
    data = b"{}"
    headers = served.headers("POST", "/", data, "RekognitionService.ListCollections")
    first = served.portal.start_task_soon(call_asgi, served.app, "POST", "/", headers, [data])
    try:
        assert entered.wait(timeout=60), "the first request never reached its operation"
        assert served.app.state.api.inflight.count == 1
        second = served.post("DescribeCollection", {"CollectionId": "anything"})
        assert (second.status, second.error_type) == (400, "ProvisionedThroughputExceededException")
        assert "More than 1 requests in flight" in second.json()["message"]
    finally:
        release.set()
    assert first.result(timeout=60).status == 200
    assert served.app.state.api.inflight.count == 0
    # the slot is free again, refusals included
    assert served.post("ListCollections").status == 200
    assert served.app.state.api.inflight.count == 0


# -- POST /: errors raised by the operation -----------------------------------------------------
NEW_USER = {"CollectionId": "c", "UserId": "u"}


@pytest.mark.parametrize(
    ("operation", "params", "error_class", "status", "code"),
    [
        ("ListCollections", {}, ResourceNotFound, 400, "ResourceNotFoundException"),
        ("ListCollections", {}, Throttling, 503, "ThrottlingException"),
        ("ListCollections", {}, ModelUnavailable, 500, "InternalServerError"),
        # CreateUser's model lists ConflictException, not ResourceAlreadyExistsException
        ("CreateUser", NEW_USER, ResourceAlreadyExists, 400, "ConflictException"),
    ],
)
def test_regard_error_in_an_operation_goes_through_the_one_handler(
    served: InProcess,
    monkeypatch: pytest.MonkeyPatch,
    request_log: Any,
    operation: str,
    params: dict[str, Any],
    error_class: type[RegardError],
    status: int,
    code: str,
) -> None:
    message = f"{error_class.__name__} raised by the operation"

    def failing(ctx: Any, p: dict[str, Any]) -> None:
        raise error_class(message)

    _perform(monkeypatch, operation, failing)
    reply = served.post(operation, params)
    assert (reply.status, reply.error_type) == (status, code)
    assert reply.json()["message"] == message
    request_id = reply.headers["x-amzn-requestid"]
    # the guard wrote the failure's record: the handler adds no second one (a change such as
    # CreateUser also wrote its intent before it ran)
    *intent, record = served.audit(request_id)
    assert [r["kind"] for r in intent] == ([] if operation == "ListCollections" else ["intent"])
    assert (record["operation"], record["outcome"], record["error"]["code"]) == (
        operation,
        "error",
        error_class.code,
    )
    [line] = request_log()
    assert (line["status"], line["error"], line["message"]) == (status, code, message)


def test_unexpected_exception_is_internal_server_error_with_request_id_and_traceback(
    served: InProcess, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, request_log: Any
) -> None:
    def broken(ctx: Any, p: dict[str, Any]) -> None:
        raise RuntimeError("boom at the bottom")

    _perform(monkeypatch, "ListCollections", broken)
    reply = served.post("ListCollections")
    assert (reply.status, reply.error_type) == (500, "InternalServerError")
    request_id = reply.headers["x-amzn-requestid"]
    assert request_id in reply.json()["message"]
    assert "boom" not in reply.body.decode()  # the traceback is logged, never sent
    [unhandled] = [
        json.loads(r.getMessage())
        for r in caplog.records
        if r.name == "regard.api" and r.levelno == logging.ERROR
    ]
    assert (unhandled["event"], unhandled["request_id"]) == ("unhandled", request_id)
    assert unhandled["error"] == "RuntimeError"
    assert "RuntimeError: boom at the bottom" in unhandled["traceback"]
    assert "in broken" in unhandled["traceback"]
    [record] = served.audit(request_id)
    assert record["error"]["code"] == "InternalServerError"
    [line] = request_log()
    assert (line["status"], line["error"]) == (500, "InternalServerError")
    assert "message" not in line


# -- one audit record format, from the API and from the command line ------------------------------
def _fields(value: Any) -> Any:
    """A record's keys at every depth, without its values (a list: the distinct shapes of its items)."""
    if isinstance(value, dict):
        return {k: _fields(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted({json.dumps(_fields(v), sort_keys=True) for v in value})
    return None


def test_the_command_line_records_an_operation_as_the_api_does(
    make_app: Any, engine: Engine, fr_images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """IndexFaces and SearchFacesByImage, once over HTTP and once from ``regard index|search`` on
    another data dir: each operation's two records have the same fields, nested ones included
    (parameters, results and their matches, threshold, collection state, scoring), apart from
    values. Only who asked differs: a key over HTTP, ``local:<os user>`` without one locally."""
    from regard.cli.main import main

    photo, probe = fr_images / "obama.jpg", fr_images / "obama2.jpg"
    provenance = ("staff photo", "consent")

    served: InProcess = make_app(engine=engine)
    image = {"Bytes": base64.b64encode(photo.read_bytes()).decode()}
    assert served.post("CreateCollection", {"CollectionId": "people"}).status == 200
    indexed = served.post(
        "IndexFaces",
        {"CollectionId": "people", "Image": image, "ExternalImageId": "obama.jpg", "QualityFilter": "AUTO"},
        extra={"x-regard-source": provenance[0], "x-regard-legal-basis": provenance[1]},
    )
    assert indexed.status == 200, indexed.body
    searched = served.post(
        "SearchFacesByImage",
        {
            "CollectionId": "people",
            "Image": {"Bytes": base64.b64encode(probe.read_bytes()).decode()},
            "MaxFaces": 10,
            "FaceMatchThreshold": 80,
        },
    )
    assert searched.status == 200 and len(searched.json()["FaceMatches"]) == 1, searched.body
    over_http = {r["operation"]: r for r in AuditLog(served.data_dir).records()}

    local_dir = tmp_path / "local"
    for argv in (
        ["collections", "create", "people"],
        ["index", "people", str(photo), "--source-note", provenance[0], "--legal-basis", provenance[1]],
        ["search", "people", str(probe)],
    ):
        code = main([*argv, "--data-dir", str(local_dir), "--json"])
        assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    local = {r["operation"]: r for r in AuditLog(local_dir).records()}

    for operation in ("IndexFaces", "SearchFacesByImage"):
        assert _fields(local[operation]) == _fields(over_http[operation]), operation
        assert (
            len(local[operation]["results"]["matches" if "Search" in operation else "indexed_face_ids"]) == 1
        )
    assert (
        over_http["IndexFaces"]["parameters"]["legal_basis"]
        == local["IndexFaces"]["parameters"]["legal_basis"]
    )
    assert over_http["SearchFacesByImage"]["threshold"]["requested"] == 80
    assert local["SearchFacesByImage"]["threshold"]["requested"] == 80
    who = [
        (r["access_key_id"], r["principal"], r["profile"])
        for r in (over_http["IndexFaces"], local["IndexFaces"])
    ]
    assert who[0] == (served.access_key_id, "tests", "admin")
    assert who[1][0] is None and who[1][1].startswith("local:") and who[1][2] == "local"
