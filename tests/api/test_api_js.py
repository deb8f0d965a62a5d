"""The AWS SDK for JavaScript v3 (@aws-sdk/client-rekognition from npm) against the live server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from live_server import LiveServer

pytestmark = pytest.mark.slow

JS = Path(__file__).resolve().parents[1] / "js"


@pytest.fixture(scope="session")
def node_sdk() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed for the AWS SDK for JavaScript check")
    if not (JS / "node_modules" / "@aws-sdk" / "client-rekognition").is_dir():
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=JS, check=True, timeout=600
        )
    return Path(node)


def test_js_sdk_create_index_search_delete(api: LiveServer, node_sdk: Path, fr_images: Path) -> None:
    env = dict(os.environ, AWS_ACCESS_KEY_ID=api.access_key_id, AWS_SECRET_ACCESS_KEY=api.secret)
    done = subprocess.run(
        [
            str(node_sdk),
            "rekognition.mjs",
            api.endpoint,
            "js-sdk-collection",
            str(fr_images / "obama.jpg"),
            str(fr_images / "biden.jpg"),
            str(fr_images / "obama2.jpg"),
        ],
        cwd=JS,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["createStatus"] == 200
    assert summary["collectionArn"].endswith(":collection/js-sdk-collection")
    assert [f["ExternalImageId"] for f in summary["indexed"]] == ["person-a", "person-b"]
    assert [m["ExternalImageId"] for m in summary["matches"]] == ["person-a"]
    assert summary["matches"][0]["Similarity"] >= 80
    assert summary["searchedFaceConfidence"] > 0
    assert summary["deleteStatus"] == 200
    assert summary["afterDelete"] == "ResourceNotFoundException"
