"""Shared state in PostgreSQL: access keys, the master key's check value and policy documents. The
embedded store keeps these in their own files of the data directory, so the SQLite step is empty."""

SQLITE = ""

POSTGRES = ""
