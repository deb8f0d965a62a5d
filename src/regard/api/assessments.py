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
does). Authentication, bodies and refusals are :class:`regard.api.accountability.SignedRoutes`' (as for
the review routes); the decisions, views and their audit records (kind ``assessment``) are
:class:`regard.accountability.assessing.AssessmentDesk`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from regard.accountability.assessing import AssessmentDesk
from regard.accountability.guard import Caller, Guard, RequestInfo
from regard.api.accountability import SignedRoutes


def desk_of(guard: Guard) -> AssessmentDesk:
    """The desk on the guard's audit chain, assessments and policy; staleness is judged against
    the scoring identity the guard's records name."""

    def scoring() -> Mapping[str, str] | None:
        if guard.service_factory is None:
            return None
        svc = guard.service_factory()
        return {"model": svc.face_model.key, **svc.scorer.identity()}

    return AssessmentDesk(guard.audit, guard.assessments, guard.policies, scoring)


def assessment_routes(signed: SignedRoutes) -> list[Route]:
    """The assessment routes for the API app."""

    def listing(guard: Guard, caller: Caller, request: Request, request_id: str) -> Any:
        profile = request.query_params.get("profile") or None
        return {"Assessments": desk_of(guard).list(caller, RequestInfo(request_id), profile)}

    def describe(guard: Guard, caller: Caller, request: Request, request_id: str) -> Any:
        assessment_id = request.path_params["assessment_id"]
        return desk_of(guard).describe(assessment_id, caller, RequestInfo(request_id))

    def decide(
        guard: Guard, caller: Caller, request: Request, request_id: str, decision: str, note: str | None
    ) -> Any:
        assessment_id = request.path_params["assessment_id"]
        return desk_of(guard).decide(assessment_id, decision, caller, RequestInfo(request_id), note)

    operations = {"approve": "AssessmentApprove", "reject": "AssessmentReject"}
    return [
        Route("/regard/assessments", signed.get("AssessmentList", listing), methods=["GET"]),
        Route(
            "/regard/assessments/{assessment_id}",
            signed.get("AssessmentDescribe", describe),
            methods=["GET"],
        ),
        Route(
            "/regard/assessments/{assessment_id}/{decision}",
            signed.decide(operations, decide),
            methods=["POST"],
        ),
    ]
