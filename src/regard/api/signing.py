"""Who signed a request: the SigV4 check on a Starlette request, for every route that needs a key."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from regard.api.rekognition import sigv4
from regard.keys import AccessKey, KeyStore


async def authenticate(keys: KeyStore, request: Request, body: bytes) -> AccessKey:
    """The key that signed the request (SigV4, service ``rekognition``), or the error AWS returns."""
    signed = await run_in_threadpool(
        sigv4.verify,
        keys,
        method=request.method,
        path=request.url.path,
        query=request.url.query,
        headers=request.headers.items(),
        body=body,
    )
    return signed.key
