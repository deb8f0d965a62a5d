"""Shared state in PostgreSQL: the review queue (leads and decisions). The embedded store keeps these
in their own files of the data directory, so the SQLite step is empty."""

SQLITE = ""

POSTGRES = ""
