"""HTTP side of regard's accountability: the guard around each operation, the review endpoints.

Every Rekognition operation runs inside :meth:`regard.accountability.guard.Guard.run` (policy
check, audit record fsync'ed before the response, review leads). Requests refused before
that (bad signature, unknown key, unknown operation, malformed body) are logged too.

Accountability request headers (all optional unless the caller's profile requires them):

``x-regard-purpose``         why the biometric operation is done
``x-regard-case-reference``  the case, file or ticket it belongs to
``x-regard-source``          IndexFaces: where the image comes from
``x-regard-legal-basis``     IndexFaces: the legal basis for processing it

Response headers: ``x-regard-effective-threshold`` and ``x-regard-threshold-fmr`` (the
threshold actually applied and the per-comparison FMR it stands for), ``x-regard-review``
(``PENDING_VERIFICATION`` when a search's candidates became leads) and ``x-regard-audit-seq``.

The two-person review queue, signed with the same SigV4 keys (service ``rekognition``):

``GET  /regard/review/leads?status=PENDING_VERIFICATION|CONFIRMED|REJECTED|ALL``
``POST /regard/review/leads/{lead_id}/confirm``  body ``{"Note": "..."}`` (optional)
``POST /regard/review/leads/{lead_id}/reject``

:class:`SignedRoutes` is what these and the assessment routes (:mod:`regard.api.assessments`)
share: SigV4 authentication, the bounded body, the ``{"Note": ...}`` of a decision, recorded
refusals. The decisions and views of the queue, and their audit records, are
:class:`regard.accountability.reviewing.ReviewDesk`'s.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from regard.accountability.evidence import DEFAULT_RETENTION_DAYS
from regard.accountability.guard import Caller, Guard, RequestInfo
from regard.accountability.reviewing import ReviewDesk
from regard.api import jsonbody
from regard.api.refusals import RefusalLedger
from regard.api.rekognition.errors import CONTENT_TYPE, RefusalsThrottled, error_response
from regard.api.signing import authenticate as signed_by
from regard.api.signing import closing, read_body
from regard.errors import InvalidParameter, RegardError
from regard.keys import AccessKey, KeyStore

MAX_REVIEW_BODY = 16 * 1024


def caller_of(key: AccessKey) -> Caller:
    return Caller(key.access_key_id, key.name, key.role, key.profile)


def refusal_record(
    operation: str | None,
    request_id: str | None,
    access_key_id: str | None,
    exc: RegardError,
    source: str | None = None,
) -> dict[str, Any]:
    """The ``kind: access`` record of a request refused outside the guard: the fields of
    :meth:`regard.accountability.guard.Guard.record_refusal`, plus the client's address
    (``source``) and, for a refused signature, the access key id its credential claimed
    (``claimed_access_key_id``: unverified, whoever sent the request chose it)."""
    record: dict[str, Any] = {
        "kind": "access",
        "request_id": request_id,
        "access_key_id": access_key_id,
        "operation": operation,
        "outcome": "error",
        "error": {"code": exc.code, "message": exc.message},
    }
    claimed = getattr(exc, "claimed_access_key_id", None)
    if claimed is not None and access_key_id is None:
        record["claimed_access_key_id"] = claimed
    if source is not None:
        record["source"] = source
    return record


def note_refusal(
    guard: Guard,
    operation: str | None,
    request_id: str,
    access_key_id: str | None,
    exc: RegardError,
    source: str | None = None,
) -> None:
    """Log a request refused outside the guard (authentication, routing, body); never raises."""
    if exc.audit_recorded:
        return
    with contextlib.suppress(RegardError):  # the refusal stands even if it cannot be logged
        guard.audit.append(refusal_record(operation, request_id, access_key_id, exc, source))
        exc.audit_recorded = True


async def refuse_unauthenticated(
    guard: Guard,
    refusals: RefusalLedger,
    source: str,
    operation: str | None,
    request_id: str,
    exc: RegardError,
) -> RegardError:
    """Account for ``exc``, a refusal before any key was verified, through the per-source ledger
    (:mod:`regard.api.refusals`): its own record, a count in the window's summary, or throttled.
    Writes the summaries of the windows that ended; returns the error to answer with
    (``ThrottlingException``, HTTP 503 as the botocore model makes it a server fault, when throttled)."""
    decision = refusals.refused(source, exc.code)
    answer: RegardError = exc
    if decision == "throttle":
        answer = RefusalsThrottled("Too many unauthenticated requests from this address; retry later")
    records = refusals.due()
    if decision == "record":
        records.append(refusal_record(operation, request_id, None, exc, source))
    await run_in_threadpool(write_records, guard, records)
    exc.audit_recorded = answer.audit_recorded = True  # recorded or counted: no second record
    return answer


def write_records(guard: Guard, records: list[dict[str, Any]]) -> None:
    """Append records made outside the guard (summaries of refusals); never raises."""
    for record in records:
        with contextlib.suppress(RegardError):
            guard.audit.append(record)


def _source(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _json(data: Any, request_id: str) -> Response:
    return Response(
        json.dumps(data, separators=(",", ":")).encode(),
        media_type=CONTENT_TYPE,
        headers={"x-amzn-RequestId": request_id},
    )


def review_desk(guard: Guard, evidence_retention_days: int | None = None) -> ReviewDesk:
    """The review desk of ``guard``'s queue: its audit chain, policy, assessments (the drift
    signal) and evidence (swept after each decision)."""
    days = evidence_retention_days if evidence_retention_days is not None else DEFAULT_RETENTION_DAYS
    return ReviewDesk(
        guard.audit,
        guard.review,
        guard.policies,
        guard.assessments,
        evidence=guard.evidence,
        evidence_retention_days=days,
    )


#: A signed route's work, run in a worker thread: (guard, caller, request, request id) -> JSON.
Work = Callable[[Guard, Caller, Request, str], Any]
#: A signed decision's work: (guard, caller, request, request id, decision, note) -> JSON.
Decision = Callable[[Guard, Caller, Request, str, str, str | None], Any]


@dataclass(frozen=True)
class SignedRoutes:
    """What the signed JSON routes beside ``POST /`` (review, assessments) share: each request is
    authenticated with SigV4 (service ``rekognition``, credential scoped to ``region`` unless None)
    and gets a request id; a body is read as on ``POST /`` (:func:`regard.api.signing.read_body`:
    at most ``max_body`` bytes, 413 before reading when its declared length is larger, 408 past
    ``body_timeout`` seconds) before the signature is checked; every refusal is recorded, before
    authentication through the per-source ledger (``refusals``) as on ``POST /``. The work itself
    (a desk's call, which writes its own audit record) runs in a worker thread."""

    keys: KeyStore
    guard_of: Callable[[], Guard]
    body_timeout: float | None = None
    region: str | None = None
    refusals: RefusalLedger | None = None
    max_body: int = MAX_REVIEW_BODY

    async def _refused(
        self,
        guard: Guard,
        caller: Caller | None,
        request: Request,
        operation: str,
        request_id: str,
        exc: RegardError,
    ) -> RegardError:
        if caller is None and self.refusals is not None and not exc.audit_recorded:
            return await refuse_unauthenticated(
                guard, self.refusals, _source(request), operation, request_id, exc
            )
        await run_in_threadpool(note_refusal, guard, operation, request_id, None, exc, _source(request))
        return exc

    async def _caller(self, request: Request, body: bytes) -> Caller:
        return caller_of(await signed_by(self.keys, request, body, self.region))

    def get(self, operation: str, work: Work) -> Callable[[Request], Awaitable[Response]]:
        """A signed ``GET`` answering ``work``'s JSON; refused as ``operation``."""

        async def endpoint(request: Request) -> Response:
            request_id = str(uuid.uuid4())
            guard = self.guard_of()
            caller: Caller | None = None
            try:
                caller = await self._caller(request, b"")
                return _json(await run_in_threadpool(work, guard, caller, request, request_id), request_id)
            except RegardError as exc:
                answer = await self._refused(guard, caller, request, operation, request_id, exc)
                return error_response(answer, request_id)

        return endpoint

    def decide(
        self, operations: Mapping[str, str], work: Decision
    ) -> Callable[[Request], Awaitable[Response]]:
        """A signed ``POST .../{decision}`` with an optional body ``{"Note": "..."}``: the path's
        ``decision`` must be a key of ``operations`` (decision -> the operation it is recorded as)."""
        choices = list(operations)

        async def endpoint(request: Request) -> Response:
            request_id = str(uuid.uuid4())
            guard = self.guard_of()
            decision = request.path_params["decision"]
            operation = operations.get(decision, operations[choices[-1]])
            caller: Caller | None = None
            try:
                body = await read_body(request, self.max_body, self.body_timeout)
                caller = await self._caller(request, body)
                if decision not in operations:
                    raise InvalidParameter(" or ".join(f"use /{c}" for c in choices))
                payload = jsonbody.parse(body) if body else {}  # as on POST /: UTF-8, bounded
                note = payload.get("Note") if isinstance(payload, dict) else None
                if note is not None and not isinstance(note, str):
                    raise InvalidParameter("Note must be a string")
                result = await run_in_threadpool(work, guard, caller, request, request_id, decision, note)
                return _json(result, request_id)
            except RegardError as exc:
                answer = await self._refused(guard, caller, request, operation, request_id, exc)
                return closing(error_response(answer, request_id))

        return endpoint


def review_routes(signed: SignedRoutes, evidence_retention_days: int | None = None) -> list[Route]:
    """The review queue's routes for the API app."""

    def leads(guard: Guard, caller: Caller, request: Request, request_id: str) -> Any:
        status = request.query_params.get("status", "PENDING_VERIFICATION").upper()
        wanted = None if status == "ALL" else status
        desk = review_desk(guard, evidence_retention_days)
        return {"Leads": desk.list(caller, RequestInfo(request_id), wanted)}

    def decide(
        guard: Guard, caller: Caller, request: Request, request_id: str, decision: str, note: str | None
    ) -> Any:
        desk = review_desk(guard, evidence_retention_days)
        lead_id = request.path_params["lead_id"]
        return desk.decide(lead_id, decision, caller, RequestInfo(request_id), note)

    operations = {"confirm": "ReviewConfirm", "reject": "ReviewReject"}
    return [
        Route("/regard/review/leads", signed.get("ReviewList", leads), methods=["GET"]),
        Route(
            "/regard/review/leads/{lead_id}/{decision}", signed.decide(operations, decide), methods=["POST"]
        ),
    ]
