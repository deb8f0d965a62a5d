"""Issue 15 hardening, finding 10: headers outside the signature are refused, over a live server.

SigV4 binds only the headers named in SignedHeaders. A request signed over ``host;x-amz-date``
once let anyone on the way change ``X-Amz-Target`` (DescribeCollection became DeleteCollection)
or add ``x-regard-*`` headers, which are then trusted and audited. Now X-Amz-Target, X-Amz-Date
and every ``x-amz-*`` and ``x-regard-*`` header present must be signed (HTTP 403,
InvalidSignatureException); what botocore signs by default (every header but a few transport
ones, and any header added in ``before-sign``) keeps working.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

from live_server import LiveServer, post_json, start_server, stop_server
from regard.accountability.audit import AuditLog
from regard.api.rekognition import sigv4
from regard.api.rekognition.errors import InvalidSignature
from regard.keys import KeyStore

JSON_11 = "application/x-amz-json-1.1"
BODY = json.dumps({"CollectionId": "keep"}).encode()


class _OnlySigV4(SigV4Auth):  # type: ignore[misc]
    """A client that signs only the headers in ``ONLY`` (a valid signature over fewer headers)."""

    ONLY: frozenset[str] = frozenset({"host", "x-amz-date"})

    def headers_to_sign(self, request: Any) -> HTTPHeaders:
        headers = super().headers_to_sign(request)
        for name in list(headers.keys()):
            if name not in self.ONLY:
                del headers[name]
        return headers


def _signed(server: LiveServer, target: str, signer: type[SigV4Auth] = SigV4Auth) -> dict[str, str]:
    req = AWSRequest(
        method="POST",
        url=server.endpoint + "/",
        data=BODY,
        headers={
            "Content-Type": JSON_11,
            "X-Amz-Target": f"RekognitionService.{target}",
            "Host": server.endpoint.removeprefix("http://"),
        },
    )
    signer(Credentials(server.access_key_id, server.secret), "rekognition", "us-east-1").add_auth(req)
    return dict(req.headers)


def _signed_headers(headers: dict[str, str]) -> list[str]:
    return headers["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live = start_server(tmp_path / "data")
    try:
        live.client().create_collection(CollectionId="keep")
        yield live
    finally:
        stop_server(live)


def test_target_changed_after_signing_is_refused_and_the_collection_stays(server: LiveServer) -> None:
    headers = _signed(server, "DescribeCollection", _OnlySigV4)
    assert _signed_headers(headers) == ["host", "x-amz-date"]
    headers["X-Amz-Target"] = "RekognitionService.DeleteCollection"  # after signing
    status, out = post_json(server.endpoint + "/", "POST", headers, BODY)
    assert status == 403 and out["__type"] == "InvalidSignatureException", out
    assert "not signed: x-amz-target" in out["message"]
    # The same signature over host;x-amz-date is refused untampered too: the target is not bound.
    status, out = post_json(
        server.endpoint + "/", "POST", _signed(server, "DescribeCollection", _OnlySigV4), BODY
    )
    assert status == 403 and out["__type"] == "InvalidSignatureException"
    # Signed by botocore as it signs by default, a changed target breaks the signature itself.
    headers = _signed(server, "DescribeCollection")
    assert {"host", "x-amz-date", "x-amz-target", "content-type"} <= set(_signed_headers(headers))
    headers["X-Amz-Target"] = "RekognitionService.DeleteCollection"
    status, out = post_json(server.endpoint + "/", "POST", headers, BODY)
    assert out["__type"] == "InvalidSignatureException" and "does not match" in out["message"]
    assert server.client().describe_collection(CollectionId="keep")["FaceCount"] == 0
    records = list(AuditLog(server.data_dir).records())
    assert not [r for r in records if r.get("operation") == "DeleteCollection" and r["outcome"] == "success"]


def test_x_amz_date_must_be_signed(server: LiveServer) -> None:
    class HostOnly(_OnlySigV4):
        ONLY = frozenset({"host", "x-amz-target"})

    headers = _signed(server, "DescribeCollection", HostOnly)
    assert "x-amz-date" not in _signed_headers(headers)
    status, out = post_json(server.endpoint + "/", "POST", headers, BODY)
    assert status == 403 and out["__type"] == "InvalidSignatureException"
    assert "not signed: x-amz-date" in out["message"]


def test_regard_header_added_after_signing_is_refused(server: LiveServer) -> None:
    headers = _signed(server, "DescribeCollection")
    headers["x-regard-purpose"] = "added on the way"
    status, out = post_json(server.endpoint + "/", "POST", headers, BODY)
    assert status == 403 and out["__type"] == "InvalidSignatureException", out
    assert "not signed: x-regard-purpose" in out["message"]
    assert all(r.get("purpose") != "added on the way" for r in AuditLog(server.data_dir).records())


def test_boto3_with_headers_added_before_signing_still_works(server: LiveServer) -> None:
    client = server.client()
    added = {"x-regard-purpose": "staff audit", "x-regard-case-reference": "CASE-15"}

    def add(request: Any, **_: Any) -> None:
        for name, value in added.items():
            request.headers[name] = value

    client.meta.events.register("before-sign.rekognition.*", add)
    seen: list[str] = []

    def sent(request: Any, **_: Any) -> None:
        auth = request.headers["Authorization"]
        seen.append(auth.decode() if isinstance(auth, bytes) else auth)

    client.meta.events.register("before-send.rekognition.*", sent)
    reply = client.describe_collection(CollectionId="keep")
    assert reply["ResponseMetadata"]["HTTPStatusCode"] == 200
    signed = seen[-1].split("SignedHeaders=")[1].split(",")[0].split(";")
    assert {"x-regard-purpose", "x-regard-case-reference", "x-amz-target", "x-amz-date"} <= set(signed)
    seq = reply["ResponseMetadata"]["HTTPHeaders"]["x-regard-audit-seq"]
    record = next(r for r in AuditLog(server.data_dir).records() if str(r["seq"]) == seq)
    assert record["purpose"] == "staff audit" and record["case_reference"] == "CASE-15"


def test_unsigned_amz_header_is_refused_by_verify(tmp_path: Path) -> None:
    """The rule in sigv4.verify itself: any x-amz-* header (here a security token) present but
    unsigned is refused before the signature is computed; transport headers need no signature."""
    store = KeyStore(tmp_path)
    key, secret = store.create("k")
    req = AWSRequest(
        method="POST",
        url="http://127.0.0.1:9000/",
        data=BODY,
        headers={
            "Content-Type": JSON_11,
            "X-Amz-Target": "RekognitionService.ListCollections",
            "Host": "127.0.0.1:9000",
        },
    )
    SigV4Auth(Credentials(key.access_key_id, secret), "rekognition", "us-east-1").add_auth(req)
    headers = [*req.headers.items(), ("User-Agent", "x"), ("X-Amzn-Trace-Id", "Root=1")]
    ok = sigv4.verify(store, method="POST", path="/", query="", headers=headers, body=BODY)
    assert ok.key.access_key_id == key.access_key_id
    with pytest.raises(InvalidSignature, match="not signed: x-amz-security-token") as refused:
        sigv4.verify(
            store,
            method="POST",
            path="/",
            query="",
            headers=[*headers, ("X-Amz-Security-Token", "t")],
            body=BODY,
        )
    assert refused.value.http_status == 403
