"""Provenance of each face: a free-text source note and the legal basis for processing it."""

SQLITE = """
ALTER TABLE faces ADD COLUMN source_note TEXT;
ALTER TABLE faces ADD COLUMN legal_basis TEXT
"""

POSTGRES = """
ALTER TABLE faces ADD COLUMN source_note TEXT;
ALTER TABLE faces ADD COLUMN legal_basis TEXT
"""
