"""SigV4 guarantees the mutation check (scripts/mutation_check.py) found no test for.

Requests are signed by botocore itself; the last test goes through a live ``regard serve``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

from live_server import post_json, start_server, stop_server
from regard.api.rekognition import sigv4
from regard.api.rekognition.errors import InvalidSignature
from regard.keys import KeyStore

HOST = "127.0.0.1:9000"
BODY = json.dumps({"MaxResults": 5}).encode()


class _HostlessSigV4(SigV4Auth):  # type: ignore[misc]
    """A client that leaves Host out of SignedHeaders."""

    def headers_to_sign(self, request: Any) -> HTTPHeaders:
        headers = super().headers_to_sign(request)
        del headers["host"]
        return headers


def _request(body: bytes = BODY, headers: dict[str, str] | None = None) -> AWSRequest:
    return AWSRequest(
        method="POST",
        url=f"http://{HOST}/",
        data=body,
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "RekognitionService.ListCollections",
            "Host": HOST,
            **(headers or {}),
        },
    )


def _sign(req: AWSRequest, akid: str, secret: str, signer: type[SigV4Auth] = SigV4Auth) -> AWSRequest:
    signer(Credentials(akid, secret), "rekognition", "eu-west-1").add_auth(req)
    return req


def _verify(store: KeyStore, headers: list[tuple[str, str]], body: bytes) -> sigv4.Caller:
    return sigv4.verify(store, method="POST", path="/", query="", headers=headers, body=body)


@pytest.fixture()
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path)


@pytest.fixture()
def key(store: KeyStore) -> tuple[str, str]:
    k, secret = store.create("k")
    return k.access_key_id, secret


def test_body_swapped_under_a_signed_content_hash_is_refused(store: KeyStore, key: tuple[str, str]) -> None:
    """Kills sigv4-payload-unchecked. When X-Amz-Content-SHA256 is sent, botocore's canonical
    request takes the payload hash from that header, not from the body: the server must compare
    the two itself, or any body can travel under a valid signature."""
    header = {"X-Amz-Content-SHA256": hashlib.sha256(BODY).hexdigest()}
    req = _sign(_request(headers=header), *key)
    assert _verify(store, list(req.headers.items()), BODY).key.access_key_id == key[0]
    swapped = json.dumps({"MaxResults": 1000}).encode()
    with pytest.raises(InvalidSignature, match="x-amz-content-sha256"):
        _verify(store, list(req.headers.items()), swapped)
    unsigned = _sign(_request(headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}), *key)
    with pytest.raises(InvalidSignature, match="x-amz-content-sha256"):
        _verify(store, list(unsigned.headers.items()), BODY)


def test_host_must_be_a_signed_header(store: KeyStore, key: tuple[str, str]) -> None:
    """Kills sigv4-host-unsigned: a signature that does not bind the Host could be replayed to
    another endpoint; AWS refuses it, and so does regard, however valid the signature."""
    req = _sign(_request(), *key, signer=_HostlessSigV4)
    assert "host" not in req.headers["Authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    with pytest.raises(InvalidSignature, match="'Host' must be a signed header"):
        _verify(store, list(req.headers.items()), BODY)


def test_credential_scope_date_must_be_the_request_date(store: KeyStore, key: tuple[str, str]) -> None:
    """Kills sigv4-scope-date: a credential scoped to another day is refused with AWS's message
    (without the check it would fail only as a signature mismatch)."""
    req = _sign(_request(), *key)
    stamp = req.headers["X-Amz-Date"][:8]
    other = "19991231" if stamp != "19991231" else "20000101"
    headers = [
        (k, v.replace(f"/{stamp}/", f"/{other}/") if k.lower() == "authorization" else v)
        for k, v in req.headers.items()
    ]
    with pytest.raises(InvalidSignature, match="Date in Credential scope does not match"):
        _verify(store, headers, BODY)


def test_live_server_checks_only_the_headers_the_client_signed(tmp_path: Path) -> None:
    """Kills sigv4-signs-present-headers through a live ``regard serve`` (the check's proof that
    server subprocesses run the mutated code): real clients send headers they do not sign
    (User-Agent, Accept-Encoding...); the signature covers SignedHeaders and nothing else.
    A body swapped under a signed content hash is refused over HTTP too."""
    server = start_server(tmp_path / "data")
    try:
        client = server.client()
        assert client.list_collections()["CollectionIds"] == []
        host = server.endpoint.removeprefix("http://")
        req = AWSRequest(
            method="POST",
            url=server.endpoint + "/",
            data=BODY,
            headers={
                "Content-Type": "application/x-amz-json-1.1",
                "X-Amz-Target": "RekognitionService.ListCollections",
                "Host": host,
                "X-Amz-Content-SHA256": hashlib.sha256(BODY).hexdigest(),
            },
        )
        SigV4Auth(Credentials(server.access_key_id, server.secret), "rekognition", "us-east-1").add_auth(req)
        status, out = post_json(server.endpoint + "/", "POST", dict(req.headers), BODY)
        assert status == 200 and out["CollectionIds"] == []
        status, out = post_json(
            server.endpoint + "/", "POST", dict(req.headers), json.dumps({"MaxResults": 1}).encode()
        )
        assert status == 400 and out["__type"] == "InvalidSignatureException"
    finally:
        stop_server(server)
