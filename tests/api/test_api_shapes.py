"""Request validation against botocore's Rekognition model."""

from __future__ import annotations

import base64

import pytest

from regard.api.rekognition.shapes import validate
from regard.errors import ImageTooLarge, InvalidParameter


def test_valid_request_is_returned_with_blobs_decoded() -> None:
    out = validate(
        "IndexFaces",
        {"CollectionId": "c-1", "Image": {"Bytes": base64.b64encode(b"abc").decode()}, "MaxFaces": 3},
    )
    assert out == {"CollectionId": "c-1", "Image": {"Bytes": b"abc"}, "MaxFaces": 3}


@pytest.mark.parametrize(
    ("operation", "params", "message"),
    [
        ("CreateCollection", {}, "at 'collectionId' failed to satisfy constraint: Member must not be null"),
        ("CreateCollection", {"CollectionId": "a b"}, "regular expression pattern"),
        ("CreateCollection", {"CollectionId": "x" * 256}, "length less than or equal to 255"),
        ("CreateCollection", {"CollectionId": 7}, "Member must be a string"),
        ("ListCollections", {"MaxResults": 4097}, "value less than or equal to 4096"),
        ("ListCollections", {"MaxResults": True}, "Member must be an integer"),
        ("SearchFacesByImage", {"CollectionId": "c", "Image": {}, "QualityFilter": "BEST"}, "enum value set"),
        ("SearchFaces", {"CollectionId": "c", "FaceId": "nope"}, "regular expression pattern"),
        ("DeleteFaces", {"CollectionId": "c", "FaceIds": []}, "length greater than or equal to 1"),
        ("DetectFaces", {"Image": {"Bytes": "***"}}, "valid base64"),
        ("CompareFaces", {"SourceImage": {}}, "at 'targetImage' failed"),
    ],
)
def test_violations_become_invalid_parameter(operation: str, params: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidParameter, match=message) as info:
        validate(operation, params)
    assert info.value.code == "InvalidParameterException"
    assert info.value.message.startswith("1 validation error detected")


def test_oversized_image_bytes_are_image_too_large() -> None:
    blob = base64.b64encode(b"\0" * (5 * 1024 * 1024 + 1)).decode()
    with pytest.raises(ImageTooLarge):
        validate("DetectFaces", {"Image": {"Bytes": blob}})


def test_every_pattern_in_the_model_compiles_and_tags_follow_it() -> None:
    from regard.api.rekognition.shapes import _pattern, service_model

    model = service_model()
    patterns = {
        model.shape_for(name).metadata["pattern"]
        for name in model.shape_names
        if "pattern" in model.shape_for(name).metadata
    }
    assert len(patterns) > 10
    for p in patterns:
        _pattern(p)
    validate(
        "TagResource",
        {"ResourceArn": "arn:aws:rekognition:us-east-1:0:collection/c", "Tags": {"équipe 1": "x"}},
    )
    with pytest.raises(InvalidParameter, match="regular expression pattern"):
        validate(
            "TagResource",
            {"ResourceArn": "arn:aws:rekognition:us-east-1:0:collection/c", "Tags": {"a#b": "x"}},
        )


def test_errors_follow_each_operations_model() -> None:
    from regard.api.rekognition.errors import UnrecognizedClient, for_operation
    from regard.errors import ResourceAlreadyExists

    exists = ResourceAlreadyExists("user u already exists")
    assert for_operation(exists, "CreateUser").code == "ConflictException"
    assert for_operation(exists, "CreateUser").message == exists.message
    assert for_operation(exists, "CreateCollection") is exists
    auth = UnrecognizedClient("x")
    assert for_operation(auth, "CreateUser") is auth
