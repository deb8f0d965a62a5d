"""Shared state in PostgreSQL: access keys, the master key's check value and policy documents. The
embedded store keeps these in their own files of the data directory, so the SQLite step is empty.

``access_keys`` has the columns of the embedded ``keys.sqlite3`` table (the secret Fernet-encrypted
under the master key, which never enters the database) plus ``seq``, the order keys were created
in. ``shared_settings`` holds values every node must agree on (``master_key_check``: an HMAC of a
fixed label under the master key, see :func:`regard.keys.master_key_check`). ``policy_documents``
is append-only: each ``regard policy set`` adds the whole new policy file's text as the next
version, and nodes load the newest.
"""

SQLITE = ""

POSTGRES = """
CREATE TABLE IF NOT EXISTS access_keys (
    access_key_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_encrypted BYTEA NOT NULL,
    role TEXT NOT NULL DEFAULT 'admin',
    profile TEXT NOT NULL DEFAULT 'admin',
    created_at TEXT NOT NULL,
    revoked_at TEXT,
    seq BIGSERIAL NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS shared_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS policy_documents (
    version BIGSERIAL PRIMARY KEY,
    toml TEXT NOT NULL,
    written_at TEXT NOT NULL
)
"""
