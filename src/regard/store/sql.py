"""The SQL both backends share: every store operation as statements over one schema.

A backend supplies connections and transactions, the placeholder style, how a template
is encoded, and ``nearest``. Each write runs in one transaction that first locks the
collection's row (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: ``SELECT ... FOR UPDATE``), so
counts, the content version and the hash chain never race, and a failure leaves nothing.

Each resource's statements live in their own module (:mod:`regard.store.sql_collections`,
``sql_faces``, ``sql_users``, ``sql_tags``, ``sql_idempotency``) over :mod:`regard.store.sql_base`
(the cursor wrapper, backend hooks, row helpers and the collection lock); this module joins them.
"""

from __future__ import annotations

from regard.store.sql_base import (
    CHUNK,
    COLLECTION_COLUMNS,
    FACE_COLUMNS,
    INSERT_FACE,
    SqlBase,
    Tx,
    _chunks,
    _marks,
)
from regard.store.sql_collections import SqlCollections
from regard.store.sql_faces import SqlFaces
from regard.store.sql_idempotency import SqlIdempotency
from regard.store.sql_tags import SqlTags
from regard.store.sql_users import SqlUsers

__all__ = [
    "CHUNK",
    "COLLECTION_COLUMNS",
    "FACE_COLUMNS",
    "INSERT_FACE",
    "SqlBase",
    "SqlStore",
    "Tx",
    "_chunks",
    "_marks",
]


class SqlStore(SqlCollections, SqlFaces, SqlUsers, SqlTags, SqlIdempotency):
    """Store operations in portable SQL; subclasses provide connections, vectors and search."""
