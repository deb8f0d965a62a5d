"""Issue 20: stored-video jobs in process (regard.video.jobs): idempotent starts, results and their
pages, leads with the video's timestamp and frame, the completion record, erasure from finished
results, restart (resume or fail, never lost) and cancellation. Real engine, store and guard; the
videos come from tests/video/videos.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from regard.accountability.audit import AuditLog
from regard.accountability.guard import Guard
from regard.accountability.policy import LOCAL_PROFILE
from regard.accountability.request import Caller
from regard.accountability.review import PENDING, ReviewQueue
from regard.config import Settings
from regard.errors import IdempotentParameterMismatch, InvalidPaginationToken, ResourceNotFound
from regard.face.engine import Engine
from regard.service import Service
from regard.video.jobs import (
    FACE_DETECTION,
    FACE_SEARCH,
    FAILED,
    IN_PROGRESS,
    SUCCEEDED,
    JobRequest,
    JobStore,
    VideoJobs,
    page,
    runner_alive,
    runner_name,
)

from . import videos as v
from .conftest import PEOPLE

#: A caller under review (the identification profile is in the default policy).
INVESTIGATOR = Caller("RGKINV00000000000001", "investigator", "operator", "identification")
LOCAL = Caller(None, "local:tests", "admin", LOCAL_PROFILE.name)
SAMPLE_MS = 200  # REGARD_VIDEO_SAMPLE_FPS 5: one sample every 200 ms


@dataclass
class Setup:
    data_dir: Path
    service: Service
    guard: Guard
    jobs: VideoJobs
    face_ids: dict[str, str]

    def start(self, request: JobRequest, caller: Caller = LOCAL, *, record: bool = True) -> str:
        started = self.jobs.prepare(request, caller, str(uuid.uuid4()), "a case", "CASE-1")
        if record and started.after_record is not None:
            seq = self.guard.audit.append({"kind": "biometric", "operation": "Start", "outcome": "success"})
            started.after_record({**seq, "threshold": {"effective": 80.0, "floor_fmr": 1e-4}})
        return started.job_id


def _setup(data_dir: Path, engine: Engine, fr_images: Path, inline: bool = True) -> Setup:
    settings = Settings.from_env(data_dir=data_dir)
    service = Service.open(data_dir, engine=engine)
    if "watch" not in service.list_collections(None, None).collection_ids:
        service.create_collection("watch")
    indexed = service.index_faces(
        "watch", (fr_images / "obama2.jpg").read_bytes(), external_image_id="obama2"
    )
    guard = Guard(data_dir, service_factory=lambda: service)
    jobs = VideoJobs(
        JobStore(data_dir),
        settings=settings,
        engine=engine,
        guard=guard,
        service_factory=lambda: service,
        inline=inline,
    )
    return Setup(data_dir, service, guard, jobs, {"obama2": indexed.face_records[0].face.face_id})


@pytest.fixture
def setup(tmp_path: Path, engine: Engine, fr_images: Path) -> Iterator[Setup]:
    s = _setup(tmp_path / "data", engine, fr_images)
    yield s
    s.jobs.close()
    s.service.close()


def _search(path: Path, token: str | None = None, **kw: Any) -> JobRequest:
    return JobRequest(
        FACE_SEARCH, {"Path": str(path)}, collection_id="watch", client_request_token=token, **kw
    )


def _matched_times(results: dict[str, Any], face_id: str) -> list[int]:
    return sorted(
        p["Timestamp"]
        for p in results["Persons"]
        if any(m["Face"]["FaceId"] == face_id for m in p["FaceMatches"])
    )


def test_a_search_job_finds_the_enrolled_person_when_they_are_on_screen(setup: Setup, people: v.Made) -> None:
    job = setup.jobs.run(setup.start(_search(people.path)))
    assert job.status == SUCCEEDED and job.status_message is None
    assert job.metadata is not None and job.metadata["DurationMillis"] == 5000
    times = _matched_times(job.results or {}, setup.face_ids["obama2"])
    obama = PEOPLE[0]
    # within one sampled frame of the appearance (1.0 s to 3.0 s, end excluded)
    assert times and abs(times[0] - obama.start * 1000) <= SAMPLE_MS
    assert abs(times[-1] - (obama.end * 1000 - SAMPLE_MS)) <= SAMPLE_MS
    # biden's track is seen (2.0 s to 4.0 s) but matches nothing: he is not enrolled
    unmatched = [p for p in (job.results or {})["Persons"] if not p["FaceMatches"]]
    assert unmatched and all(1800 <= p["Timestamp"] <= 4000 for p in unmatched)
    # the video file is the operator's own: left where it is
    assert people.path.is_file()


def test_search_leads_carry_timestamp_and_frame_and_the_end_is_recorded(setup: Setup, people: v.Made) -> None:
    job = setup.jobs.run(setup.start(_search(people.path), INVESTIGATOR))
    assert job.status == SUCCEEDED
    leads = ReviewQueue(setup.data_dir).list(status=PENDING)
    assert len(leads) == 1
    lead = leads[0]
    assert lead.operation == "StartFaceSearch" and lead.face_id == setup.face_ids["obama2"]
    assert lead.video_timestamp_millis is not None and abs(lead.video_timestamp_millis - 1000) <= SAMPLE_MS
    assert lead.video_frame_index is not None and abs(lead.video_frame_index - 10) <= 2  # 10 fps
    assert lead.to_json()["VideoTimestampMillis"] == lead.video_timestamp_millis
    assert (lead.purpose, lead.case_reference) == ("a case", "CASE-1")
    # the matches in the results name their lead
    ids = {m.get("RegardLeadId") for p in (job.results or {})["Persons"] for m in p["FaceMatches"]}
    assert ids == {lead.lead_id}
    completed = [r for r in AuditLog(setup.data_dir).records() if r["operation"] == "FaceSearchCompleted"]
    assert len(completed) == 1
    rec = completed[0]
    assert rec["kind"] == "system" and rec["outcome"] == "success"
    assert rec["parameters"]["JobId"] == job.job_id
    assert rec["parameters"]["Video"] == {"sha256": job.video_sha256, "duration_millis": 5000}
    assert rec["results"]["lead_ids"] == [lead.lead_id] and rec["results"]["matched_tracks"] == 1
    assert rec["results"]["matches"][0]["frame_index"] == lead.video_frame_index


def test_the_local_operator_raises_no_leads(setup: Setup, people: v.Made) -> None:
    setup.jobs.run(setup.start(_search(people.path)))
    assert ReviewQueue(setup.data_dir).list(status=None) == []


def test_detection_reports_every_sampled_face(setup: Setup, people: v.Made, no_faces: v.Made) -> None:
    job = setup.jobs.run(
        setup.start(JobRequest(FACE_DETECTION, {"Path": str(people.path)}, face_attributes="ALL"))
    )
    faces = (job.results or {})["Faces"]
    times = sorted({f["Timestamp"] for f in faces})
    assert times[0] >= 1000 - SAMPLE_MS and times[-1] <= 4000
    assert all("EyesOpen" in f["Face"] and "AgeRange" not in f["Face"] for f in faces)
    empty = setup.jobs.run(setup.start(JobRequest(FACE_DETECTION, {"Path": str(no_faces.path)})))
    assert empty.status == SUCCEEDED and (empty.results or {})["Faces"] == []


def test_a_truncated_video_fails_its_job_with_a_message(setup: Setup, truncated: tuple[v.Made, Path]) -> None:
    job_id = setup.start(JobRequest(FACE_DETECTION, {"Path": str(truncated[1])}))
    job = setup.jobs.run(job_id)
    assert job.status == FAILED and job.status_message


def test_the_same_token_is_the_same_job_and_another_request_is_refused(setup: Setup, people: v.Made) -> None:
    first = setup.start(_search(people.path, token="tok-1"))
    again = setup.jobs.prepare(_search(people.path, token="tok-1"), LOCAL, "r2", None, None)
    assert again.job_id == first and not again.new and again.after_record is None
    with pytest.raises(IdempotentParameterMismatch):
        setup.jobs.prepare(
            _search(people.path, token="tok-1", face_match_threshold=99.0), LOCAL, "r3", None, None
        )
    # another caller's token is another job
    other = setup.jobs.prepare(_search(people.path, token="tok-1"), INVESTIGATOR, "r4", None, None)
    assert other.job_id != first


def test_pages_and_both_sort_orders(setup: Setup, people: v.Made) -> None:
    job = setup.jobs.run(setup.start(_search(people.path)))
    everything = (job.results or {})["Persons"]
    assert len(everything) > 5
    pages, token = [], None
    while True:
        got = page(job, 3, token, "INDEX")
        pages.append(got.items)
        token = got.next_token
        if token is None:
            break
    flat = [p for chunk in pages for p in chunk]
    assert all(len(chunk) == 3 for chunk in pages[:-1]) and len(flat) == len(everything)
    assert [(p["Person"]["Index"], p["Timestamp"]) for p in flat] == sorted(
        (p["Person"]["Index"], p["Timestamp"]) for p in everything
    )
    by_time = page(job, None, None, "TIMESTAMP").items
    assert [(p["Timestamp"], p["Person"]["Index"]) for p in by_time] == sorted(
        (p["Timestamp"], p["Person"]["Index"]) for p in everything
    )
    with pytest.raises(InvalidPaginationToken):
        page(job, 3, "not-a-token", None)
    with pytest.raises(ResourceNotFound):
        setup.jobs.store.get("no-such-job")


def test_deleting_a_face_removes_it_from_finished_results(setup: Setup, people: v.Made) -> None:
    job = setup.jobs.run(setup.start(_search(people.path)))
    face_id = setup.face_ids["obama2"]
    assert _matched_times(job.results or {}, face_id)
    setup.service.delete_faces("watch", [face_id])
    after = setup.jobs.store.get(job.job_id)
    assert _matched_times(after.results or {}, face_id) == []
    assert face_id not in (setup.data_dir / "video_jobs.sqlite3").read_bytes().decode("latin-1")


def test_a_restart_resumes_or_fails_every_unfinished_job(
    tmp_path: Path, engine: Engine, fr_images: Path, people: v.Made
) -> None:
    data_dir = tmp_path / "data"
    first = _setup(data_dir, engine, fr_images)
    # a job whose start was recorded, and one whose start never was (the server stopped between)
    recorded = first.start(_search(people.path))
    unrecorded = first.start(_search(people.path, token="t2"), record=False)
    first.jobs.close()
    first.service.close()
    assert first.jobs.store.get(recorded).status == IN_PROGRESS

    second = _setup(data_dir, engine, fr_images, inline=False)  # a server: a worker pool
    try:
        assert second.jobs.resume() == [recorded]
        assert second.jobs.store.get(unrecorded).status == FAILED
        job = _wait_finished(second.jobs.store, recorded)
        assert job.status in (SUCCEEDED, FAILED)
    finally:
        second.jobs.close(wait=True)
        second.service.close()


def _wait_finished(store: JobStore, job_id: str, deadline_s: float = 300.0) -> Any:
    import time

    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        job = store.get(job_id)
        if job.status != IN_PROGRESS:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} still IN_PROGRESS after {deadline_s} s")


def test_a_cancelled_job_ends_failed_and_the_cancellation_is_recorded(setup: Setup, people: v.Made) -> None:
    job_id = setup.start(_search(people.path))
    job = setup.jobs.cancel(job_id, actor="local:tests")
    assert job.status == FAILED and "cancelled" in (job.status_message or "")
    records = [r for r in AuditLog(setup.data_dir).records() if r["operation"] == "CancelVideoJob"]
    assert [(r["parameters"]["JobId"], r["outcome"]) for r in records] == [(job_id, "success")]
    # a finished job cannot be cancelled; the attempt is recorded too
    setup.jobs.cancel(job_id, actor="local:tests")
    records = [r for r in AuditLog(setup.data_dir).records() if r["operation"] == "CancelVideoJob"]
    assert [r["outcome"] for r in records] == ["success", "error"]


def test_a_job_has_one_runner_at_a_time(setup: Setup, people: v.Made) -> None:
    """Two server processes resuming the same job at start-up run it once: a job is claimed by a
    live process (``host:pid:token``); a dead one's claim, or an earlier process's with the same
    pid (a restarted container), is taken over."""
    import os
    import socket
    import subprocess
    import sys

    job_id = setup.start(_search(people.path))
    store = setup.jobs.store
    host = socket.gethostname()

    def runner(value: str) -> None:
        with store.db.transaction() as cur:
            cur.execute("UPDATE video_jobs SET runner = ? WHERE job_id = ?", (value, job_id))

    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        runner(f"{host}:{other.pid}:other")
        assert not store.claim(job_id) and not runner_alive(None)
        assert setup.jobs.run(job_id).status == IN_PROGRESS  # not run twice
    finally:
        assert other.stdin is not None
        other.stdin.close()
        other.wait()
    assert not runner_alive(f"{host}:{other.pid}:other")
    assert store.claim(job_id)  # its runner is gone
    runner(f"{host}:{os.getpid()}:an-earlier-process")
    assert store.claim(job_id) and store.get(job_id).runner == runner_name()
    assert setup.jobs.run(job_id).status == SUCCEEDED
    assert not store.claim(job_id)  # ended


def test_an_older_review_file_gains_the_video_columns(tmp_path: Path) -> None:
    """review.sqlite3 made before issue 20: opening it adds video_timestamp_millis and
    video_frame_index (once), and its leads read back with None there."""
    import sqlite3

    from regard.accountability import review

    old_schema = review._SCHEMA  # the first schema, unchanged: the columns are added by ALTER TABLE
    (tmp_path / "d").mkdir(mode=0o700)
    with sqlite3.connect(tmp_path / "d" / review.FILE_NAME) as db:
        db.executescript(old_schema)
        db.execute(
            "INSERT INTO leads (lead_id, created_at, request_id, collection_id, operation, similarity, fmr, "
            "status) VALUES ('l1', '2026-01-01T00:00:00Z', 'r', 'c', 'SearchFaces', 90.0, 1e-5, ?)",
            (PENDING,),
        )
    for _ in range(2):
        lead = ReviewQueue(tmp_path / "d").get("l1")
        assert (lead.video_timestamp_millis, lead.video_frame_index) == (None, None)
    with sqlite3.connect(tmp_path / "d" / review.FILE_NAME) as db:
        columns = [r[1] for r in db.execute("PRAGMA table_info(leads)")]
    assert columns[-2:] == ["video_timestamp_millis", "video_frame_index"]
