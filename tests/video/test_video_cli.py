"""Issue 20: ``regard video detect|search FILE`` on local files (through the guard as the local
operator, a progress bar on stderr, GetFaceDetection / GetFaceSearch JSON on stdout), ``regard video
jobs`` and ``regard video cancel JOB`` (recorded)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from regard.accountability.audit import AuditLog, now_iso
from regard.cli.main import main
from regard.video.jobs import FACE_SEARCH, IN_PROGRESS, Job, JobRequest, JobStore, node_name

from . import videos as v
from .conftest import PEOPLE

SAMPLE_MS = 200


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def data(tmp_path: Path, capsys: pytest.CaptureFixture[str], fr_images: Path) -> list[str]:
    d = ["--data-dir", str(tmp_path / "data")]
    assert _cli(capsys, "collections", "create", "watch", *d)[0] == 0
    rc, _, err = _cli(capsys, "index", "watch", str(fr_images / "obama2.jpg"), *d)
    assert rc == 0, err
    return d


def test_video_search_prints_get_face_search_json_and_records_the_video(
    data: list[str], capsys: pytest.CaptureFixture[str], people: v.Made
) -> None:
    rc, out, err = _cli(capsys, "video", "search", "watch", str(people.path), "--json", *data)
    assert rc == 0, err
    assert "video" in err and "5.0/5.0" in err  # the progress bar, over the video's seconds
    got: dict[str, Any] = json.loads(out)
    assert got["JobStatus"] == "SUCCEEDED" and got["VideoMetadata"]["DurationMillis"] == 5000
    times = sorted(p["Timestamp"] for p in got["Persons"] if p["FaceMatches"])
    assert abs(times[0] - PEOPLE[0].start * 1000) <= SAMPLE_MS
    assert times[-1] < PEOPLE[0].end * 1000
    records = list(AuditLog(Path(data[1])).records())
    start = next(r for r in records if r["operation"] == "StartFaceSearch")
    assert start["principal"].startswith("local:") and start["outcome"] == "success"
    assert start["results"]["video"]["sha256"] == got["VideoSha256"]
    assert start["results"]["video"]["duration_millis"] == 5000
    done = next(r for r in records if r["operation"] == "FaceSearchCompleted")
    assert done["parameters"]["JobId"] == got["JobId"] and done["results"]["matched_tracks"] == 1


def test_video_detect_and_jobs(data: list[str], capsys: pytest.CaptureFixture[str], people: v.Made) -> None:
    rc, out, err = _cli(capsys, "video", "detect", str(people.path), "--fps", "2", "--json", *data)
    assert rc == 0, err
    got = json.loads(out)
    stamps = sorted({f["Timestamp"] for f in got["Faces"]})
    assert stamps and all(t % 500 == 0 for t in stamps)  # 2 frames a second
    rc, out, _ = _cli(capsys, "video", "jobs", "--json", *data)
    jobs = json.loads(out)["Jobs"]
    assert [(j["JobId"], j["Kind"], j["JobStatus"]) for j in jobs] == [
        (got["JobId"], "FACE_DETECTION", "SUCCEEDED")
    ]
    rc, out, _ = _cli(capsys, "video", "jobs", *data)
    assert rc == 0 and got["JobId"] in out


def test_video_cancel_ends_a_job_no_process_runs(
    data: list[str], capsys: pytest.CaptureFixture[str], people: v.Made
) -> None:
    """A job a stopped server left queued: ``regard video cancel`` ends it FAILED, recorded."""
    store = JobStore(Path(data[1]))
    request = JobRequest(FACE_SEARCH, {"Path": str(people.path)}, collection_id="watch")
    job = Job(
        job_id="a1b2c3",
        kind=FACE_SEARCH,
        status=IN_PROGRESS,
        status_message=None,
        created_at=now_iso(),
        finished_at=None,
        node=node_name(Path(data[1])),  # this node's, with no process running it
        client_request_token=None,
        request_hash=request.digest(),
        request=request.to_json(),
        collection_id="watch",
        job_tag=None,
        access_key_id=None,
        principal="local:x",
        role="admin",
        profile="local",
        purpose=None,
        case_reference=None,
        request_id="r1",
        video_sha256=None,
        metadata=None,
        results=None,
        cancel_requested=False,
    )
    store.insert(job)
    rc, out, err = _cli(capsys, "video", "cancel", "a1b2c3", "--json", *data)
    assert rc == 0, err
    assert json.loads(out)["JobStatus"] == "FAILED"
    cancels = [r for r in AuditLog(Path(data[1])).records() if r["operation"] == "CancelVideoJob"]
    assert [(r["parameters"]["JobId"], r["outcome"]) for r in cancels] == [("a1b2c3", "success")]
    rc, _, err = _cli(capsys, "video", "cancel", "no-such-job", *data)
    assert rc == 2 and "ResourceNotFound" in err
