"""Issue 20: StartFaceDetection/GetFaceDetection and StartFaceSearch/GetFaceSearch with boto3 against
a live ``regard serve``, the videos in S3 on loopback (moto's server): the enrolled person at the
right timestamps and not the others, pages and both SortBy orders, idempotent starts, unknown jobs,
NotificationChannel, the assessment gate of the identification profile, leads with timestamps,
erasure from finished results and a restart during a job (SUCCEEDED or FAILED, never lost)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from accountability.helpers import open_gate
from live_server import KeyedServer, spawn_serve, start_keyed
from regard.accountability import transparency
from regard.accountability.assessment import AssessmentStore
from regard.accountability.audit import AuditLog
from regard.accountability.policy import PolicyStore
from regard.accountability.review import ReviewQueue
from regard.cli.transparency import default_period
from regard.video.jobs import JobStore

from . import videos as v
from .conftest import PEOPLE

BUCKET = "videos"
CASE = {"x-regard-purpose": "locate a missing person", "x-regard-case-reference": "CASE-20"}
SAMPLE_MS = 200  # the default REGARD_VIDEO_SAMPLE_FPS, 5
DEADLINE_S = 300.0


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[str, Any]]:
    """moto's S3 server on loopback, without authentication (another module's fixture may have
    switched moto's authentication on for the session: it is off while this module runs)."""
    import boto3
    from moto import settings as moto_settings
    from moto.server import ThreadedMotoServer

    before = moto_settings.INITIAL_NO_AUTH_ACTION_COUNT
    moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")  # type: ignore[assignment]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    client.create_bucket(Bucket=BUCKET)
    try:
        yield endpoint, client
    finally:
        server.stop()
        moto_settings.INITIAL_NO_AUTH_ACTION_COUNT = before


def _env(endpoint: str, **extra: str) -> dict[str, str]:
    return {
        "REGARD_S3_ENDPOINT_URL": endpoint,
        "REGARD_S3_ACCESS_KEY_ID": "test",
        "REGARD_S3_SECRET_ACCESS_KEY": "test",
        **extra,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, s3: tuple[str, Any]) -> Iterator[KeyedServer]:
    data = tmp_path_factory.mktemp("video-api")
    s = start_keyed(
        data,
        {"admin": ("admin", "admin"), "investigator": ("operator", "identification")},
        _env(s3[0]),
    )
    yield s
    s.stop()


@pytest.fixture(scope="module")
def enrolled(server: KeyedServer, fr_images: Path) -> str:
    """The collection ``watch`` with one face, obama2 (another photo than the video's)."""
    rek = server.client("admin")
    rek.create_collection(CollectionId="watch")
    indexed = rek.index_faces(
        CollectionId="watch",
        Image={"Bytes": (fr_images / "obama2.jpg").read_bytes()},
        ExternalImageId="obama2",
    )
    face_id: str = indexed["FaceRecords"][0]["Face"]["FaceId"]
    return face_id


@pytest.fixture(scope="module")
def uploaded(s3: tuple[str, Any], people: v.Made, no_faces: v.Made) -> dict[str, dict[str, str]]:
    client = s3[1]
    client.upload_file(str(people.path), BUCKET, "people.mp4")
    client.upload_file(str(no_faces.path), BUCKET, "empty.mp4")
    return {name: {"S3Object": {"Bucket": BUCKET, "Name": name}} for name in ("people.mp4", "empty.mp4")}


def _wait(get: Any, job_id: str, **kw: Any) -> dict[str, Any]:
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        out: dict[str, Any] = get(JobId=job_id, **kw)
        if out["JobStatus"] != "IN_PROGRESS":
            return out
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still IN_PROGRESS after {DEADLINE_S} s")


def _all_persons(rek: Any, job_id: str, **kw: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    token = None
    while True:
        page = rek.get_face_search(JobId=job_id, **kw, **({"NextToken": token} if token else {}))
        out.extend(page["Persons"])
        token = page.get("NextToken")
        if not token:
            return out


def _matched_times(persons: list[dict[str, Any]], face_id: str) -> list[int]:
    return sorted(
        p["Timestamp"] for p in persons if any(m["Face"]["FaceId"] == face_id for m in p["FaceMatches"])
    )


def test_start_face_search_finds_the_enrolled_person_at_the_right_times(
    server: KeyedServer, enrolled: str, uploaded: dict[str, dict[str, str]], people: v.Made
) -> None:
    rek = server.client("admin")
    job_id = rek.start_face_search(CollectionId="watch", Video=uploaded["people.mp4"], JobTag="case-20")[
        "JobId"
    ]
    done = _wait(rek.get_face_search, job_id)
    assert done["JobStatus"] == "SUCCEEDED", done.get("StatusMessage")
    assert done["JobTag"] == "case-20" and done["Video"] == uploaded["people.mp4"]
    meta = done["VideoMetadata"]
    assert (meta["Codec"], meta["DurationMillis"], meta["FrameWidth"], meta["FrameHeight"]) == (
        "h264",
        5000,
        640,
        360,
    )
    assert meta["FrameRate"] == pytest.approx(10.0) and meta["Format"]
    persons = done["Persons"]
    times = _matched_times(persons, enrolled)
    obama, biden = PEOPLE
    assert abs(times[0] - obama.start * 1000) <= SAMPLE_MS
    assert abs(times[-1] - (obama.end * 1000 - SAMPLE_MS)) <= SAMPLE_MS
    # biden is tracked while on screen and matches nobody
    matched_index = {p["Person"]["Index"] for p in persons if p["FaceMatches"]}
    others = [p for p in persons if p["Person"]["Index"] not in matched_index]
    assert others and all(biden.start * 1000 - SAMPLE_MS <= p["Timestamp"] < biden.end * 1000 for p in others)
    match = next(p for p in persons if p["FaceMatches"])
    assert set(match["Person"]) == {"Index", "BoundingBox", "Face"}
    assert match["FaceMatches"][0]["Similarity"] >= 80.0
    assert match["FaceMatches"][0]["Face"]["ExternalImageId"] == "obama2"
    # the Start's audit record names the video by sha256 and its duration, never frames
    start = next(
        r for r in AuditLog(server.data_dir).records() if r.get("results", {}).get("job_id") == job_id
    )
    assert start["operation"] == "StartFaceSearch" and start["kind"] == "biometric"
    assert start["results"]["video"] == {"sha256": v_sha256(people.path), "duration_millis": 5000}
    assert start["parameters"]["Video"] == {"s3": {"Bucket": BUCKET, "Name": "people.mp4"}}


def v_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pages_and_both_sort_orders(
    server: KeyedServer, enrolled: str, uploaded: dict[str, dict[str, str]]
) -> None:
    rek = server.client("admin")
    job_id = rek.start_face_search(CollectionId="watch", Video=uploaded["people.mp4"])["JobId"]
    whole = _wait(rek.get_face_search, job_id)["Persons"]
    first = rek.get_face_search(JobId=job_id, MaxResults=4, SortBy="INDEX")
    assert len(first["Persons"]) == 4 and first["NextToken"]
    by_index = _all_persons(rek, job_id, MaxResults=4, SortBy="INDEX")
    assert len(by_index) == len(whole) > 8
    keys = [(p["Person"]["Index"], p["Timestamp"]) for p in by_index]
    assert keys == sorted(keys)
    by_time = _all_persons(rek, job_id, MaxResults=3, SortBy="TIMESTAMP")
    assert [(p["Timestamp"], p["Person"]["Index"]) for p in by_time] == sorted(
        (p["Timestamp"], p["Person"]["Index"]) for p in whole
    )
    with pytest.raises(ClientError) as bad:
        rek.get_face_search(JobId=job_id, MaxResults=1001)
    assert bad.value.response["Error"]["Code"] == "InvalidParameterException"


def test_the_same_client_request_token_starts_one_job(
    server: KeyedServer, enrolled: str, uploaded: dict[str, dict[str, str]]
) -> None:
    rek = server.client("admin")
    params = {"CollectionId": "watch", "Video": uploaded["people.mp4"], "ClientRequestToken": "token-20"}
    first = rek.start_face_search(**params)["JobId"]
    assert rek.start_face_search(**params)["JobId"] == first
    with pytest.raises(ClientError) as other:
        rek.start_face_search(**params, FaceMatchThreshold=95.0)
    assert other.value.response["Error"]["Code"] == "IdempotentParameterMismatchException"
    _wait(rek.get_face_search, first)


def test_unknown_jobs_notifications_and_missing_collections_are_refused(
    server: KeyedServer, enrolled: str, uploaded: dict[str, dict[str, str]]
) -> None:
    rek = server.client("admin")
    for call in (rek.get_face_search, rek.get_face_detection):
        with pytest.raises(rek.exceptions.ResourceNotFoundException):
            call(JobId="0123456789abcdef")
    with pytest.raises(rek.exceptions.InvalidParameterException) as refused:
        rek.start_face_detection(
            Video=uploaded["people.mp4"],
            NotificationChannel={
                "SNSTopicArn": "arn:aws:sns:us-east-1:123456789012:t",
                "RoleArn": "arn:aws:iam::123456789012:role/r",
            },
        )
    assert "regard does not send notifications; poll GetFaceDetection" in str(refused.value)
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.start_face_search(CollectionId="nope", Video=uploaded["people.mp4"])
    with pytest.raises(ClientError) as missing:
        rek.start_face_detection(Video={"S3Object": {"Bucket": BUCKET, "Name": "absent.mp4"}})
    assert missing.value.response["Error"]["Code"] == "InvalidS3ObjectException"


def test_face_detection_reports_faces_by_timestamp(
    server: KeyedServer, uploaded: dict[str, dict[str, str]]
) -> None:
    rek = server.client("admin")
    job_id = rek.start_face_detection(Video=uploaded["people.mp4"], FaceAttributes="ALL")["JobId"]
    done = _wait(rek.get_face_detection, job_id)
    assert done["JobStatus"] == "SUCCEEDED"
    faces = done["Faces"]
    assert faces and [f["Timestamp"] for f in faces] == sorted(f["Timestamp"] for f in faces)
    assert all("EyesOpen" in f["Face"] and "Landmarks" in f["Face"] for f in faces)
    page = rek.get_face_detection(JobId=job_id, MaxResults=2)
    assert len(page["Faces"]) == 2 and page["NextToken"]
    empty = _wait(rek.get_face_detection, rek.start_face_detection(Video=uploaded["empty.mp4"])["JobId"])
    assert empty["JobStatus"] == "SUCCEEDED" and empty["Faces"] == []


def test_identification_needs_an_assessment_and_matches_become_leads_with_timestamps(
    server: KeyedServer, enrolled: str, uploaded: dict[str, dict[str, str]], fr_images: Path
) -> None:
    inv = server.client("investigator", CASE)
    # no purpose and case reference: refused by the profile
    with pytest.raises(server.client("investigator").exceptions.AccessDeniedException):
        server.client("investigator").start_face_search(CollectionId="watch", Video=uploaded["people.mp4"])
    # no assessment covers the collection: the gate is closed
    with pytest.raises(inv.exceptions.AccessDeniedException) as gate:
        inv.start_face_search(CollectionId="watch", Video=uploaded["people.mp4"])
    assert "regard assess create" in str(gate.value)
    records = list(AuditLog(server.data_dir).records())
    refused = [r for r in records if r["operation"] == "StartFaceSearch" and r["outcome"] == "error"]
    assert refused and refused[-1]["assessment"]["status"] == "missing"

    open_gate(server.data_dir, ["watch"], fr_images)
    job_id = inv.start_face_search(CollectionId="watch", Video=uploaded["people.mp4"])["JobId"]
    done = _wait(inv.get_face_search, job_id)
    assert done["JobStatus"] == "SUCCEEDED"
    # (RegardLeadId on each match is in the raw JSON; boto3 drops members its model lacks)
    leads = [
        lead for lead in ReviewQueue(server.data_dir).list(status=None) if lead.operation == "StartFaceSearch"
    ]
    assert len(leads) == 1
    lead = leads[0]
    assert lead.face_id == enrolled and lead.operation == "StartFaceSearch"
    assert lead.case_reference == "CASE-20"
    assert lead.video_timestamp_millis is not None and abs(lead.video_timestamp_millis - 1000) <= SAMPLE_MS
    assert lead.video_frame_index is not None
    completed = [r for r in AuditLog(server.data_dir).records() if r["operation"] == "FaceSearchCompleted"]
    mine = [r for r in completed if r["parameters"]["JobId"] == job_id]
    assert len(mine) == 1 and mine[0]["results"]["lead_ids"] == [lead.lead_id]
    # the reviewers' evidence: the face from the video and the enrolled candidate's crop
    assert mine[0]["results"]["evidence"] == {"lead_crops": 2}
    # an admin key may read the job's results too
    assert server.client("admin").get_face_search(JobId=job_id)["JobStatus"] == "SUCCEEDED"
    # the transparency report counts the video searches as identification, and the lead they raised
    report = transparency.build(
        AuditLog(server.data_dir),
        AssessmentStore(server.data_dir),
        PolicyStore(server.data_dir),
        transparency.Period(*default_period(datetime.now(UTC))),
    )
    rows = [r for r in report["searches"]["rows"] if r["operation"] == "StartFaceSearch"]
    assert rows and {r["category"] for r in rows} == {"identification"}
    assert sum(r["success"] for r in rows) >= 1 and sum(r["refused"] for r in rows) >= 2
    assert report["leads"]["totals"]["raised"] >= 1


def test_deleting_the_face_removes_it_from_finished_results(
    server: KeyedServer, fr_images: Path, uploaded: dict[str, dict[str, str]]
) -> None:
    rek = server.client("admin")
    rek.create_collection(CollectionId="erase")
    face_id = rek.index_faces(CollectionId="erase", Image={"Bytes": (fr_images / "obama3.jpg").read_bytes()})[
        "FaceRecords"
    ][0]["Face"]["FaceId"]
    job_id = rek.start_face_search(CollectionId="erase", Video=uploaded["people.mp4"])["JobId"]
    assert _matched_times(_wait(rek.get_face_search, job_id)["Persons"], face_id)
    rek.delete_faces(CollectionId="erase", FaceIds=[face_id])
    after = rek.get_face_search(JobId=job_id)
    assert after["JobStatus"] == "SUCCEEDED" and _matched_times(after["Persons"], face_id) == []
    assert after["Persons"]  # the people seen are still reported, without the erased match


@pytest.mark.slow
def test_a_restart_during_a_job_leaves_it_finished_never_lost(
    tmp_path: Path, s3: tuple[str, Any], faces: dict[str, Any]
) -> None:
    long = v.make_people(tmp_path / "long.mp4", faces, PEOPLE, seconds=6.0)
    s3[1].upload_file(str(long.path), BUCKET, "long.mp4")
    data = tmp_path / "data"
    data.mkdir()
    env = _env(s3[0], REGARD_VIDEO_SAMPLE_FPS="10")
    # The first server accepts the job but runs none (processing paused), so the kill always
    # finds it unfinished, however fast the machine is.
    first = start_keyed(data, {"admin": ("admin", "admin")}, {**env, "REGARD_VIDEO_WORKERS": "0"})
    try:
        rek = first.client("admin")
        job_id = rek.start_face_detection(Video={"S3Object": {"Bucket": BUCKET, "Name": "long.mp4"}})["JobId"]
        assert rek.get_face_detection(JobId=job_id)["JobStatus"] == "IN_PROGRESS"
    finally:
        first.process.kill()  # no clean shutdown: the job is left as it was
        first.process.wait()
    assert JobStore(data).get(job_id).status == "IN_PROGRESS"  # the Start had answered: its row is there
    import os

    endpoint, proc, log_path = spawn_serve(data, dict(os.environ, REGARD_DATA_DIR=str(data), **env))
    second = KeyedServer(endpoint, data, proc, log_path, first.keys)
    try:
        done = _wait(second.client("admin").get_face_detection, job_id)
        # its video and its recorded Start are still there, so the restarted server runs it again
        assert done["JobStatus"] == "SUCCEEDED", done.get("StatusMessage")
        assert done["VideoMetadata"]["DurationMillis"] == 6000 and done["Faces"]
    finally:
        second.stop()
