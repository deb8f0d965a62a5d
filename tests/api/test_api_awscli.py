"""The AWS CLI (`aws rekognition ... --endpoint-url`) against the live server, unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from waiting import wait_for

if TYPE_CHECKING:
    from live_server import LiveServer, S3Server

pytestmark = pytest.mark.slow

AWS = Path(sys.executable).parent / "aws"
#: Rekognition operations the CLI has completed successfully in this process (checked by the last test).
CALLED: set[str] = set()


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
    if not AWS.exists():
        pytest.skip("the awscli package is not installed in this environment")
    done = subprocess.run(
        [str(AWS), "rekognition", *args, "--endpoint-url", api.endpoint, "--output", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if ok:
        assert done.returncode == 0, done.stderr
    if done.returncode == 0:
        CALLED.add("".join(part.capitalize() for part in args[0].split("-")))
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


def test_aws_cli_users_tags_and_face_operations(api: LiveServer, fr_images: Path, tmp_path: Path) -> None:
    def run(*args: str) -> Any:
        return out(aws(api, tmp_path, *args))

    cid = "cli-users"
    arn = run("create-collection", "--collection-id", cid, "--tags", "team=cli")["CollectionArn"]
    try:
        ids = {}
        for name in ("obama", "obama2", "obama3", "biden"):
            rec = run(
                "index-faces",
                "--collection-id",
                cid,
                "--image-bytes",
                f"fileb://{fr_images / (name + '.jpg')}",
                "--external-image-id",
                name,
            )
            ids[name] = rec["FaceRecords"][0]["Face"]["FaceId"]
        assert run("describe-collection", "--collection-id", cid)["FaceCount"] == 4
        similar = run("search-faces", "--collection-id", cid, "--face-id", ids["obama"])
        assert {m["Face"]["ExternalImageId"] for m in similar["FaceMatches"]} == {"obama2", "obama3"}

        run("create-user", "--collection-id", cid, "--user-id", "barack")
        run("create-user", "--collection-id", cid, "--user-id", "joe")
        users = run("list-users", "--collection-id", cid, "--max-items", "1")
        assert len(users["Users"]) == 1 and users["NextToken"]
        assoc = run(
            "associate-faces",
            "--collection-id",
            cid,
            "--user-id",
            "barack",
            "--face-ids",
            ids["obama"],
            ids["obama2"],
        )
        assert assoc["UserStatus"] == "ACTIVE" and len(assoc["AssociatedFaces"]) == 2
        run("associate-faces", "--collection-id", cid, "--user-id", "joe", "--face-ids", ids["biden"])
        by_face = run("search-users", "--collection-id", cid, "--face-id", ids["obama3"])
        assert [m["User"]["UserId"] for m in by_face["UserMatches"]] == ["barack"]
        by_image = run(
            "search-users-by-image",
            "--collection-id",
            cid,
            "--image-bytes",
            f"fileb://{fr_images / 'biden.jpg'}",
        )
        assert [m["User"]["UserId"] for m in by_image["UserMatches"]] == ["joe"]
        dis = run(
            "disassociate-faces", "--collection-id", cid, "--user-id", "barack", "--face-ids", ids["obama2"]
        )
        assert [f["FaceId"] for f in dis["DisassociatedFaces"]] == [ids["obama2"]]
        run("delete-user", "--collection-id", cid, "--user-id", "joe")
        assert [u["UserId"] for u in run("list-users", "--collection-id", cid)["Users"]] == ["barack"]
        deleted = run("delete-faces", "--collection-id", cid, "--face-ids", ids["obama2"], ids["obama"])
        assert deleted["DeletedFaces"] == [ids["obama2"]]
        assert deleted["UnsuccessfulFaceDeletions"][0]["Reasons"] == ["ASSOCIATED_TO_AN_EXISTING_USER"]

        run("tag-resource", "--resource-arn", arn, "--tags", "owner=qa")
        assert run("list-tags-for-resource", "--resource-arn", arn)["Tags"] == {"team": "cli", "owner": "qa"}
        run("untag-resource", "--resource-arn", arn, "--tag-keys", "team")
        assert run("list-tags-for-resource", "--resource-arn", arn)["Tags"] == {"owner": "qa"}
        bad = aws(
            api,
            tmp_path,
            "associate-faces",
            "--collection-id",
            cid,
            "--user-id",
            "barack",
            "--face-ids",
            "not-a-uuid",
            ok=False,
        )
        assert "InvalidParameterException" in bad.stderr
    finally:
        run("delete-collection", "--collection-id", cid)


def test_aws_cli_stored_video(api: LiveServer, s3_endpoint: S3Server, tmp_path: Path) -> None:
    """Issue 20: the video operations through the AWS CLI (a face-free video: the calls, not the
    analysis, are under test here; tests/video has the analysis)."""
    from video import videos

    made = videos.make_pattern(tmp_path / "clip.mp4", ext="mp4", seconds=1.0)
    s3_endpoint.client().upload_file(str(made.path), "photos", "awscli-clip.mp4")
    video = "S3Object={Bucket=photos,Name=awscli-clip.mp4}"
    cid = "cli-video"
    aws(api, tmp_path, "create-collection", "--collection-id", cid)
    try:
        detection = out(aws(api, tmp_path, "start-face-detection", "--video", video))["JobId"]
        search = out(aws(api, tmp_path, "start-face-search", "--collection-id", cid, "--video", video))[
            "JobId"
        ]
        for command, job_id in (("get-face-detection", detection), ("get-face-search", search)):
            got: dict[str, Any] = {}

            def finished(c: str = command, j: str = job_id, got: dict[str, Any] = got) -> bool:
                got.update(out(aws(api, tmp_path, c, "--job-id", j)))
                return bool(got["JobStatus"] != "IN_PROGRESS")

            wait_for(finished, f"{command} {job_id} to finish", limit=300.0)
            assert got["JobStatus"] == "SUCCEEDED", got
            assert got["VideoMetadata"]["DurationMillis"] == 1000
    finally:
        aws(api, tmp_path, "delete-collection", "--collection-id", cid)


def test_aws_cli_drove_every_operation(
    api: LiveServer, fr_images: Path, s3_endpoint: S3Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Every operation regard serves has succeeded through the AWS CLI. Run alone (or before the
    scenarios above), it runs those scenarios itself, so the result does not depend on order."""
    from regard.api.rekognition.operations import OPERATIONS

    scenarios = (test_aws_cli_round_trip, test_aws_cli_users_tags_and_face_operations)
    if not set(OPERATIONS) <= CALLED:
        for scenario in scenarios:
            scenario(api, fr_images, tmp_path_factory.mktemp(scenario.__name__))
        test_aws_cli_stored_video(api, s3_endpoint, tmp_path_factory.mktemp("video"))
    assert set(OPERATIONS) <= CALLED, f"not driven through the AWS CLI: {sorted(set(OPERATIONS) - CALLED)}"
