"""Fixtures: a live ``regard serve`` on loopback, a moto S3 server, and clients that talk to them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from live_server import LiveServer, free_port, start_server, stop_server


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on loopback (a real HTTP S3-compatible endpoint)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def api(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: str) -> Iterator[LiveServer]:
    """``regard serve`` on a free loopback port with a temp data dir, a key and S3 set to moto."""
    data_dir = tmp_path_factory.mktemp("regard-api")
    server = start_server(
        data_dir,
        {
            "REGARD_S3_ENDPOINT_URL": s3_endpoint,
            "REGARD_S3_ACCESS_KEY_ID": "testing",
            "REGARD_S3_SECRET_ACCESS_KEY": "testing",
        },
    )
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def rek(api: LiveServer) -> Any:
    """boto3's real rekognition client pointed at the live server."""
    return api.client()


@pytest.fixture(scope="session")
def photos(fr_images: Path) -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in sorted(fr_images.glob("*.jpg"))}
