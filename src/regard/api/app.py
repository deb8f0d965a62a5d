"""The ASGI application: Amazon Rekognition's AWS JSON 1.1 protocol on ``POST /``.

Every request is size-limited, SigV4-verified against :mod:`regard.keys`, routed on
``X-Amz-Target: RekognitionService.<Operation>``, validated against botocore's model
and answered by :mod:`regard.api.rekognition.operations`. ``GET /health`` answers
without authentication. Each request produces one JSON log line (logger
``regard.api``) with its request id, operation, status, error code and timings;
secrets and image data are never logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import time
import traceback
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from regard import __version__
from regard.accountability.guard import Guard
from regard.api.accountability import guarded_call, note_refusal, review_routes
from regard.api.rekognition import shapes, sigv4
from regard.api.rekognition.errors import (
    CONTENT_TYPE,
    InternalServerError,
    ProvisionedThroughputExceeded,
    RequestTooLarge,
    SerializationError,
    UnknownOperation,
    error_response,
    for_operation,
)
from regard.api.rekognition.operations import OPERATIONS, Context
from regard.api.rekognition.s3 import S3Images
from regard.config import Settings
from regard.engine import Engine
from regard.errors import RegardError, UnsupportedOperation
from regard.keys import KeyStore
from regard.service import Service

log = logging.getLogger("regard.api")

TARGET_PREFIX = "RekognitionService."


def default_max_request_bytes(settings: Settings) -> int:
    """Room for two base64-encoded images at the byte limit (CompareFaces) plus the JSON around them."""
    return 2 * math.ceil(settings.max_image_bytes * 4 / 3) + 64 * 1024


@dataclass
class ApiState:
    """Everything one server process shares between requests."""

    settings: Settings
    keys: KeyStore
    engine: Engine
    s3: S3Images
    max_request_bytes: int
    inflight: int = 0
    _service: Service | None = None
    _service_lock: threading.Lock = field(default_factory=threading.Lock)

    def service(self) -> Service:
        """The collection service, opened on first use."""
        with self._service_lock:
            if self._service is None:
                database_url = getattr(self.settings, "database_url", None) or None
                self._service = Service.open(
                    self.settings.data_dir, engine=self.engine, database_url=database_url
                )
            return self._service

    def warm_up(self) -> None:
        """Load the detector, embedder and scoring parameters now rather than on the first request
        (a broken or mismatched REGARD_SCORING_DIR fails at start-up, not on a search)."""
        self.engine.detector()
        _ = self.engine.embedder
        _ = self.engine.scorer

    def close(self) -> None:
        with self._service_lock:
            if self._service is not None:
                self._service.close()
            self._service = None


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _log(record: dict[str, Any]) -> None:
    if log.isEnabledFor(logging.INFO):
        log.info(json.dumps(record, separators=(",", ":"), default=str))


def create_app(
    settings: Settings | None = None, *, engine: Engine | None = None, warm_up: bool = False
) -> Starlette:
    """A Starlette app serving the Rekognition protocol from ``settings.data_dir``.

    With ``warm_up`` the models load before the server accepts requests.
    """
    settings = settings or Settings.from_env()
    state = ApiState(
        settings=settings,
        keys=KeyStore(settings.data_dir),
        engine=engine or Engine(settings),
        s3=S3Images(settings),
        max_request_bytes=default_max_request_bytes(settings),
    )
    # policy before, audit record after, review leads: regard.accountability (docs/accountability.md)
    guard = Guard(settings.data_dir, service_factory=state.service)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    async def dispatch(request: Request) -> Response:
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        record: dict[str, Any] = {
            "event": "request",
            "request_id": request_id,
            "pid": os.getpid(),
            "remote": request.client.host if request.client else None,
            "operation": None,
            "access_key_id": None,
        }
        target = request.headers.get("x-amz-target", "")
        operation = target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else None
        record["operation"] = operation or target or None
        op_ms = 0.0
        state.inflight += 1  # one event loop per process: no lock needed
        try:
            if state.inflight > state.settings.api_max_inflight:
                raise ProvisionedThroughputExceeded(
                    f"More than {state.settings.api_max_inflight} requests in flight; retry with backoff"
                )
            try:
                body = await _read_body(request, state.max_request_bytes)
            except _TooLarge:
                raise RequestTooLarge(
                    f"Request body exceeds the limit of {state.max_request_bytes} bytes"
                ) from None
            record["bytes_in"] = len(body)
            caller = await run_in_threadpool(
                sigv4.verify,
                state.keys,
                method=request.method,
                path=request.url.path,
                query=request.url.query,
                headers=request.headers.items(),
                body=body,
            )
            record["access_key_id"] = caller.key.access_key_id
            if operation is None:
                raise UnknownOperation(f"X-Amz-Target {target!r} is not a RekognitionService operation")
            fn = OPERATIONS.get(operation)
            if fn is None:
                if operation in shapes.service_model().operation_names:
                    raise UnsupportedOperation(
                        f"regard does not support the Rekognition operation {operation}; "
                        "see docs/rekognition-coverage.md for the operations it serves"
                    )
                raise UnknownOperation(f"Unknown operation {operation}")
            try:
                raw = json.loads(body or b"{}")
            except (ValueError, UnicodeDecodeError):
                raise SerializationError("Request body is not valid JSON") from None
            params = shapes.validate(operation, raw)
            ctx = Context(
                engine=state.engine,
                s3=state.s3,
                service_factory=state.service,
                caller=caller.key.access_key_id,
                request_id=request_id,
            )
            op_started = time.perf_counter()
            result, accountability_headers = await run_in_threadpool(
                guarded_call,
                guard,
                operation,
                params,
                caller.key,
                request_id,
                request.headers,
                lambda p: fn(ctx, p),
            )
            op_ms = (time.perf_counter() - op_started) * 1000.0
            payload = json.dumps(result, separators=(",", ":")).encode()
            response = Response(
                payload,
                media_type=CONTENT_TYPE,
                headers={
                    "x-amzn-RequestId": request_id,
                    "x-regard-operation-ms": f"{op_ms:.3f}",
                    **accountability_headers,
                },
            )
            record["status"] = 200
        except RegardError as exc:
            await run_in_threadpool(note_refusal, guard, operation, request_id, record["access_key_id"], exc)
            error = for_operation(exc, operation)
            response = error_response(error, request_id)
            record["status"] = error.http_status
            record["error"] = error.code
            record["message"] = error.message
        except Exception as exc:
            log.error(
                json.dumps(
                    {
                        "event": "unhandled",
                        "request_id": request_id,
                        "error": type(exc).__name__,
                        "traceback": traceback.format_exc(),
                    }
                )
            )
            response = error_response(
                InternalServerError(f"Internal server error (request {request_id})"), request_id
            )
            record["status"] = 500
            record["error"] = "InternalServerError"
        finally:
            state.inflight -= 1
        record["operation_ms"] = round(op_ms, 3)
        record["total_ms"] = round((time.perf_counter() - started) * 1000.0, 3)
        _log(record)
        return response

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if warm_up:
            await run_in_threadpool(state.warm_up)
        yield
        await run_in_threadpool(state.close)

    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/", dispatch, methods=["POST"]),
            *review_routes(state.keys, lambda: guard),
        ],
        lifespan=lifespan,
    )
    app.state.api = state
    return app


def app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory regard.api.app:app_from_env`` (settings from REGARD_*)."""
    return create_app(warm_up=os.environ.get("REGARD_WARM_UP", "1") != "0")
