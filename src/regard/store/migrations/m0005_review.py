"""Shared state in PostgreSQL: the review queue (leads and decisions), as
:mod:`regard.accountability.review` keeps it in ``review.sqlite3`` (REAL as DOUBLE PRECISION). The
ids a lead names collect no planner statistics (``SET STATISTICS 0``): ANALYZE would otherwise copy
sample values into ``pg_statistic``, where deleting or wiping the lead never reaches them. The
embedded store keeps these in their own files of the data directory, so the SQLite step is empty."""

SQLITE = ""

POSTGRES = """
CREATE TABLE IF NOT EXISTS leads (
    lead_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    request_id TEXT NOT NULL,
    requester_key TEXT,
    requester_principal TEXT,
    collection_id TEXT NOT NULL,
    operation TEXT NOT NULL,
    face_id TEXT,
    user_id TEXT,
    external_image_id TEXT,
    similarity DOUBLE PRECISION NOT NULL,
    fmr DOUBLE PRECISION NOT NULL,
    purpose TEXT,
    case_reference TEXT,
    status TEXT NOT NULL,
    decided_at TEXT
);
CREATE INDEX IF NOT EXISTS leads_status ON leads (status, created_at);
CREATE TABLE IF NOT EXISTS decisions (
    lead_id TEXT NOT NULL REFERENCES leads (lead_id) ON DELETE CASCADE,
    reviewer_key TEXT NOT NULL,
    reviewer_principal TEXT NOT NULL,
    decision TEXT NOT NULL,
    note TEXT,
    at TEXT NOT NULL,
    PRIMARY KEY (lead_id, reviewer_key)
);
ALTER TABLE leads ALTER COLUMN face_id SET STATISTICS 0;
ALTER TABLE leads ALTER COLUMN user_id SET STATISTICS 0;
ALTER TABLE leads ALTER COLUMN external_image_id SET STATISTICS 0
"""
