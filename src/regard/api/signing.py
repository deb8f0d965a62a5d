"""A request's bytes and who signed them: the body read under its size limit and deadline, then
the SigV4 check on a Starlette request, for every route that needs a key.

Every route that takes a body reads it through :func:`read_body`: a declared ``Content-Length``
over the limit is refused before any of the body is read, a streamed body as soon as the bytes
received pass the limit (HTTP 413 ``RequestEntityTooLargeException``), and a body not complete
within its deadline (``REGARD_API_BODY_TIMEOUT``) is refused with HTTP 408
``RequestTimeoutException`` and its connection closed (:func:`closing`). After a 413 the
connection stays open: uvicorn discards the rest of the body as it arrives (it is never held in
memory), so an SDK that sends the whole body before reading the answer still reads its 413.
"""

from __future__ import annotations

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from regard.api.rekognition import sigv4
from regard.api.rekognition.errors import ApiError, ClientDisconnected, RequestTooLarge
from regard.keys import AccessKey, KeyStore


class RequestTimeout(ApiError):
    """The body did not arrive within its deadline (SDKs treat this code as transient and retry)."""

    code = "RequestTimeoutException"
    http_status = 408


#: Statuses after which the server closes the connection: the client stalled, it is not waited for.
CLOSING_STATUSES = frozenset({408})


async def read_body(request: Request, limit: int, timeout: float | None = None) -> bytes:
    """The request body, refused (413) as soon as its declared or received size exceeds ``limit``,
    and (408) when it is not complete ``timeout`` seconds after the request's headers were read
    (None or 0: no deadline)."""
    too_large = f"Request body exceeds the limit of {limit} bytes"
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(too_large)
    chunks: list[bytes] = []
    size = 0
    with anyio.move_on_after(timeout or None) as deadline:
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestTooLarge(too_large)
                chunks.append(chunk)
        except ClientDisconnect:
            # the client went away mid-body: an ordinary event (logged as 499), not a server fault
            raise ClientDisconnected(f"Client disconnected after {size} bytes of the body") from None
    if deadline.cancelled_caught:
        raise RequestTimeout(f"Request body not received within {timeout:g} seconds")
    return b"".join(chunks)


def closing(response: Response) -> Response:
    """``response``, asking the server to close the connection after it when the body did not arrive
    in time (408): a stalled client's connection is not kept for another request."""
    if response.status_code in CLOSING_STATUSES:
        response.headers["connection"] = "close"
    return response


async def authenticate(keys: KeyStore, request: Request, body: bytes, region: str | None = None) -> AccessKey:
    """The key that signed the request (SigV4, service ``rekognition``, credential scoped to
    ``region`` unless None), or the error AWS returns."""
    signed = await run_in_threadpool(
        sigv4.verify,
        keys,
        method=request.method,
        path=request.url.path,
        query=request.url.query,
        headers=request.headers.items(),
        body=body,
        expected_region=region,
    )
    return signed.key
