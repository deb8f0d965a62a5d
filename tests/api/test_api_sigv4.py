"""SigV4 verification against requests signed by botocore itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from regard.api.rekognition import sigv4
from regard.api.rekognition.errors import (
    IncompleteSignature,
    InvalidSignature,
    MissingAuthenticationToken,
    UnrecognizedClient,
)
from regard.keys import KeyStore

URL = "http://127.0.0.1:9000/"


def signed(akid: str, secret: str, body: bytes) -> AWSRequest:
    req = AWSRequest(
        method="POST",
        url=URL,
        data=body,
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "RekognitionService.ListCollections",
            "Host": "127.0.0.1:9000",
        },
    )
    signer = SigV4Auth(Credentials(akid, secret), "rekognition", "eu-west-1")
    signer.add_auth(req)
    return req


def check(store: KeyStore, req: AWSRequest, body: bytes | None = None, **kw: object) -> sigv4.Caller:
    return sigv4.verify(
        store,
        method="POST",
        path="/",
        query="",
        headers=list(req.headers.items()),
        body=req.body if body is None else body,
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture()
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path)


def test_valid_signature_identifies_the_caller(store: KeyStore) -> None:
    key, secret = store.create("k")
    body = json.dumps({"MaxResults": 5}).encode()
    caller = check(store, signed(key.access_key_id, secret, body))
    assert caller.key.access_key_id == key.access_key_id and caller.region == "eu-west-1"


def test_wrong_secret_tampered_body_and_unknown_key(store: KeyStore) -> None:
    key, secret = store.create("k")
    body = b"{}"
    with pytest.raises(InvalidSignature, match="signature we calculated does not match"):
        check(store, signed(key.access_key_id, "x" * 40, body))
    with pytest.raises(InvalidSignature):
        check(store, signed(key.access_key_id, secret, body), body=b'{"MaxResults": 1}')
    with pytest.raises(UnrecognizedClient, match="security token included in the request is invalid"):
        check(store, signed("RGRDAAAAAAAAAAAAAAAA", secret, body))
    store.revoke(key.access_key_id)
    with pytest.raises(UnrecognizedClient):
        check(store, signed(key.access_key_id, secret, body))


def test_missing_or_malformed_authorization(store: KeyStore) -> None:
    with pytest.raises(MissingAuthenticationToken):
        sigv4.verify(store, method="POST", path="/", query="", headers={"Host": "h"}, body=b"")
    with pytest.raises(IncompleteSignature):
        sigv4.verify(
            store, method="POST", path="/", query="", headers={"Authorization": "Basic abc"}, body=b""
        )


def test_clock_skew_over_15_minutes_is_refused(store: KeyStore) -> None:
    key, secret = store.create("k")
    req = signed(key.access_key_id, secret, b"{}")
    now = datetime.now(UTC)
    assert check(store, req, now=now + timedelta(minutes=14)).key.access_key_id == key.access_key_id
    with pytest.raises(InvalidSignature, match=r"Signature expired: .* is now earlier than"):
        check(store, req, now=now + timedelta(minutes=16))
    with pytest.raises(InvalidSignature, match=r"Signature expired: .* is now later than"):
        check(store, req, now=now - timedelta(minutes=16))
