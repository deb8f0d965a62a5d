"""Shared state in PostgreSQL: human-rights impact assessments and the events about them, as
:mod:`regard.accountability.assessment` keeps them in ``assessments.sqlite3``. Both tables are
append-only: triggers refuse UPDATE and DELETE, so a change is a new assessment. The embedded store
keeps these in their own file of the data directory, so the SQLite step is empty."""

SQLITE = ""

POSTGRES = """
CREATE TABLE assessments (
    assessment_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    profile TEXT NOT NULL,
    record TEXT NOT NULL,
    record_sha256 TEXT NOT NULL
);
CREATE TABLE assessment_events (
    seq BIGSERIAL PRIMARY KEY,
    assessment_id TEXT NOT NULL REFERENCES assessments (assessment_id),
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    principal TEXT NOT NULL,
    access_key_id TEXT,
    note TEXT
);
CREATE FUNCTION regard_append_only() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    RAISE EXCEPTION '% is append-only: a change is a new assessment', TG_TABLE_NAME;
END
$f$;
CREATE TRIGGER assessments_append_only BEFORE UPDATE OR DELETE ON assessments
    FOR EACH ROW EXECUTE FUNCTION regard_append_only();
CREATE TRIGGER assessment_events_append_only BEFORE UPDATE OR DELETE ON assessment_events
    FOR EACH ROW EXECUTE FUNCTION regard_append_only()
"""
