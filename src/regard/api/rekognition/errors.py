"""The one place where errors become Rekognition's wire format.

AWS JSON 1.1 errors are a JSON body ``{"__type": "<Code>", "message": "..."}`` with
the ``x-amzn-ErrorType`` and ``x-amzn-RequestId`` headers; botocore and the AWS SDK
for JavaScript read the code from either. Errors about authentication live here,
not in :mod:`regard.errors`, because only the API layer authenticates.
"""

from __future__ import annotations

import json
import re

from starlette.responses import Response

from regard.accountability.policy import DEFAULT_PROFILES
from regard.api.rekognition.shapes import service_model
from regard.errors import AccessDenied, ConflictError, RegardError

CONTENT_TYPE = "application/x-amz-json-1.1"


class ApiError(RegardError):
    """An error only the HTTP layer produces (authentication, routing, transport)."""

    #: The access key id a refused request's credential named, unverified (SigV4 refusals).
    claimed_access_key_id: str | None = None


class MissingAuthenticationToken(ApiError):
    code = "MissingAuthenticationTokenException"
    http_status = 403


class UnrecognizedClient(ApiError):
    code = "UnrecognizedClientException"
    http_status = 400


class InvalidSignature(ApiError):
    code = "InvalidSignatureException"
    http_status = 400


class IncompleteSignature(ApiError):
    code = "IncompleteSignatureException"
    http_status = 400


class UnknownOperation(ApiError):
    code = "UnknownOperationException"
    http_status = 400


class SerializationError(ApiError):
    code = "SerializationException"
    http_status = 400


class RequestTooLarge(ApiError):
    code = "RequestEntityTooLargeException"
    http_status = 413


class ProvisionedThroughputExceeded(ApiError):
    """More requests in flight than the server is configured to work on (botocore retries it)."""

    code = "ProvisionedThroughputExceededException"
    http_status = 400


class InternalServerError(ApiError):
    code = "InternalServerError"
    http_status = 500


class ClientDisconnected(ApiError):
    """The client closed the connection before its request was read (nginx's 499; nobody reads
    the answer)."""

    code = "ClientDisconnected"
    http_status = 499


class RefusalsThrottled(ApiError):
    """Too many unauthenticated refusals from one source address in the current window: a
    ThrottlingException, which Rekognition's model marks a server fault, so 503 as :class:`Throttling`."""

    code = "ThrottlingException"
    http_status = 503


#: When an operation's model does not list an error, the modeled error that means the same thing.
_MODELED_ALTERNATIVES: dict[str, type[RegardError]] = {
    # CreateUser on an existing UserId: Rekognition answers ConflictException.
    "ResourceAlreadyExistsException": ConflictError,
}


_NOT_ALLOWED = re.compile(r"^the (?P<profile>[\w.-]+) profile does not allow (?P<op>[A-Za-z]+)$")
_NOT_ALLOWED_COLLECTION = re.compile(r"^the (?P<profile>[\w.-]+) profile does not allow collection ")
_ROLE = re.compile(r"^role '(?P<role>[\w-]+)' may not use the (?P<profile>[\w.-]+) profile$")
_HEADER = re.compile(r"requires (a purpose|a case reference|the images' provenance)")


def access_hint(message: str, operation: str | None) -> str | None:
    """What would allow a call an AccessDenied ``message`` refused (None: the message says it)."""
    if m := _NOT_ALLOWED.match(message):
        op = m["op"]
        allowing = [n for n, p in DEFAULT_PROFILES.items() if n != "admin" and p.allows_operation(op)]
        name = allowing[0] if allowing else "admin"
        role = " --role admin" if name == "admin" else ""
        profiles = ", ".join([*allowing, "admin"])
        return (
            f"a key of a profile that allows {op} may call it (by default: {profiles}): "
            f"`regard keys create --name NAME --profile {name}{role}`, or allow {op} in the "
            f"{m['profile']} profile (`regard policy set {m['profile']} operations ...`)"
        )
    if m := _NOT_ALLOWED_COLLECTION.match(message):
        return (
            f"add the collection to the {m['profile']} profile's collections "
            f"(`regard policy set {m['profile']} collections ...`) or use a key of a profile that allows it"
        )
    if m := _ROLE.match(message):
        profile = DEFAULT_PROFILES.get(m["profile"])
        roles = ", ".join(profile.roles) if profile is not None else "one the policy allows"
        return (
            f"create a key with a role the {m['profile']} profile allows ({roles}): "
            f"`regard keys create --name NAME --profile {m['profile']} --role ROLE`"
        )
    if _HEADER.search(message):
        return "send the named x-regard-* headers with each request (README: from boto3 and the AWS CLI)"
    return None


def with_hint(error: RegardError, operation: str | None) -> RegardError:
    """An AccessDenied whose message ends with what would allow the call, when it does not say so."""
    if not isinstance(error, AccessDenied):
        return error
    hint = access_hint(error.message, operation)
    if hint is None:
        return error
    hinted = AccessDenied(f"{error.message}; to allow it: {hint}")
    hinted.audit_recorded = error.audit_recorded
    return hinted


def for_operation(error: RegardError, operation: str | None) -> RegardError:
    """``error`` as ``operation`` reports it: an equivalent error its model lists, when there is one;
    an AccessDenied ends with what would allow the call (:func:`with_hint`)."""
    error = with_hint(error, operation)
    if operation is None or isinstance(error, ApiError):
        return error
    model = service_model()
    if operation not in model.operation_names:
        return error
    modeled = {shape.name for shape in model.operation_model(operation).error_shapes}
    alternative = _MODELED_ALTERNATIVES.get(error.code)
    if error.code in modeled or alternative is None or alternative.code not in modeled:
        return error
    return alternative(error.message)


def error_response(error: RegardError, request_id: str) -> Response:
    """The HTTP response for ``error``: status, JSON body and the headers SDKs parse."""
    body = json.dumps({"__type": error.code, "message": error.message}).encode()
    return Response(
        body,
        status_code=error.http_status,
        media_type=CONTENT_TYPE,
        headers={"x-amzn-ErrorType": error.code, "x-amzn-RequestId": request_id},
    )
