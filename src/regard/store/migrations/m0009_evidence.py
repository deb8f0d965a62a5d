"""Shared state in PostgreSQL: the encrypted face crops kept for two-person review, as
:mod:`regard.accountability.evidence` keeps them in ``evidence.sqlite3``. Ids and crops collect no
planner statistics (``SET STATISTICS 0``), so ANALYZE copies none of them into ``pg_statistic``,
where deleting the row would never reach them. The SQLite step is empty (its own file)."""

SQLITE = ""

POSTGRES = """
CREATE TABLE enrolled_crops (
    collection_id TEXT NOT NULL,
    face_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    crop BYTEA NOT NULL,
    PRIMARY KEY (collection_id, face_id)
);
CREATE TABLE lead_evidence (
    lead_id TEXT PRIMARY KEY,
    collection_id TEXT NOT NULL,
    candidate_face_id TEXT,
    created_at TEXT NOT NULL,
    probe_crop BYTEA,
    candidate_crop BYTEA
);
CREATE INDEX lead_evidence_by_face ON lead_evidence (collection_id, candidate_face_id);
ALTER TABLE enrolled_crops ALTER COLUMN face_id SET STATISTICS 0;
ALTER TABLE enrolled_crops ALTER COLUMN crop SET STATISTICS 0;
ALTER TABLE lead_evidence ALTER COLUMN candidate_face_id SET STATISTICS 0;
ALTER TABLE lead_evidence ALTER COLUMN probe_crop SET STATISTICS 0;
ALTER TABLE lead_evidence ALTER COLUMN candidate_crop SET STATISTICS 0
"""
