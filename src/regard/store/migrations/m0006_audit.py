"""Shared state in PostgreSQL: the audit chain, its anchor and writers. The embedded store keeps these
in their own files of the data directory, so the SQLite step is empty.

``audit_records`` holds each record as its exact canonical text (what its hash covers), with
``kind`` and ``intent_seq`` copied out of it for the intent queries (``regard audit verify`` checks
that they agree with the text). ``audit_anchor`` is the one row a prune leaves: the last pruned
record's seq and hash, when, and an HMAC-SHA256 over them. Writers hold advisory locks, not rows.
"""

SQLITE = ""

POSTGRES = """
CREATE TABLE audit_records (
    seq BIGINT PRIMARY KEY CHECK (seq > 0),
    kind TEXT,
    intent_seq BIGINT,
    record TEXT NOT NULL
);
CREATE INDEX audit_records_by_intent_seq ON audit_records (intent_seq) WHERE intent_seq IS NOT NULL;
CREATE INDEX audit_records_intents ON audit_records (seq) WHERE kind = 'intent';
CREATE TABLE audit_anchor (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    pruned_at TEXT NOT NULL,
    mac TEXT NOT NULL
)
"""
