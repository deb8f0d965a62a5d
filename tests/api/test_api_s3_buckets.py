"""Issue 15, item 14: ``REGARD_S3_BUCKETS``, the buckets Image.S3Object may read.

Without it any key could make regard read any object its S3 credentials reach. With it, other
buckets get ``InvalidS3ObjectException`` (what AWS answers for an object it cannot read) and S3 is
never asked; names are compared without surrounding spaces and in lower case.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from live_server import S3Server, start_server, stop_server
from regard.api.rekognition.s3 import InvalidS3Object, S3Images, allowed_buckets
from regard.config import Settings


class CountingS3:
    """A loopback endpoint that records every request's method and path and serves one body."""

    def __init__(self, body: bytes) -> None:
        self.requests: list[tuple[str, str]] = []
        seen = self.requests

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                seen.append((self.command, self.path))
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", '"0"')
                self.end_headers()

            def do_HEAD(self) -> None:
                self._answer()

            def do_GET(self) -> None:
                self._answer()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def counting_s3() -> Iterator[CountingS3]:
    stub = CountingS3(b"image bytes")
    yield stub
    stub.close()


def images(endpoint: str, buckets: str) -> S3Images:
    return S3Images(
        Settings(
            s3_endpoint_url=endpoint,
            s3_access_key_id="stub",
            s3_secret_access_key="stub",
            s3_buckets=buckets,
        )
    )


def test_allow_list_is_normalised() -> None:
    assert allowed_buckets("") == frozenset()
    assert allowed_buckets(" , ,") == frozenset()
    assert allowed_buckets(" Photos ,archive-2024,,PHOTOS") == {"photos", "archive-2024"}
    assert Settings.from_env({"REGARD_S3_BUCKETS": "a, B"}).s3_buckets == "a, B"
    assert Settings().s3_buckets == ""


def test_other_buckets_are_refused_without_contacting_s3(counting_s3: CountingS3) -> None:
    s3 = images(counting_s3.url, " Photos , archive ")
    for bucket in ("private", "photos2", "photo", "archive.old", ""):
        with pytest.raises(InvalidS3Object, match="REGARD_S3_BUCKETS") as info:
            s3.fetch(bucket, "a.jpg")
        assert info.value.code == "InvalidS3ObjectException"
    assert counting_s3.requests == []  # S3 was never asked
    # A listed bucket, in any case and with spaces, is read under its listed (lower-case) name.
    assert s3.fetch(" PHOTOS", "people/a.jpg") == b"image bytes"
    assert s3.fetch("archive", "b.jpg") == b"image bytes"
    assert counting_s3.requests == [
        ("HEAD", "/photos/people/a.jpg"),
        ("GET", "/photos/people/a.jpg"),
        ("HEAD", "/archive/b.jpg"),
        ("GET", "/archive/b.jpg"),
    ]


def test_no_allow_list_reads_any_bucket_as_named(counting_s3: CountingS3) -> None:
    s3 = images(counting_s3.url, "")
    assert s3.fetch("Anything", "c.jpg") == b"image bytes"
    assert counting_s3.requests == [("HEAD", "/Anything/c.jpg"), ("GET", "/Anything/c.jpg")]


def error_code(exc: ClientError) -> str:
    code: str = exc.response["Error"]["Code"]
    return code


@pytest.mark.slow
def test_live_server_reads_only_listed_buckets(
    tmp_path: Path, s3_endpoint: S3Server, photos: dict[str, bytes]
) -> None:
    """regard is given credentials that can read every bucket (the uploader's); the allow-list is
    what stops a key from reading the bucket that is not on it."""
    s3 = s3_endpoint.client()
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket="regard-unlisted")
    s3.put_object(Bucket="photos", Key="allow-list/obama.jpg", Body=photos["obama"])
    s3.put_object(Bucket="regard-unlisted", Key="obama.jpg", Body=photos["obama"])
    # The credentials regard gets can read both buckets.
    assert s3.get_object(Bucket="regard-unlisted", Key="obama.jpg")["Body"].read() == photos["obama"]

    env = s3_endpoint.regard_env(s3_endpoint.uploader) | {"REGARD_S3_BUCKETS": " Photos , other-bucket "}
    server = start_server(tmp_path / "allow-list", env)
    try:
        rek: Any = server.client()
        for bucket in ("photos", "PHOTOS"):
            found = rek.detect_faces(Image={"S3Object": {"Bucket": bucket, "Name": "allow-list/obama.jpg"}})
            assert len(found["FaceDetails"]) == 1
        with pytest.raises(ClientError) as info:
            rek.detect_faces(Image={"S3Object": {"Bucket": "regard-unlisted", "Name": "obama.jpg"}})
        assert error_code(info.value) == "InvalidS3ObjectException"
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert "REGARD_S3_BUCKETS" in str(info.value)
        # The same refusal for CompareFaces' target image.
        with pytest.raises(ClientError) as info:
            rek.compare_faces(
                SourceImage={"Bytes": photos["obama"]},
                TargetImage={"S3Object": {"Bucket": "regard-unlisted", "Name": "obama.jpg"}},
            )
        assert error_code(info.value) == "InvalidS3ObjectException"
    finally:
        stop_server(server)
