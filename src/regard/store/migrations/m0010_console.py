"""Shared state in PostgreSQL: the reviewers' console sessions, as
:mod:`regard.api.console.sessions` keeps them in ``console.sqlite3``, so a reviewer signed in
through one node is signed in on every node behind the same load balancer. Only the sha256 of
each session token and of its CSRF token is stored. The SQLite step is empty (its own file)."""

SQLITE = ""

POSTGRES = """
CREATE TABLE console_sessions (
    session_hash TEXT PRIMARY KEY,
    access_key_id TEXT NOT NULL,
    principal TEXT NOT NULL,
    role TEXT NOT NULL,
    profile TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL,
    csrf_hash TEXT NOT NULL,
    ended_at DOUBLE PRECISION
);
CREATE INDEX console_sessions_by_key ON console_sessions (access_key_id)
"""
