"""Shared state in PostgreSQL: the audit chain, its anchor and writers. The embedded store keeps these
in their own files of the data directory, so the SQLite step is empty."""

SQLITE = ""

POSTGRES = ""
