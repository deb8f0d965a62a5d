"""Issue 20 on a shared PostgreSQL database (migration 11): the job table, idempotency, one runner,
erasure from finished results through a PostgreSQL store, and leads with the video columns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regard.accountability.audit import now_iso
from regard.accountability.review import Candidate, ReviewQueue
from regard.errors import IdempotentParameterMismatch
from regard.service import Service
from regard.shared_db import PostgresDb
from regard.video.jobs import FACE_SEARCH, IN_PROGRESS, SUCCEEDED, Job, JobRequest, JobStore, node_name

pytestmark = pytest.mark.postgres


def _job(data_dir: Path, job_id: str, request: JobRequest) -> Job:
    return Job(
        job_id=job_id,
        kind=FACE_SEARCH,
        status=IN_PROGRESS,
        status_message=None,
        created_at=now_iso(),
        finished_at=None,
        node=node_name(data_dir),
        client_request_token=request.client_request_token,
        request_hash=request.digest(),
        request=request.to_json(),
        collection_id=request.collection_id,
        job_tag=None,
        access_key_id="RGKTEST",
        principal="p",
        role="operator",
        profile="identification",
        purpose=None,
        case_reference=None,
        request_id="r",
        video_sha256="0" * 64,
        metadata=None,
        results=None,
        cancel_requested=False,
    )


def test_jobs_and_leads_in_postgres(pg_url: str, tmp_path: Path) -> None:
    db = PostgresDb(pg_url)
    try:
        store = JobStore(tmp_path, db=db)
        request = JobRequest(
            FACE_SEARCH, {"S3Object": {"Bucket": "b", "Name": "v.mp4"}}, "watch", client_request_token="t"
        )
        first = store.insert(_job(tmp_path, "job-1", request))
        assert store.insert(_job(tmp_path, "job-2", request)).job_id == first.job_id == "job-1"
        other = JobRequest(
            FACE_SEARCH, {"S3Object": {"Bucket": "b", "Name": "w.mp4"}}, "watch", client_request_token="t"
        )
        with pytest.raises(IdempotentParameterMismatch):
            store.insert(_job(tmp_path, "job-3", other))
        assert store.claim("job-1") and store.claim("job-1")  # this process, again
        results = {
            "Persons": [
                {
                    "Timestamp": 0,
                    "Person": {"Index": 0},
                    "FaceMatches": [{"Similarity": 90.0, "Face": {"FaceId": "f1"}}],
                }
            ]
        }
        assert store.finish("job-1", SUCCEEDED, None, results=results)
        assert not store.claim("job-1")
        assert store.erase_faces("watch", ["f1"], whole=False) == 1
        assert store.get("job-1").results == {
            "Persons": [{"Timestamp": 0, "Person": {"Index": 0}, "FaceMatches": []}]
        }

        queue = ReviewQueue(tmp_path, db=db)
        (lead_id,) = queue.add(
            request_id="r",
            requester_key="k",
            requester_principal="p",
            collection_id="watch",
            operation="StartFaceSearch",
            candidates=[
                Candidate("f2", None, None, 91.0, 1e-5, video_timestamp_millis=1200, video_frame_index=12)
            ],
            purpose=None,
            case_reference=None,
        )
        lead = queue.get(lead_id)
        assert (lead.video_timestamp_millis, lead.video_frame_index) == (1200, 12)
        assert json.loads(json.dumps(lead.to_json()))["VideoFrameIndex"] == 12
    finally:
        db.close()


def test_deleting_a_face_in_a_postgres_store_erases_it_from_job_results(pg_url: str, tmp_path: Path) -> None:
    """The removal listener reaches the shared job table whichever process deletes."""
    service = Service.open(tmp_path, database_url=pg_url)
    db = PostgresDb(pg_url)
    try:
        service.create_collection("watch")
        store = JobStore(tmp_path, db=db)
        request = JobRequest(FACE_SEARCH, {"S3Object": {"Bucket": "b", "Name": "v.mp4"}}, "watch")
        store.insert(_job(tmp_path, "job-9", request))
        match = {"Similarity": 90.0, "Face": {"FaceId": "gone"}}
        store.finish(
            "job-9",
            SUCCEEDED,
            None,
            results={"Persons": [{"Timestamp": 0, "Person": {"Index": 0}, "FaceMatches": [match]}]},
        )
        from regard.service.base import Removal

        service._removed(Removal("watch", face_ids=("gone",)))
        assert store.get("job-9").results == {
            "Persons": [{"Timestamp": 0, "Person": {"Index": 0}, "FaceMatches": []}]
        }
    finally:
        db.close()
        service.close()
