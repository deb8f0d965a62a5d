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

These handlers authenticate and parse; the decisions and views of the queue, and their audit
records, are :class:`regard.accountability.reviewing.ReviewDesk`'s.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable
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


def review_routes(
    keys: KeyStore,
    guard_of: Callable[[], Guard],
    body_timeout: float | None = None,
    region: str | None = None,
    refusals: RefusalLedger | None = None,
    evidence_retention_days: int | None = None,
) -> list[Route]:
    """The review queue's routes for the API app; a body is read as on ``POST /``
    (:func:`regard.api.signing.read_body`: at most ``MAX_REVIEW_BODY`` bytes, refused with 413 before
    reading when its declared length is larger, 408 past ``body_timeout`` seconds), before the
    signature is checked."""

    async def refused(
        guard: Guard,
        caller: Caller | None,
        request: Request,
        operation: str,
        request_id: str,
        exc: RegardError,
    ) -> RegardError:
        """Record the refusal; before authentication through the per-source ledger, as on ``POST /``."""
        if caller is None and refusals is not None and not exc.audit_recorded:
            return await refuse_unauthenticated(guard, refusals, _source(request), operation, request_id, exc)
        await run_in_threadpool(note_refusal, guard, operation, request_id, None, exc, _source(request))
        return exc

    async def authenticate(request: Request, body: bytes) -> Caller:
        return caller_of(await signed_by(keys, request, body, region))

    async def leads(request: Request) -> Response:
        request_id = str(uuid.uuid4())
        guard = guard_of()
        caller: Caller | None = None
        try:
            caller = await authenticate(request, b"")
            status = request.query_params.get("status", "PENDING_VERIFICATION").upper()
            wanted = None if status == "ALL" else status
            desk = review_desk(guard, evidence_retention_days)
            rows = await run_in_threadpool(desk.list, caller, RequestInfo(request_id), wanted)
            return _json({"Leads": rows}, request_id)
        except RegardError as exc:
            answer = await refused(guard, caller, request, "ReviewList", request_id, exc)
            return error_response(answer, request_id)

    async def decide(request: Request) -> Response:
        request_id = str(uuid.uuid4())
        guard = guard_of()
        lead_id = request.path_params["lead_id"]
        decision = request.path_params["decision"]
        operation = "ReviewConfirm" if decision == "confirm" else "ReviewReject"
        caller: Caller | None = None
        try:
            body = await read_body(request, MAX_REVIEW_BODY, body_timeout)
            caller = await authenticate(request, body)
            if decision not in ("confirm", "reject"):
                raise InvalidParameter("use /confirm or /reject")
            payload = jsonbody.parse(body)  # as on POST /: UTF-8, finite numbers, bounded nesting
            note = payload.get("Note") if isinstance(payload, dict) else None
            if note is not None and not isinstance(note, str):
                raise InvalidParameter("Note must be a string")
            desk = review_desk(guard, evidence_retention_days)
            lead = await run_in_threadpool(
                desk.decide, lead_id, decision, caller, RequestInfo(request_id), note
            )
            return _json(lead, request_id)
        except RegardError as exc:
            answer = await refused(guard, caller, request, operation, request_id, exc)
            return closing(error_response(answer, request_id))

    return [
        Route("/regard/review/leads", leads, methods=["GET"]),
        Route("/regard/review/leads/{lead_id}/{decision}", decide, methods=["POST"]),
    ]
