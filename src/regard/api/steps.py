"""The steps of one Rekognition request on ``POST /``, each on its own.

:func:`regard.api.app.rekognition_endpoint` runs them in order:

1. :class:`Exchange` names the request (its id, the operation in ``X-Amz-Target``) and
   collects what :func:`log_request` writes as the request's one JSON log line;
2. :func:`read_body` (:mod:`regard.api.signing`) reads the body up to the size limit and within
   its deadline (``REGARD_API_BODY_TIMEOUT``);
3. :func:`regard.api.signing.authenticate` checks the SigV4 signature against :mod:`regard.keys`;
4. :class:`InflightLimit` counts requests in flight and refuses one beyond the bound: only requests
   whose body has been read and whose signature holds count, so slow or unauthenticated clients
   cannot take the slots of authenticated work;
5. :func:`route_and_validate` finds the operation, parses the body (:mod:`regard.api.jsonbody`:
   UTF-8 JSON without NaN or Infinity, lone surrogates or nesting beyond 64) and checks it against
   botocore's model;
6. :class:`Invoke` runs the operation's typed call inside the accountability guard and renders
   and serialises its result.

A step reports failure by raising a :class:`regard.errors.RegardError`;
:mod:`regard.api.errors_http` turns it into the response.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from regard.accountability.guard import Guard, RequestInfo
from regard.api import jsonbody
from regard.api.accountability import caller_of
from regard.api.rekognition import operations, shapes
from regard.api.rekognition.errors import (
    CONTENT_TYPE,
    ProvisionedThroughputExceeded,
    UnknownOperation,
)
from regard.api.rekognition.operations import OPERATIONS, ApiOperation, Context
from regard.api.rekognition.s3 import S3Images
from regard.api.signing import read_body as read_body  # the body-reading step, shared by every route
from regard.errors import RegardError, UnsupportedOperation
from regard.face.engine import Engine
from regard.keys import AccessKey
from regard.service import Service

if TYPE_CHECKING:
    from regard.video.jobs import VideoJobs

log = logging.getLogger("regard.api")

TARGET_PREFIX = "RekognitionService."


@dataclass
class Exchange:
    """One request on its way through the steps: what the error handler and the request log need."""

    request: Request
    request_id: str
    #: The ``X-Amz-Target`` header as sent ("" when absent).
    target: str
    #: What follows ``RekognitionService.`` in it, or None when it does not start so.
    operation: str | None
    started: float
    access_key_id: str | None = None
    #: The access key id a refused signature claimed (unverified), for the refusal's record.
    claimed_access_key_id: str | None = None
    #: Whether the guard has been asked to write this request's audit record (it writes one
    #: whatever the outcome), so that the error handler does not write a second.
    audited: bool = False
    bytes_in: int | None = None
    operation_ms: float = 0.0
    status: int | None = None
    error: str | None = None
    message: str | None = None

    @property
    def source(self) -> str:
        """The client's address as the server saw it (the proxy's, behind a proxy)."""
        client = self.request.client
        return client.host if client else "unknown"

    @classmethod
    def begin(cls, request: Request) -> Exchange:
        """A new request id and the operation ``X-Amz-Target`` names (``RekognitionService.<Name>``)."""
        target = request.headers.get("x-amz-target", "")
        operation = target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else None
        return cls(
            request=request,
            request_id=str(uuid.uuid4()),
            target=target,
            operation=operation,
            started=time.perf_counter(),
        )


def log_request(exchange: Exchange) -> None:
    """Write the request's one JSON line (logger ``regard.api``): ids, operation, status, error and
    timings, never secrets or image data."""
    if not log.isEnabledFor(logging.INFO):
        return
    request = exchange.request
    record: dict[str, Any] = {
        "event": "request",
        "request_id": exchange.request_id,
        "pid": os.getpid(),
        "remote": request.client.host if request.client else None,
        "operation": exchange.operation or exchange.target or None,
        "access_key_id": exchange.access_key_id,
    }
    if exchange.claimed_access_key_id is not None:
        record["claimed_access_key_id"] = exchange.claimed_access_key_id  # refused, unverified
    if exchange.bytes_in is not None:
        record["bytes_in"] = exchange.bytes_in
    record["status"] = exchange.status
    if exchange.error is not None:
        record["error"] = exchange.error
    if exchange.message is not None:
        record["message"] = exchange.message
    record["operation_ms"] = round(exchange.operation_ms, 3)
    record["total_ms"] = round((time.perf_counter() - exchange.started) * 1000.0, 3)
    log.info(json.dumps(record, separators=(",", ":"), default=str))


class InflightLimit:
    """The requests one process works on at once (``REGARD_API_MAX_INFLIGHT``); one more is refused
    with ProvisionedThroughputExceededException, which botocore retries with backoff."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.count = 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Count the request as in flight until its response is ready, whether refused or not."""
        self.count += 1  # one event loop per process: no lock needed
        try:
            yield
        finally:
            self.count -= 1

    def admit(self) -> None:
        """Refuse the request if it makes more than ``bound`` in flight."""
        if self.count > self.bound:
            raise ProvisionedThroughputExceeded(
                f"More than {self.bound} requests in flight; retry with backoff"
            )


@dataclass(frozen=True)
class Routed:
    """A request's operation, its typed call and renderer, and its validated parameters."""

    operation: str
    op: ApiOperation[Any]
    params: dict[str, Any]


def route_and_validate(exchange: Exchange, body: bytes) -> Routed:
    """The operation ``X-Amz-Target`` names, if regard serves it, and the body checked against its
    input shape in botocore's model (blobs decoded)."""
    operation = exchange.operation
    if operation is None:
        raise UnknownOperation(f"X-Amz-Target {exchange.target!r} is not a RekognitionService operation")
    op = OPERATIONS.get(operation)
    if op is None:
        if operation in shapes.service_model().operation_names:
            raise UnsupportedOperation(
                f"regard does not support the Rekognition operation {operation}; "
                "see docs/rekognition-coverage.md for the operations it serves"
            )
        raise UnknownOperation(f"Unknown operation {operation}")
    # UTF-8 only; no NaN or Infinity, lone surrogates or nesting past jsonbody.MAX_DEPTH
    return Routed(operation, op, shapes.validate(operation, jsonbody.parse(body)))


class Invoke:
    """Run a routed operation's typed call in a worker thread inside the accountability guard
    (policy before, audit record after, review leads), then render what the guard returns and
    answer it as AWS JSON 1.1."""

    def __init__(
        self,
        guard: Guard,
        engine: Engine,
        s3: S3Images,
        service_factory: Callable[[], Service],
        video_jobs: VideoJobs | None = None,
    ) -> None:
        self.guard = guard
        self.engine = engine
        self.s3 = s3
        self.service_factory = service_factory
        self.video_jobs = video_jobs

    async def __call__(self, exchange: Exchange, routed: Routed, key: AccessKey) -> Response:
        """The operation's response, with the request id, its time and the guard's headers."""
        ctx = Context(
            engine=self.engine,
            s3=self.s3,
            service_factory=self.service_factory,
            caller=key.access_key_id,
            request_id=exchange.request_id,
            video_jobs=self.video_jobs,
        )
        started = time.perf_counter()
        result, accountability_headers = await run_in_threadpool(self._guarded, exchange, routed, key, ctx)
        exchange.operation_ms = (time.perf_counter() - started) * 1000.0
        return Response(
            json.dumps(result, separators=(",", ":")).encode(),
            media_type=CONTENT_TYPE,
            headers={
                "x-amzn-RequestId": exchange.request_id,
                "x-regard-operation-ms": f"{exchange.operation_ms:.3f}",
                **accountability_headers,
            },
        )

    def _guarded(
        self, exchange: Exchange, routed: Routed, key: AccessKey, ctx: Context
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Read the accountability headers (a bad one is refused and audited here), run the typed
        call under the guard, which writes the audit record of its success or failure, and render
        the result the guard returns."""
        try:
            info = RequestInfo.from_headers(exchange.request_id, exchange.request.headers)
        except RegardError as exc:
            self.guard.record_refusal(
                routed.operation, RequestInfo(exchange.request_id), key.access_key_id, exc
            )
            exc.audit_recorded = True
            raise
        exchange.audited = True  # the guard writes the record of a success or a failure
        out = operations.run(self.guard, routed.op, routed.params, caller_of(key), info, ctx)
        return operations.respond(routed.op, out, routed.params), out.headers
