"""Shared state in PostgreSQL: stored-video jobs (StartFaceDetection, StartFaceSearch), as
:mod:`regard.video.jobs` keeps them in ``video_jobs.sqlite3``, and the place in a video of a lead
a video search raised (``leads.video_timestamp_millis``, ``leads.video_frame_index``; the SQLite
queue adds the same columns to ``review.sqlite3`` itself). The SQLite step is empty (own files)."""

SQLITE = ""

#: The jobs table as both backends create it (:mod:`regard.video.jobs` runs it on its own SQLite file).
VIDEO_JOBS = """
CREATE TABLE IF NOT EXISTS video_jobs (
    job_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    status_message TEXT,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    node TEXT NOT NULL,
    client_request_token TEXT,
    request_hash TEXT NOT NULL,
    request TEXT NOT NULL,
    collection_id TEXT,
    job_tag TEXT,
    access_key_id TEXT,
    principal TEXT,
    role TEXT,
    profile TEXT,
    purpose TEXT,
    case_reference TEXT,
    request_id TEXT,
    video_sha256 TEXT,
    metadata TEXT,
    results TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    runner TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS video_jobs_token ON video_jobs (kind, access_key_id, client_request_token);
CREATE INDEX IF NOT EXISTS video_jobs_status ON video_jobs (status, created_at);
"""

POSTGRES = (
    VIDEO_JOBS
    + """ALTER TABLE video_jobs ALTER COLUMN results SET STATISTICS 0;
ALTER TABLE leads ADD COLUMN IF NOT EXISTS video_timestamp_millis BIGINT;
ALTER TABLE leads ADD COLUMN IF NOT EXISTS video_frame_index BIGINT
"""
)
