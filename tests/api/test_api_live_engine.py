"""The live server with boto3: DetectFaces, CompareFaces, bad images, S3Object, auth and protocol errors."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError
from PIL import Image

from live_server import S3Server, start_server, stop_server

if TYPE_CHECKING:
    from live_server import LiveServer

pytestmark = pytest.mark.slow


def error_code(exc: ClientError) -> str:
    code: str = exc.response["Error"]["Code"]
    return code


def test_health(api: LiveServer) -> None:
    with urllib.request.urlopen(api.endpoint + "/health", timeout=5) as r:
        assert json.loads(r.read())["status"] == "ok"


def test_detect_faces_default_and_all(rek: Any, photos: dict[str, bytes]) -> None:
    default = rek.detect_faces(Image={"Bytes": photos["obama"]})
    assert default["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert default["ResponseMetadata"]["RequestId"]
    (face,) = default["FaceDetails"]
    box = face["BoundingBox"]
    assert 0 < box["Left"] < 1 and 0 < box["Top"] < 1 and 0 < box["Width"] < 1 and 0 < box["Height"] < 1
    assert [lm["Type"] for lm in face["Landmarks"]] == [
        "eyeLeft",
        "eyeRight",
        "nose",
        "mouthLeft",
        "mouthRight",
    ]
    assert set(face["Pose"]) == {"Roll", "Yaw", "Pitch"}
    assert set(face["Quality"]) == {"Brightness", "Sharpness"}
    assert 0 < face["Confidence"] <= 100
    assert "EyesOpen" not in face
    # Eyes are left of the nose, which is above the mouth, all inside the box.
    lm = {p["Type"]: (p["X"], p["Y"]) for p in face["Landmarks"]}
    assert lm["eyeLeft"][0] < lm["nose"][0] < lm["eyeRight"][0]
    assert lm["eyeLeft"][1] < lm["nose"][1] < lm["mouthLeft"][1]
    assert box["Left"] < lm["nose"][0] < box["Left"] + box["Width"]

    everything = rek.detect_faces(Image={"Bytes": photos["obama"]}, Attributes=["ALL"])
    (full,) = everything["FaceDetails"]
    assert len(full["Landmarks"]) == 30
    assert isinstance(full["EyesOpen"]["Value"], bool) and 0 <= full["EyesOpen"]["Confidence"] <= 100
    assert isinstance(full["MouthOpen"]["Value"], bool)
    # Nothing regard refuses to infer is ever reported.
    for never in ("AgeRange", "Gender", "Emotions", "Smile", "Beard", "Mustache", "Eyeglasses", "Sunglasses"):
        assert never not in full
    asked = rek.detect_faces(
        Image={"Bytes": photos["obama"]}, Attributes=["GENDER", "AGE_RANGE", "EYES_OPEN"]
    )
    (some,) = asked["FaceDetails"]
    assert "Gender" not in some and "AgeRange" not in some and "EyesOpen" in some


def test_detect_faces_on_an_image_without_faces(rek: Any) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (200, 150), (90, 120, 200)).save(buf, format="PNG")
    assert rek.detect_faces(Image={"Bytes": buf.getvalue()})["FaceDetails"] == []


def test_compare_faces(rek: Any, photos: dict[str, bytes]) -> None:
    same = rek.compare_faces(SourceImage={"Bytes": photos["obama"]}, TargetImage={"Bytes": photos["obama2"]})
    assert len(same["FaceMatches"]) == 1 and same["UnmatchedFaces"] == []
    match = same["FaceMatches"][0]
    assert 80 <= match["Similarity"] <= 100
    assert set(match["Face"]) >= {"BoundingBox", "Confidence", "Landmarks", "Pose", "Quality"}
    assert same["SourceImageFace"]["Confidence"] > 0

    other = rek.compare_faces(SourceImage={"Bytes": photos["obama"]}, TargetImage={"Bytes": photos["biden"]})
    assert other["FaceMatches"] == [] and len(other["UnmatchedFaces"]) == 1

    lenient = rek.compare_faces(
        SourceImage={"Bytes": photos["obama"]}, TargetImage={"Bytes": photos["biden"]}, SimilarityThreshold=0
    )
    assert len(lenient["FaceMatches"]) == 1
    assert lenient["FaceMatches"][0]["Similarity"] < match["Similarity"]


def test_compare_faces_reports_the_estimated_fmr_to_raw_http_clients(
    api: LiveServer, photos: dict[str, bytes]
) -> None:
    """botocore drops unknown members, so the extra field only shows in the raw JSON."""
    import base64

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = json.dumps(
        {
            "SourceImage": {"Bytes": base64.b64encode(photos["obama"]).decode()},
            "TargetImage": {"Bytes": base64.b64encode(photos["obama3"]).decode()},
        }
    ).encode()
    raw = _signed_post(api, "CompareFaces", body, SigV4Auth, AWSRequest, Credentials)
    match = raw["FaceMatches"][0]
    assert 0 < match["EstimatedFalseMatchRate"] <= 1e-4
    if match["Similarity"] < 100:  # similarity = -20 log10(FMR), clipped to 100 (FMR 1e-5)
        assert match["EstimatedFalseMatchRate"] == pytest.approx(10 ** (-match["Similarity"] / 20), rel=1e-6)
    else:
        assert match["EstimatedFalseMatchRate"] <= 1e-5


def _signed_post(api: LiveServer, op: str, body: bytes, auth: Any, request: Any, creds: Any) -> Any:
    req = request(
        method="POST",
        url=api.endpoint + "/",
        data=body,
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": f"RekognitionService.{op}"},
    )
    auth(creds(api.access_key_id, api.secret), "rekognition", "us-east-1").add_auth(req)
    http = urllib.request.Request(
        api.endpoint + "/", data=body, headers=dict(req.headers.items()), method="POST"
    )
    with urllib.request.urlopen(http, timeout=120) as r:
        return json.loads(r.read())


def test_compare_faces_without_a_source_face(rek: Any, photos: dict[str, bytes]) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (120, 120), (0, 0, 0)).save(buf, format="JPEG")
    with pytest.raises(ClientError) as info:
        rek.compare_faces(SourceImage={"Bytes": buf.getvalue()}, TargetImage={"Bytes": photos["obama"]})
    assert error_code(info.value) == "InvalidParameterException"
    assert "no faces" in str(info.value)


def test_bad_images(rek: Any) -> None:
    with pytest.raises(rek.exceptions.InvalidImageFormatException):
        rek.detect_faces(Image={"Bytes": b"this is not an image"})
    png = io.BytesIO()
    Image.new("RGB", (64, 64)).save(png, format="PNG")
    with pytest.raises(rek.exceptions.InvalidImageFormatException):
        rek.detect_faces(Image={"Bytes": png.getvalue()[:40]})
    with pytest.raises(rek.exceptions.ImageTooLargeException) as info:
        rek.detect_faces(Image={"Bytes": b"\xff" * (5 * 1024 * 1024 + 10)})
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    huge = io.BytesIO()
    Image.new("L", (8000, 6000)).save(huge, format="PNG")  # 48 Mpx: over the pixel limit, small file
    with pytest.raises(rek.exceptions.ImageTooLargeException):
        rek.detect_faces(Image={"Bytes": huge.getvalue()})


def test_validation_errors(rek: Any) -> None:
    with pytest.raises(rek.exceptions.InvalidParameterException, match="regular expression pattern"):
        rek.describe_collection(CollectionId="not valid!")
    with pytest.raises(rek.exceptions.InvalidParameterException, match="enum value set"):
        rek.detect_faces(Image={"Bytes": b"x"}, Attributes=["EVERYTHING"])


def test_unsupported_operation_names_itself(rek: Any, photos: dict[str, bytes]) -> None:
    with pytest.raises(ClientError) as info:
        rek.detect_labels(Image={"Bytes": photos["obama"]})
    assert error_code(info.value) == "UnsupportedOperationException"
    assert "DetectLabels" in str(info.value)


def test_image_from_s3_object(
    api: LiveServer, rek: Any, s3_endpoint: S3Server, photos: dict[str, bytes]
) -> None:
    s3 = s3_endpoint.client()
    s3.put_object(Bucket="photos", Key="people/obama.jpg", Body=photos["obama"])
    r = rek.detect_faces(Image={"S3Object": {"Bucket": "photos", "Name": "people/obama.jpg"}})
    inline = rek.detect_faces(Image={"Bytes": photos["obama"]})
    assert r["FaceDetails"][0]["BoundingBox"] == inline["FaceDetails"][0]["BoundingBox"]
    with pytest.raises(ClientError) as info:
        rek.detect_faces(Image={"S3Object": {"Bucket": "photos", "Name": "missing.jpg"}})
    assert error_code(info.value) == "InvalidS3ObjectException"
    s3.put_object(Bucket="photos", Key="big.bin", Body=b"\0" * (15 * 1024 * 1024 + 1))
    with pytest.raises(rek.exceptions.ImageTooLargeException):
        rek.detect_faces(Image={"S3Object": {"Bucket": "photos", "Name": "big.bin"}})


def test_s3_permissions_are_the_configured_keys(
    api: LiveServer, rek: Any, s3_endpoint: S3Server, photos: dict[str, bytes]
) -> None:
    """regard reads S3 as the configured IAM user: an object in a bucket that user may not read
    is refused by S3 (moto checks the signature and the user's policy), and regard says so."""
    s3 = s3_endpoint.client()
    s3.create_bucket(Bucket="private")
    s3.put_object(Bucket="private", Key="obama.jpg", Body=photos["obama"])
    reader = s3_endpoint.client(s3_endpoint.reader)
    with pytest.raises(ClientError) as denied:
        reader.get_object(Bucket="private", Key="obama.jpg")
    assert error_code(denied.value) == "AccessDenied"  # S3 itself refuses that user
    with pytest.raises(ClientError) as info:
        rek.detect_faces(Image={"S3Object": {"Bucket": "private", "Name": "obama.jpg"}})
    assert error_code(info.value) == "InvalidS3ObjectException"
    assert "(403)" in str(info.value)  # S3's answer to regard's HEAD, passed on


@pytest.mark.slow
def test_s3_credentials_and_credential_chain(
    tmp_path: Path, s3_endpoint: S3Server, photos: dict[str, bytes]
) -> None:
    """A wrong REGARD_S3_SECRET_ACCESS_KEY fails the signature at S3; with no REGARD_S3_* keys,
    botocore's credential chain (here a shared credentials file) is used. (moto does not check
    the region in the signature, so REGARD_S3_REGION is exercised here but not verified.)"""
    s3_endpoint.client().put_object(Bucket="photos", Key="chain/obama.jpg", Body=photos["obama"])
    image = {"S3Object": {"Bucket": "photos", "Name": "chain/obama.jpg"}}
    key, _ = s3_endpoint.reader
    wrong = start_server(tmp_path / "wrong", s3_endpoint.regard_env((key, "0" * 40)))
    try:
        with pytest.raises(ClientError) as info:
            wrong.client().detect_faces(Image=image)
        assert error_code(info.value) == "InvalidS3ObjectException"
        assert "(403)" in str(info.value)
    finally:
        stop_server(wrong)

    credentials = tmp_path / "aws-credentials"
    reader_key, reader_secret = s3_endpoint.reader
    credentials.write_text(
        f"[default]\naws_access_key_id = {reader_key}\naws_secret_access_key = {reader_secret}\n"
    )
    env = {k: v for k, v in s3_endpoint.regard_env().items() if "ACCESS_KEY" not in k}
    env |= {"REGARD_S3_REGION": "eu-west-1", "AWS_SHARED_CREDENTIALS_FILE": str(credentials)}
    env |= {"AWS_CONFIG_FILE": str(tmp_path / "no-config"), "AWS_EC2_METADATA_DISABLED": "true"}
    chained = start_server(tmp_path / "chain", env)
    try:
        found = chained.client().detect_faces(Image=image)
        assert len(found["FaceDetails"]) == 1
    finally:
        stop_server(chained)


def test_wrong_secret_and_unknown_key(api: LiveServer) -> None:
    bad = api.client(aws_secret_access_key="0" * 40)
    with pytest.raises(ClientError) as info:
        bad.list_collections()
    assert error_code(info.value) == "InvalidSignatureException"
    stranger = api.client(aws_access_key_id="RGRDUNKNOWNKEY000000")
    with pytest.raises(ClientError) as info:
        stranger.list_collections()
    assert error_code(info.value) == "UnrecognizedClientException"


def test_unsigned_request(api: LiveServer) -> None:
    req = urllib.request.Request(
        api.endpoint + "/",
        data=b"{}",
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "RekognitionService.ListCollections",
        },
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 403
    assert info.value.headers["x-amzn-ErrorType"] == "MissingAuthenticationTokenException"
    assert info.value.headers["x-amzn-RequestId"]
    assert json.loads(info.value.read())["__type"] == "MissingAuthenticationTokenException"


def test_request_size_limit(api: LiveServer) -> None:
    """A body declared larger than the limit is refused before it is read."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(api.endpoint)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: %s\r\nX-Amz-Target: RekognitionService.DetectFaces\r\n"
            b"Content-Type: application/x-amz-json-1.1\r\nContent-Length: %d\r\n\r\n{"
            % (url.netloc.encode(), 64 * 1024 * 1024)
        )
        reply = sock.recv(65536).decode("latin-1")
    status_line, _, rest = reply.partition("\r\n")
    assert status_line.split()[1] == "413"
    assert "x-amzn-errortype: requestentitytoolargeexception" in rest.lower()


def test_request_log_is_structured_and_secret_free(api: LiveServer, rek: Any) -> None:
    with pytest.raises(ClientError):
        rek.describe_collection(CollectionId="no-such-collection-for-log")
    lines = api.log_lines()
    assert lines, "the server wrote no JSON request log"
    rec = [r for r in lines if r.get("operation") == "DescribeCollection"][-1]
    assert rec["status"] == 400 and rec["request_id"] and rec["access_key_id"] == api.access_key_id
    assert rec["error"] == "ResourceNotFoundException"
    assert api.secret not in api.log_path.read_text()


def test_concurrent_requests_are_all_answered(api: LiveServer, photos: dict[str, bytes]) -> None:
    """Several clients at once: every call succeeds and the server stays up (dlib is not thread-safe)."""
    from concurrent.futures import ThreadPoolExecutor

    clients = [api.client() for _ in range(4)]
    names = ["obama", "obama2", "obama3", "biden"]

    def call(i: int) -> int:
        r = clients[i % 4].detect_faces(Image={"Bytes": photos[names[i % 4]]})
        return len(r["FaceDetails"])

    with ThreadPoolExecutor(max_workers=4) as pool:
        counts = list(pool.map(call, range(8)))
    assert counts == [1] * 8
    assert api.process.poll() is None
