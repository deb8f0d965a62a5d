"""The ASGI application: Amazon Rekognition's AWS JSON 1.1 protocol on ``POST /``.

Every request's body is read under its size limit and deadline, SigV4-verified against
:mod:`regard.keys`, counted against the in-flight bound, routed on
``X-Amz-Target: RekognitionService.<Operation>``, validated against botocore's model and
answered by :mod:`regard.api.rekognition.operations` inside the accountability guard: the steps
of :mod:`regard.api.steps`, composed in :func:`rekognition_endpoint`. Whatever a step raises is
answered by the one handler of :mod:`regard.api.errors_http`. Each request produces one JSON log
line (logger ``regard.api``) with its request id, pid, operation, status, error code and timings;
secrets and image data are never logged. Refusals before a key is verified are recorded,
counted or throttled per source address (:mod:`regard.api.refusals`); their summaries are
written when a window ends and at shutdown. ``GET /health`` answers without authentication; the
review queue's endpoints (:func:`regard.api.accountability.review_routes`) sit beside ``POST /``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from regard import __version__
from regard.accountability.guard import Guard
from regard.api.accountability import SignedRoutes, review_routes, write_records
from regard.api.assessments import assessment_routes
from regard.api.console import console_routes
from regard.api.errors_http import ErrorHandler
from regard.api.refusals import RefusalLedger
from regard.api.rekognition.s3 import S3Images
from regard.api.signing import authenticate, closing
from regard.api.steps import (
    Exchange,
    InflightLimit,
    Invoke,
    log_request,
    read_body,
    route_and_validate,
)
from regard.config import Settings
from regard.face.engine import Engine
from regard.keys import KeyStore
from regard.service import Service
from regard.video.jobs import VideoJobs
from regard.workspace import Workspace

logger = logging.getLogger("regard.workspace")


def default_max_request_bytes(settings: Settings) -> int:
    """Room for two base64-encoded images at the byte limit (CompareFaces) plus the JSON around them."""
    return 2 * math.ceil(settings.max_image_bytes * 4 / 3) + 64 * 1024


@dataclass
class ApiState:
    """Everything one server process shares between requests."""

    settings: Settings
    #: Where the state is: the data directory, or the PostgreSQL database every node shares.
    workspace: Workspace
    keys: KeyStore
    engine: Engine
    s3: S3Images
    max_request_bytes: int
    inflight: InflightLimit
    #: Unauthenticated refusals per source address: recorded, counted or throttled.
    refusals: RefusalLedger
    #: Stored-video jobs and their worker pool (set once the guard exists).
    video_jobs: VideoJobs | None = None
    _service: Service | None = None
    _service_lock: threading.Lock = field(default_factory=threading.Lock)

    def service(self) -> Service:
        """The collection service, opened on first use."""
        with self._service_lock:
            if self._service is None:
                self._service = self.workspace.service(self.engine)
            return self._service

    def warm_up(self) -> None:
        """Load the detector, embedder and scoring parameters now rather than on the first request
        (a broken or mismatched REGARD_SCORING_DIR fails at start-up, not on a search)."""
        self.engine.detector()
        _ = self.engine.embedder
        _ = self.engine.scorer

    def close(self) -> None:
        """Stop the video workers (a running job resumes at the next start), close the collection
        service, if it was opened."""
        if self.video_jobs is not None:
            self.video_jobs.close(wait=True)
        with self._service_lock:
            if self._service is not None:
                self._service.close()
            self._service = None
        self.workspace.close()


def rekognition_endpoint(state: ApiState, guard: Guard) -> Callable[[Request], Awaitable[Response]]:
    """``POST /``: the steps of one Rekognition request (:mod:`regard.api.steps`), in the order they
    run, and the one error handler (:mod:`regard.api.errors_http`) for whatever a step raises."""
    inflight = state.inflight
    invoke = Invoke(guard, state.engine, state.s3, state.service, state.video_jobs)
    handle_error = ErrorHandler(guard, state.refusals)
    region = state.settings.region or None

    async def endpoint(request: Request) -> Response:
        exchange = Exchange.begin(request)  # request id, X-Amz-Target
        try:
            # 413 beyond the size limit, 408 past the body deadline; neither counts as in flight
            body = await read_body(request, state.max_request_bytes, state.settings.api_body_timeout)
            exchange.bytes_in = len(body)
            key = await authenticate(state.keys, request, body, region)  # SigV4, REGARD_REGION
            exchange.access_key_id = key.access_key_id
        except Exception as exc:
            response = closing(await handle_error(exc, exchange))
        else:
            # only a read, signed request counts, until its response is ready (refusals included)
            with inflight.hold():
                try:
                    inflight.admit()  # ProvisionedThroughputExceededException beyond the bound
                    routed = route_and_validate(exchange, body)  # operation and its parameters
                    response = await invoke(exchange, routed, key)  # guard, operation, JSON result
                    exchange.status = response.status_code
                except Exception as exc:
                    response = await handle_error(exc, exchange)
        log_request(exchange)
        return response

    return endpoint


def create_app(
    settings: Settings | None = None, *, engine: Engine | None = None, warm_up: bool = False
) -> Starlette:
    """A Starlette app serving the Rekognition protocol from ``settings.data_dir``.

    With ``warm_up`` the models load before the server accepts requests.
    """
    settings = settings or Settings.from_env()
    workspace = Workspace(settings)
    state = ApiState(
        settings=settings,
        workspace=workspace,
        keys=workspace.keys(),
        engine=engine or Engine(settings),
        s3=S3Images(settings),
        max_request_bytes=default_max_request_bytes(settings),
        inflight=InflightLimit(settings.api_max_inflight),
        refusals=RefusalLedger(
            interval=settings.api_refusal_interval,
            records=settings.api_refusal_records,
            throttle=settings.api_refusal_throttle,
        ),
    )
    # policy before, audit record after, review leads: regard.accountability (docs/accountability.md)
    guard = workspace.guard(state.service)
    state.video_jobs = VideoJobs(
        workspace.video_jobs(),
        settings=settings,
        engine=state.engine,
        guard=guard,
        service_factory=state.service,
    )
    logger.info("regard: state in %s", workspace.describe())

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    async def flush_refusals(everything: bool = False) -> None:
        await run_in_threadpool(write_records, guard, state.refusals.due(everything=everything))

    async def flush_ended_windows() -> None:
        """Write the summaries of windows that ended even when their source sends nothing more."""
        while True:
            await asyncio.sleep(max(1.0, min(5.0, settings.api_refusal_interval / 4)))
            await flush_refusals()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if warm_up:
            await run_in_threadpool(state.warm_up)
        if state.video_jobs is not None:  # jobs a stopped server left IN_PROGRESS: run again or fail
            await run_in_threadpool(state.video_jobs.resume)
        flusher = asyncio.get_running_loop().create_task(flush_ended_windows())
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await flush_refusals(everything=True)  # at shutdown: every open window's summary
            await run_in_threadpool(state.close)

    # the signed JSON routes beside POST / (review queue, assessments)
    signed = SignedRoutes(
        state.keys, lambda: guard, settings.api_body_timeout, settings.region or None, state.refusals
    )
    app = Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/", rekognition_endpoint(state, guard), methods=["POST"]),
            *review_routes(signed, settings.evidence_retention_days),
            *assessment_routes(signed),
            *console_routes(workspace, state.keys, lambda: guard, settings, state.refusals),
        ],
        lifespan=lifespan,
    )
    app.state.api = state
    return app


def app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory regard.api.app:app_from_env`` (settings from REGARD_*)."""
    return create_app(warm_up=os.environ.get("REGARD_WARM_UP", "1") != "0")
