"""The one place where errors become Rekognition's wire format.

AWS JSON 1.1 errors are a JSON body ``{"__type": "<Code>", "message": "..."}`` with
the ``x-amzn-ErrorType`` and ``x-amzn-RequestId`` headers; botocore and the AWS SDK
for JavaScript read the code from either. Errors about authentication live here,
not in :mod:`regard.errors`, because only the API layer authenticates.
"""

from __future__ import annotations

import json

from starlette.responses import Response

from regard.api.rekognition.shapes import service_model
from regard.errors import ConflictError, RegardError

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


def for_operation(error: RegardError, operation: str | None) -> RegardError:
    """``error`` as ``operation`` reports it: an equivalent error its model lists, when there is one."""
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
