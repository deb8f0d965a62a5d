"""Fixtures: a live ``regard serve`` on loopback, a moto S3 server, and clients that talk to them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from live_server import LiveServer, S3Server, StubS3, start_server, stop_server


def _user(iam: Any, name: str, policy: dict[str, Any]) -> tuple[str, str]:
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Server]:
    """A moto S3 server on loopback (a real HTTP S3-compatible endpoint) that checks SigV4
    signatures and IAM policies, so regard's S3 credentials, region and credential chain are
    exercised: a wrong secret or a key without permission gets an error, as from AWS."""
    import boto3
    from moto import settings as moto_settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # Users are made before authentication is switched on (moto's documented way).
    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="setup",
        aws_secret_access_key="setup",
    )
    reader = _user(
        iam,
        "regard-reader",
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::photos/*"}],
        },
    )
    uploader = _user(
        iam,
        "uploader",
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]},
    )
    before = moto_settings.INITIAL_NO_AUTH_ACTION_COUNT
    moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0
    try:
        s3 = S3Server(endpoint, reader, uploader)
        s3.client().create_bucket(Bucket="photos")
        yield s3
    finally:
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = before
        server.stop()


@pytest.fixture(scope="session")
def api(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: S3Server) -> Iterator[LiveServer]:
    """``regard serve`` on a free loopback port with a temp data dir, a key, and S3 set to moto
    with the read-only IAM user's credentials."""
    data_dir = tmp_path_factory.mktemp("regard-api")
    server = start_server(data_dir, s3_endpoint.regard_env())
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def rek(api: LiveServer) -> Any:
    """boto3's real rekognition client pointed at the live server."""
    return api.client()


@pytest.fixture
def held_s3(photos: dict[str, bytes]) -> Iterator[StubS3]:
    """A stub S3 whose one object (a portrait) is served only when the test calls release()."""
    stub = StubS3(photos["obama3"], hold=True)
    yield stub
    stub.close()
