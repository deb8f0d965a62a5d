"""Verify AWS Signature Version 4 with botocore's own signing code.

The server rebuilds the request as the client signed it (method, path, query, the
headers named in ``SignedHeaders``, the body), lets :class:`botocore.auth.SigV4Auth`
compute the canonical request, string to sign and signature from the stored secret,
and compares the result with the client's in constant time.

``Host``, ``X-Amz-Date``, ``X-Amz-Target`` and every other ``x-amz-*`` and ``x-regard-*`` header
the request carries must be among the signed headers; otherwise the request is refused (HTTP 403,
``InvalidSignatureException``) before the signature is computed, since a header outside the
signature could have been added or changed by anyone on the way.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

from regard.api.rekognition.errors import (
    ApiError,
    IncompleteSignature,
    InvalidSignature,
    MissingAuthenticationToken,
    UnrecognizedClient,
)
from regard.keys import AccessKey, KeyStore

ALGORITHM = "AWS4-HMAC-SHA256"
#: Largest difference between the request's X-Amz-Date and the server clock AWS accepts.
MAX_SKEW = timedelta(minutes=15)
SERVICE = "rekognition"
#: The longest claimed access key id kept in a refusal's record (AccessKeyId's own model bound).
MAX_CLAIMED_KEY_ID = 128

_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+"
    r"Credential=(?P<credential>[^,\s]+)\s*,\s*"
    r"SignedHeaders=(?P<signed>[^,\s]+)\s*,\s*"
    r"Signature=(?P<signature>[0-9a-fA-F]+)\s*$"
)
#: Headers that must be signed whenever they are present: they choose the operation
#: (X-Amz-Target), date the signature (X-Amz-Date) or are trusted and audited (x-regard-*).
#: botocore, the AWS CLI and the AWS SDK for JavaScript sign every header they send but a few
#: transport ones (User-Agent, Expect, X-Amzn-Trace-Id...), including headers added in ``before-sign``.
MUST_SIGN_PREFIXES = ("x-amz-", "x-regard-")
_BAD_SIGNATURE = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)


class _ExactHeadersSigV4(SigV4Auth):  # type: ignore[misc]
    """botocore's SigV4 signer restricted to exactly the headers the client signed."""

    def __init__(self, credentials: Credentials, region: str, signed: list[str]) -> None:
        super().__init__(credentials, SERVICE, region)
        self._signed = signed

    def headers_to_sign(self, request: Any) -> HTTPHeaders:
        header_map = HTTPHeaders()
        for name in self._signed:
            for value in request.headers.get_all(name) or []:
                header_map[name] = value
        return header_map


class UnsignedHeaders(InvalidSignature):
    """A header that must be signed was sent outside SignedHeaders (added or changed after signing)."""

    http_status = 403


class WrongRegion(InvalidSignature):
    """The credential scope names a region other than the server's (``REGARD_REGION``); AWS
    answers this with HTTP 403 and this wording."""

    http_status = 403


@dataclass(frozen=True, slots=True)
class Caller:
    """Who signed a request."""

    key: AccessKey
    region: str


def verify(
    keys: KeyStore,
    *,
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str] | list[tuple[str, str]],
    body: bytes,
    now: datetime | None = None,
    expected_region: str | None = None,
) -> Caller:
    """Check the request's SigV4 signature; return the caller or raise the error AWS returns.

    ``expected_region`` (``REGARD_REGION``): the region the credential scope must name (None: any).
    An error raised once the credential names an access key id carries it as
    ``claimed_access_key_id`` (unverified: whoever sent the request claimed it)."""
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    lower: dict[str, list[str]] = {}
    for name, value in pairs:
        lower.setdefault(name.lower(), []).append(value)
    auth = (lower.get("authorization") or [""])[0].strip()
    if not auth:
        raise MissingAuthenticationToken("Missing Authentication Token")
    match = _AUTH_RE.match(auth)
    if match is None:
        if not auth.startswith(ALGORITHM):
            raise IncompleteSignature(f"Unsupported authorization type; only {ALGORITHM} is accepted.")
        raise IncompleteSignature(
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters."
        )
    parts = match.group("credential").split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise IncompleteSignature(
            f"Credential should be scoped to a valid region: {match.group('credential')}"
        )
    akid, scope_date, region, service, _ = parts
    try:
        return _verify_claimed(
            keys,
            lower,
            match,
            akid,
            scope_date,
            region,
            service,
            method,
            path,
            query,
            body,
            now,
            expected_region,
        )
    except ApiError as exc:
        exc.claimed_access_key_id = akid[:MAX_CLAIMED_KEY_ID]  # kept in the refusal's audit record
        raise


def _verify_claimed(
    keys: KeyStore,
    lower: dict[str, list[str]],
    match: re.Match[str],
    akid: str,
    scope_date: str,
    region: str,
    service: str,
    method: str,
    path: str,
    query: str,
    body: bytes,
    now: datetime | None,
    expected_region: str | None,
) -> Caller:
    """The checks of :func:`verify` once the credential names an access key id (the claimed one)."""
    if expected_region is not None and region != expected_region:
        raise WrongRegion(f"Credential should be scoped to a valid region, not '{region[:64]}'.")
    if service != SERVICE:
        raise InvalidSignature(f"Credential should be scoped to correct service: '{SERVICE}'.")

    stamp = (lower.get("x-amz-date") or [""])[0]
    try:
        signed_at = datetime.strptime(stamp, SIGV4_TIMESTAMP).replace(tzinfo=UTC)
    except ValueError:
        raise IncompleteSignature("Authorization requires a valid X-Amz-Date header.") from None
    if scope_date != stamp[:8]:
        raise InvalidSignature(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date."
        )
    current = now or datetime.now(UTC)
    if abs(current - signed_at) > MAX_SKEW:
        earliest = (current - MAX_SKEW).strftime(SIGV4_TIMESTAMP)
        latest = (current + MAX_SKEW).strftime(SIGV4_TIMESTAMP)
        when = "earlier" if signed_at < current else "later"
        bound = earliest if signed_at < current else latest
        raise InvalidSignature(
            f"Signature expired: {stamp} is now {when} than {bound} "
            f"({current.strftime(SIGV4_TIMESTAMP)} {'-' if when == 'earlier' else '+'} 15 min.)"
        )

    found = keys.secret_for(akid)
    if found is None:
        raise UnrecognizedClient("The security token included in the request is invalid.")
    key, secret = found

    signed = [h.strip().lower() for h in match.group("signed").split(";") if h.strip()]
    if "host" not in signed:
        raise InvalidSignature("'Host' must be a signed header.")
    unsigned = sorted(name for name in lower if name.startswith(MUST_SIGN_PREFIXES) and name not in signed)
    if unsigned:
        raise UnsignedHeaders(
            f"There were headers present in the request which were not signed: {', '.join(unsigned)}"
        )
    content_sha = (lower.get("x-amz-content-sha256") or [""])[0]
    if content_sha and content_sha != hashlib.sha256(body).hexdigest():
        raise InvalidSignature("The provided 'x-amz-content-sha256' header does not match what was computed.")

    signed_headers = HTTPHeaders()
    for name in signed:
        for value in lower.get(name, []):
            signed_headers[name] = value
    host = (lower.get("host") or ["localhost"])[0]
    url = f"http://{host}{path}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, headers=signed_headers, data=body)
    request.context["timestamp"] = stamp
    signer = _ExactHeadersSigV4(Credentials(akid, secret), region, signed)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, match.group("signature").lower()):
        raise InvalidSignature(_BAD_SIGNATURE)
    return Caller(key=key, region=region)
