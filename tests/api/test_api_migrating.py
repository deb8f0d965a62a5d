"""Issue 19, items 1-8: Rekognition behaviours that existing client code depends on, driven with boto3
(and, for an S3Object image, the AWS CLI) against the live server."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from botocore.exceptions import ClientError
from PIL import Image

from pictures import face_crop

if TYPE_CHECKING:
    from live_server import LiveServer, S3Server
    from regard.face.engine import Engine

AWS = Path(sys.executable).parent / "aws"


def code(exc: ClientError) -> str:
    value: str = exc.response["Error"]["Code"]
    return value


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=95)
    return out.getvalue()


def blank() -> bytes:
    return jpeg(Image.new("RGB", (160, 120), (200, 200, 200)))


@pytest.fixture()
def collection(rek: Any) -> Iterator[str]:
    cid = f"mig-{uuid.uuid4().hex[:10]}"
    rek.create_collection(CollectionId=cid)
    yield cid
    rek.delete_collection(CollectionId=cid)


# -- 1 ------------------------------------------------------------------------------------------
def test_compare_faces_without_a_face_in_the_target_is_invalid_parameter(
    rek: Any, photos: dict[str, bytes]
) -> None:
    with pytest.raises(rek.exceptions.InvalidParameterException, match="no faces"):
        rek.compare_faces(SourceImage={"Bytes": photos["obama"]}, TargetImage={"Bytes": blank()})
    with pytest.raises(rek.exceptions.InvalidParameterException, match="no faces"):
        rek.compare_faces(SourceImage={"Bytes": blank()}, TargetImage={"Bytes": photos["obama"]})
    same = rek.compare_faces(SourceImage={"Bytes": photos["obama"]}, TargetImage={"Bytes": photos["obama2"]})
    assert len(same["FaceMatches"]) == 1


# -- 2 ------------------------------------------------------------------------------------------
def test_search_users_by_image_without_a_face_answers_no_match(rek: Any, collection: str) -> None:
    found = rek.search_users_by_image(CollectionId=collection, Image={"Bytes": blank()})
    assert found["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert found["UserMatches"] == [] and "SearchedFace" not in found
    assert found["FaceModelVersion"]


# -- 3 ------------------------------------------------------------------------------------------
def test_index_faces_max_faces_has_no_maximum(rek: Any, collection: str, photos: dict[str, bytes]) -> None:
    for max_faces in (100, 101, 1000, 2**31 - 1):
        out = rek.index_faces(
            CollectionId=collection,
            Image={"Bytes": photos["obama"]},
            MaxFaces=max_faces,
            QualityFilter="NONE",
        )
        assert len(out["FaceRecords"]) == 1 and out["UnindexedFaces"] == []


# -- 4 ------------------------------------------------------------------------------------------
def test_indexing_the_same_image_twice_stores_no_duplicate(
    rek: Any, collection: str, photos: dict[str, bytes]
) -> None:
    def index(photo: str, external: str | None) -> list[str]:
        extra = {} if external is None else {"ExternalImageId": external}
        out = rek.index_faces(CollectionId=collection, Image={"Bytes": photos[photo]}, **extra)
        return [r["Face"]["FaceId"] for r in out["FaceRecords"]]

    first = index("obama", "obama-1")
    again = index("obama", "obama-1")
    assert len(first) == 1 and again == first
    assert rek.describe_collection(CollectionId=collection)["FaceCount"] == 1
    # another ExternalImageId, another image, or none at all: new faces
    other_name = index("obama", "obama-2")
    other_image = index("obama2", "obama-1")
    anonymous = index("obama", None) + index("obama", None)
    assert len({*first, *other_name, *other_image, *anonymous}) == 5
    assert rek.describe_collection(CollectionId=collection)["FaceCount"] == 5
    # once the face is deleted the image can be indexed again
    rek.delete_faces(CollectionId=collection, FaceIds=first)
    renewed = index("obama", "obama-1")
    assert len(renewed) == 1 and renewed != first


# -- 5 ------------------------------------------------------------------------------------------
def test_associate_faces_ignores_a_face_the_user_already_has(
    rek: Any, collection: str, photos: dict[str, bytes]
) -> None:
    face = rek.index_faces(CollectionId=collection, Image={"Bytes": photos["obama"]})["FaceRecords"][0]
    face_id = face["Face"]["FaceId"]
    rek.create_user(CollectionId=collection, UserId="barack")
    first = rek.associate_faces(CollectionId=collection, UserId="barack", FaceIds=[face_id])
    assert [f["FaceId"] for f in first["AssociatedFaces"]] == [face_id]
    again = rek.associate_faces(CollectionId=collection, UserId="barack", FaceIds=[face_id])
    assert again["AssociatedFaces"] == [] and again["UnsuccessfulFaceAssociations"] == []
    assert again["UserStatus"] == "ACTIVE"


# -- 6 ------------------------------------------------------------------------------------------
def _large_image(photos: dict[str, bytes]) -> bytes:
    """A PNG of about 7 MB (noise around obama.jpg): over the 5 MB inline limit, under 15 MB."""
    rng = np.random.default_rng(19)
    canvas = Image.fromarray(rng.integers(0, 256, (1600, 1800, 3), dtype=np.uint8))
    canvas.paste(Image.open(io.BytesIO(photos["obama"])).convert("RGB"), (300, 300))
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    data = out.getvalue()
    assert 5 * 1024 * 1024 < len(data) < 15 * 1024 * 1024
    return data


def test_s3_object_images_up_to_15_mb(
    api: LiveServer, rek: Any, s3_endpoint: S3Server, photos: dict[str, bytes], tmp_path: Path
) -> None:
    data = _large_image(photos)
    s3_endpoint.client().put_object(Bucket="photos", Key="large/obama.png", Body=data)
    image = {"S3Object": {"Bucket": "photos", "Name": "large/obama.png"}}
    assert len(rek.detect_faces(Image=image)["FaceDetails"]) == 1
    with pytest.raises(rek.exceptions.ImageTooLargeException):
        rek.detect_faces(Image={"Bytes": data})
    s3_endpoint.client().put_object(
        Bucket="photos", Key="large/over.bin", Body=b"\0" * (15 * 1024 * 1024 + 1)
    )
    with pytest.raises(rek.exceptions.ImageTooLargeException):
        rek.detect_faces(Image={"S3Object": {"Bucket": "photos", "Name": "large/over.bin"}})

    if not AWS.exists():
        pytest.skip("the awscli package is not installed in this environment")
    env = {
        "PATH": str(AWS.parent) + ":/usr/bin:/bin",
        "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": api.access_key_id,
        "AWS_SECRET_ACCESS_KEY": api.secret,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
        "AWS_MAX_ATTEMPTS": "1",
    }
    done = subprocess.run(
        [
            *(str(AWS), "rekognition", "detect-faces"),
            *("--image", "S3Object={Bucket=photos,Name=large/obama.png}"),
            *("--endpoint-url", api.endpoint, "--output", "json"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["FaceDetails"]) == 1


# -- 7 ------------------------------------------------------------------------------------------
def test_face_model_version_is_a_number_and_the_identity_an_extension(
    rek: Any, collection: str, photos: dict[str, bytes]
) -> None:
    raw: list[dict[str, Any]] = []

    def keep(http_response: Any, **_: Any) -> None:
        raw.append(json.loads(http_response.content))

    rek.meta.events.register("after-call.rekognition.DescribeCollection", keep)
    try:
        described = rek.describe_collection(CollectionId=collection)
    finally:
        rek.meta.events.unregister("after-call.rekognition.DescribeCollection", keep)
    version = described["FaceModelVersion"]
    assert float(version) >= 7.0 and version == "7.2"
    assert "RegardFaceModel" not in described  # boto3 ignores the extension field
    identity = raw[0]["RegardFaceModel"]
    assert identity["FaceModelVersion"] == version
    assert identity["Model"].startswith("dlib_face_recognition_resnet_model_v1:")
    assert {"Scoring", "CalibrationSha256", "NormalizerSha256", "Preprocessing"} <= set(identity)
    indexed = rek.index_faces(CollectionId=collection, Image={"Bytes": photos["obama"]})
    assert indexed["FaceModelVersion"] == version
    listed = rek.list_collections()
    assert listed["FaceModelVersions"][listed["CollectionIds"].index(collection)] == version


# -- 8 ------------------------------------------------------------------------------------------
def test_small_bounding_box_is_judged_relative_to_the_image(
    rek: Any, collection: str, engine: Engine, fr_images: Path
) -> None:
    """The same face (about 80 px) clears QualityFilter MEDIUM (40 px up to HD) in a 400 px picture;
    in a 3000 px one the bar is 40 x 3000 / 1080 = 111 px, so it is SMALL_BOUNDING_BOX there."""
    face = Image.fromarray(face_crop(engine, fr_images / "obama.jpg", 180))

    def on_canvas(side: int) -> bytes:
        canvas = Image.new("RGB", (side, side), (128, 128, 128))
        canvas.paste(face, ((side - 180) // 2, (side - 180) // 2))
        return jpeg(canvas)

    small = rek.index_faces(
        CollectionId=collection, Image={"Bytes": on_canvas(400)}, QualityFilter="MEDIUM", MaxFaces=1
    )
    assert len(small["FaceRecords"]) == 1, small["UnindexedFaces"]
    width_px = small["FaceRecords"][0]["FaceDetail"]["BoundingBox"]["Width"] * 400
    assert 40 < width_px < 111
    large = rek.index_faces(CollectionId=collection, Image={"Bytes": on_canvas(3000)}, QualityFilter="MEDIUM")
    assert large["FaceRecords"] == []
    assert [u["Reasons"] for u in large["UnindexedFaces"]] == [["SMALL_BOUNDING_BOX"]]
