"""Issue 19, items 12 and 16 against a live server: an AccessDenied says what would allow the call,
and a validation error about a list shows the list."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.config import Config

from live_server import KeyedServer, start_keyed


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedServer]:
    server = start_keyed(
        tmp_path_factory.mktemp("onboarding"),
        {"admin": ("admin", "admin"), "checker": ("operator", "verification")},
    )
    yield server
    server.stop()


def test_access_denied_ends_with_what_would_allow_the_call(keyed: KeyedServer, fr_images: Path) -> None:
    checker = keyed.client("checker")
    with pytest.raises(checker.exceptions.AccessDeniedException) as info:
        checker.create_collection(CollectionId="not-mine")
    message = info.value.response["Error"]["Message"]
    assert message.startswith("the verification profile does not allow CreateCollection; to allow it: ")
    assert message.endswith(
        "`regard keys create --name NAME --profile admin --role admin`, or allow CreateCollection in the "
        "verification profile (`regard policy set verification operations ...`)"
    )
    keyed.client("admin").create_collection(CollectionId="staff")
    with pytest.raises(checker.exceptions.AccessDeniedException) as info:
        checker.search_faces_by_image(
            CollectionId="staff", Image={"Bytes": (fr_images / "obama.jpg").read_bytes()}
        )
    assert (
        "`regard keys create --name NAME --profile identification`" in info.value.response["Error"]["Message"]
    )


def test_validation_errors_show_list_values(keyed: KeyedServer) -> None:
    import boto3

    akid, secret = keyed.keys["admin"]
    unchecked = boto3.client(  # without botocore's own parameter checks, so the server's answer
        "rekognition",
        endpoint_url=keyed.endpoint,
        region_name="us-east-1",
        aws_access_key_id=akid,
        aws_secret_access_key=secret,
        config=Config(parameter_validation=False, retries={"total_max_attempts": 1}),
    )
    unchecked.create_collection(CollectionId="lists")
    ids = [f"00000000-0000-0000-0000-{i:012d}" for i in range(101)]
    with pytest.raises(unchecked.exceptions.InvalidParameterException) as info:
        unchecked.associate_faces(CollectionId="lists", UserId="u", FaceIds=ids)
    message = info.value.response["Error"]["Message"]
    assert "Value '[00000000-0000-0000-0000-000000000000, 00000000-0000-0000-0000-000000000001" in message
    assert (
        "at 'faceIds' failed to satisfy constraint: Member must have length less than or equal to 100"
        in message
    )
    assert "Value 'list'" not in message
