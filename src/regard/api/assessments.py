"""HTTP side of human-rights impact assessments: reading them, and the assessor's sign-off.

Signed with the same SigV4 keys as ``POST /`` (service ``rekognition``):

``GET  /regard/assessments[?profile=P]``          admin, assessor and operator keys:
                                                   ``{"Assessments": [...]}``
``GET  /regard/assessments/{assessment_id}``       one assessment
``POST /regard/assessments/{assessment_id}/approve``  body ``{"Note": "..."}`` (required);
``POST /regard/assessments/{assessment_id}/reject``   assessor keys only, never the creator's

Each assessment is rendered as :meth:`regard.accountability.assessment.Assessment.to_json`
renders it (``AssessmentId``, ``Status``, ``RecordSha256``, ``Record``, ``Events``) plus
``StaleBecause`` (why it no longer holds under the policy and scoring in force; null while it
does). These handlers authenticate and parse; the decisions, views and their audit records
(kind ``assessment``) are :class:`regard.accountability.assessing.AssessmentDesk`'s. Refusals
before a key is verified are recorded as on ``POST /``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from regard.accountability.assessing import AssessmentDesk
from regard.accountability.guard import Caller, Guard, RequestInfo
from regard.api import jsonbody
from regard.api.accountability import caller_of, note_refusal, refuse_unauthenticated
from regard.api.refusals import RefusalLedger
from regard.api.rekognition.errors import CONTENT_TYPE, error_response
from regard.api.signing import authenticate as signed_by
from regard.api.signing import closing, read_body
from regard.errors import InvalidParameter, RegardError
from regard.keys import KeyStore

MAX_ASSESSMENT_BODY = 16 * 1024


def _json(data: Any, request_id: str) -> Response:
    return Response(
        json.dumps(data, separators=(",", ":")).encode(),
        media_type=CONTENT_TYPE,
        headers={"x-amzn-RequestId": request_id},
    )


def _source(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def desk_of(guard: Guard) -> AssessmentDesk:
    """The desk on the guard's audit chain, assessments and policy; staleness is judged against
    the scoring identity the guard's records name."""

    def scoring() -> Mapping[str, str] | None:
        if guard.service_factory is None:
            return None
        svc = guard.service_factory()
        return {"model": svc.face_model.key, **svc.scorer.identity()}

    return AssessmentDesk(guard.audit, guard.assessments, guard.policies, scoring)


def assessment_routes(
    keys: KeyStore,
    guard_of: Callable[[], Guard],
    body_timeout: float | None = None,
    region: str | None = None,
    refusals: RefusalLedger | None = None,
) -> list[Route]:
    """The assessment routes for the API app (bodies read as the review routes read them)."""

    async def refused(
        guard: Guard,
        caller: Caller | None,
        request: Request,
        operation: str,
        request_id: str,
        exc: RegardError,
    ) -> RegardError:
        if caller is None and refusals is not None and not exc.audit_recorded:
            return await refuse_unauthenticated(guard, refusals, _source(request), operation, request_id, exc)
        await run_in_threadpool(note_refusal, guard, operation, request_id, None, exc, _source(request))
        return exc

    async def authenticate(request: Request, body: bytes) -> Caller:
        return caller_of(await signed_by(keys, request, body, region))

    async def listing(request: Request) -> Response:
        request_id = str(uuid.uuid4())
        guard = guard_of()
        caller: Caller | None = None
        try:
            caller = await authenticate(request, b"")
            profile = request.query_params.get("profile") or None
            rows = await run_in_threadpool(desk_of(guard).list, caller, RequestInfo(request_id), profile)
            return _json({"Assessments": rows}, request_id)
        except RegardError as exc:
            answer = await refused(guard, caller, request, "AssessmentList", request_id, exc)
            return error_response(answer, request_id)

    async def describe(request: Request) -> Response:
        request_id = str(uuid.uuid4())
        guard = guard_of()
        caller: Caller | None = None
        try:
            caller = await authenticate(request, b"")
            found = await run_in_threadpool(
                desk_of(guard).describe,
                request.path_params["assessment_id"],
                caller,
                RequestInfo(request_id),
            )
            return _json(found, request_id)
        except RegardError as exc:
            answer = await refused(guard, caller, request, "AssessmentDescribe", request_id, exc)
            return error_response(answer, request_id)

    async def decide(request: Request) -> Response:
        request_id = str(uuid.uuid4())
        guard = guard_of()
        assessment_id = request.path_params["assessment_id"]
        decision = request.path_params["decision"]
        operation = "AssessmentApprove" if decision == "approve" else "AssessmentReject"
        caller: Caller | None = None
        try:
            body = await read_body(request, MAX_ASSESSMENT_BODY, body_timeout)
            caller = await authenticate(request, body)
            if decision not in ("approve", "reject"):
                raise InvalidParameter("use /approve or /reject")
            payload = jsonbody.parse(body) if body else {}
            note = payload.get("Note") if isinstance(payload, dict) else None
            if note is not None and not isinstance(note, str):
                raise InvalidParameter("Note must be a string")
            decided = await run_in_threadpool(
                desk_of(guard).decide, assessment_id, decision, caller, RequestInfo(request_id), note
            )
            return _json(decided, request_id)
        except RegardError as exc:
            answer = await refused(guard, caller, request, operation, request_id, exc)
            return closing(error_response(answer, request_id))

    return [
        Route("/regard/assessments", listing, methods=["GET"]),
        Route("/regard/assessments/{assessment_id}", describe, methods=["GET"]),
        Route("/regard/assessments/{assessment_id}/{decision}", decide, methods=["POST"]),
    ]
