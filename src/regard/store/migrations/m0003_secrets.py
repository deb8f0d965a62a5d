"""Secrets a store keeps for itself: the key that authenticates pagination tokens."""

SQLITE = """
CREATE TABLE IF NOT EXISTS store_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL)
"""

POSTGRES = """
CREATE TABLE IF NOT EXISTS store_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL)
"""
