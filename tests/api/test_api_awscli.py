"""The AWS CLI (`aws rekognition ... --endpoint-url`) against the live server, unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from live_server import LiveServer

pytestmark = pytest.mark.slow

AWS = Path(sys.executable).parent / "aws"


def aws(api: LiveServer, home: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": str(AWS.parent) + ":/usr/bin:/bin",
        "HOME": str(home),
        "AWS_ACCESS_KEY_ID": api.access_key_id,
        "AWS_SECRET_ACCESS_KEY": api.secret,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
        "AWS_MAX_ATTEMPTS": "1",
    }
    done = subprocess.run(
        [str(AWS), "rekognition", *args, "--endpoint-url", api.endpoint, "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def out(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout) if done.stdout.strip() else {}


def test_aws_cli_round_trip(api: LiveServer, fr_images: Path, tmp_path: Path) -> None:
    if not AWS.exists():
        pytest.skip("the awscli package is not installed in this environment")
    obama, obama3, biden = (fr_images / n for n in ("obama.jpg", "obama3.jpg", "biden.jpg"))
    cid = "cli-collection"
    created = out(aws(api, tmp_path, "create-collection", "--collection-id", cid))
    assert created["StatusCode"] == 200 and created["CollectionArn"].endswith(cid)
    try:
        detected = out(
            aws(api, tmp_path, "detect-faces", "--image-bytes", f"fileb://{obama}", "--attributes", "ALL")
        )
        assert len(detected["FaceDetails"]) == 1 and len(detected["FaceDetails"][0]["Landmarks"]) == 30

        for path, ext in ((obama, "o1"), (biden, "b1")):
            rec = out(
                aws(
                    api,
                    tmp_path,
                    "index-faces",
                    "--collection-id",
                    cid,
                    "--image-bytes",
                    f"fileb://{path}",
                    "--external-image-id",
                    ext,
                )
            )
            assert rec["FaceRecords"][0]["Face"]["ExternalImageId"] == ext

        # --max-items makes the CLI paginate itself and hand back a NextToken.
        first = out(aws(api, tmp_path, "list-faces", "--collection-id", cid, "--max-items", "1"))
        assert len(first["Faces"]) == 1 and first["NextToken"]
        rest = out(
            aws(api, tmp_path, "list-faces", "--collection-id", cid, "--starting-token", first["NextToken"])
        )
        assert {f["ExternalImageId"] for f in first["Faces"] + rest["Faces"]} == {"o1", "b1"}
        assert (
            len(out(aws(api, tmp_path, "list-faces", "--collection-id", cid, "--page-size", "1"))["Faces"])
            == 2
        )

        found = out(
            aws(
                api,
                tmp_path,
                "search-faces-by-image",
                "--collection-id",
                cid,
                "--image-bytes",
                f"fileb://{obama3}",
            )
        )
        assert [m["Face"]["ExternalImageId"] for m in found["FaceMatches"]] == ["o1"]

        compared = out(
            aws(
                api,
                tmp_path,
                "compare-faces",
                "--source-image-bytes",
                f"fileb://{obama}",
                "--target-image-bytes",
                f"fileb://{obama3}",
            )
        )
        assert compared["FaceMatches"][0]["Similarity"] >= 80
        assert cid in out(aws(api, tmp_path, "list-collections"))["CollectionIds"]

        bad_id = aws(api, tmp_path, "describe-collection", "--collection-id", "bad id", ok=False)
        assert bad_id.returncode != 0 and "InvalidParameterException" in bad_id.stderr
        junk = tmp_path / "junk.jpg"
        junk.write_bytes(b"not really a jpeg")
        bad_image = aws(api, tmp_path, "detect-faces", "--image-bytes", f"fileb://{junk}", ok=False)
        assert bad_image.returncode != 0 and "InvalidImageFormatException" in bad_image.stderr
        missing = aws(api, tmp_path, "describe-collection", "--collection-id", "nope", ok=False)
        assert "ResourceNotFoundException" in missing.stderr
    finally:
        aws(api, tmp_path, "delete-collection", "--collection-id", cid)
    gone = aws(api, tmp_path, "describe-collection", "--collection-id", cid, ok=False)
    assert "ResourceNotFoundException" in gone.stderr
