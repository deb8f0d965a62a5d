"""``Image.S3Object``: read images from the S3-compatible endpoint the operator configured.

Settings: ``REGARD_S3_ENDPOINT_URL`` (required to use S3Object), ``REGARD_S3_REGION``,
and optionally ``REGARD_S3_ACCESS_KEY_ID``/``REGARD_S3_SECRET_ACCESS_KEY`` (otherwise
botocore's usual credential chain applies). Objects larger than ``REGARD_MAX_S3_IMAGE_BYTES``
(15 MB, Rekognition's limit for S3Object images; inline Bytes stay at 5 MB) are refused before
they are downloaded.

``REGARD_S3_BUCKETS`` (comma-separated) restricts S3Object to those buckets: names are compared
after trimming spaces and lower-casing (S3 bucket names are lower case), S3 is then asked for
the listed name, and any other bucket is refused with ``InvalidS3ObjectException`` before S3 is
contacted. Empty (the default) allows any bucket the configured credentials can read.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from regard.config import Settings
from regard.errors import ImageTooLarge, InvalidParameter, RegardError


class InvalidS3Object(RegardError):
    """The S3 object cannot be read (missing bucket or key, no permission, endpoint down)."""

    code = "InvalidS3ObjectException"
    http_status = 400


class VideoTooLarge(RegardError):
    """A Video.S3Object larger than ``REGARD_VIDEO_MAX_BYTES`` (Rekognition Video: 10 GB)."""

    code = "VideoTooLargeException"
    http_status = 400


#: Bytes read from S3 at a time when a video is streamed to its file.
CHUNK = 1024 * 1024


def bucket_name(name: str) -> str:
    """A bucket name as the allow-list compares it: no surrounding spaces, lower case."""
    return name.strip().lower()


def allowed_buckets(setting: str) -> frozenset[str]:
    """The buckets named in ``REGARD_S3_BUCKETS`` (empty: no allow-list, any bucket)."""
    return frozenset(b for b in (bucket_name(part) for part in setting.split(",")) if b)


@contextmanager
def _s3_errors(bucket: str, name: str) -> Iterator[None]:
    """S3's client errors as the InvalidS3ObjectException Rekognition answers with."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise InvalidS3Object(
            f"Unable to get object metadata from S3. Check object key, region and/or access "
            f"permissions. (s3://{bucket}/{name}: {exc})"
        ) from exc


class S3Images:
    """Fetches image bytes from one S3-compatible endpoint; thread-safe."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.buckets = allowed_buckets(settings.s3_buckets)
        self._client: Any = None
        self._lock = threading.Lock()

    def _s3(self) -> Any:
        with self._lock:
            if self._client is None:
                s = self.settings
                if not s.s3_endpoint_url:
                    raise InvalidParameter(
                        "Image.S3Object is not available: the operator has not configured an S3 endpoint "
                        "(REGARD_S3_ENDPOINT_URL); send Image.Bytes instead"
                    )
                session = botocore.session.get_session()
                self._client = session.create_client(
                    "s3",
                    endpoint_url=s.s3_endpoint_url,
                    region_name=s.s3_region,
                    aws_access_key_id=s.s3_access_key_id or None,
                    aws_secret_access_key=s.s3_secret_access_key or None,
                    config=Config(
                        s3={"addressing_style": "path"},
                        connect_timeout=5,
                        read_timeout=30,
                        retries={"max_attempts": 2},
                    ),
                )
            return self._client

    def _bucket(self, bucket: str, name: str) -> str:
        """The bucket to ask S3 for; InvalidS3Object for one outside REGARD_S3_BUCKETS."""
        if self.buckets:
            if bucket_name(bucket) not in self.buckets:
                raise InvalidS3Object(
                    f"Unable to get object metadata from S3. Check object key, region and/or access "
                    f"permissions. (s3://{bucket}/{name}: this server reads only the buckets listed "
                    f"in REGARD_S3_BUCKETS)"
                )
            bucket = bucket_name(bucket)
        return bucket

    def fetch(self, bucket: str, name: str, version: str | None = None) -> bytes:
        """The object's bytes; raises InvalidS3Object or ImageTooLarge."""
        client = self._s3()
        bucket = self._bucket(bucket, name)
        limit = self.settings.max_s3_image_bytes
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": name}
        if version:
            kwargs["VersionId"] = version
        with _s3_errors(bucket, name):
            head = client.head_object(**kwargs)
            size = int(head.get("ContentLength", 0))
            if size > limit:
                raise ImageTooLarge(f"S3 object s3://{bucket}/{name} is {size} bytes; the limit is {limit}")
            response = client.get_object(**kwargs)
            body = response["Body"]
            try:
                data: bytes = body.read(limit + 1)
            finally:
                body.close()
        if len(data) > limit:
            raise ImageTooLarge(f"S3 object s3://{bucket}/{name} exceeds the limit of {limit} bytes")
        return data

    def fetch_to_file(self, bucket: str, name: str, version: str | None, dest: Path, limit: int) -> int:
        """Stream a video object to ``dest`` (created 0600) under ``limit`` bytes (the video limit,
        ``REGARD_VIDEO_MAX_BYTES``); returns its size. Raises InvalidS3Object or VideoTooLarge."""
        client = self._s3()
        bucket = self._bucket(bucket, name)
        kwargs: dict[str, Any] = {"Bucket": bucket, "Key": name}
        if version:
            kwargs["VersionId"] = version
        written = 0
        with _s3_errors(bucket, name):
            head = client.head_object(**kwargs)
            size = int(head.get("ContentLength", 0))
            if size > limit:
                raise VideoTooLarge(
                    f"S3 object s3://{bucket}/{name} is {size} bytes; the video limit is {limit}"
                )
            body = client.get_object(**kwargs)["Body"]
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                try:
                    while chunk := body.read(CHUNK):
                        written += len(chunk)
                        if written > limit:
                            raise VideoTooLarge(
                                f"S3 object s3://{bucket}/{name} exceeds the video limit of {limit} bytes"
                            )
                        out.write(chunk)
                finally:
                    body.close()
        return written
