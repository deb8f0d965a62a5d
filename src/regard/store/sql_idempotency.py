"""Idempotency in SQL: the first response to a ClientRequestToken, kept per collection and operation."""

from __future__ import annotations

import json
import time

from regard.store.base import StoredResponse
from regard.store.sql_base import SqlBase


class SqlIdempotency(SqlBase):
    """The ``requests`` rows: the first answer to a token is kept; a later one never replaces it."""

    def recall_request(self, collection_id: str, operation: str, token: str) -> StoredResponse | None:
        with self._read() as tx:
            key = self._key(tx, collection_id)
            row = tx.one(
                "SELECT params_hash, response FROM requests "
                "WHERE collection = ? AND operation = ? AND token = ?",
                (key, operation, token),
            )
        if row is None:
            return None
        return StoredResponse(params_hash=row[0], response=json.loads(row[1]))

    def remember_request(
        self, collection_id: str, operation: str, token: str, stored: StoredResponse
    ) -> None:
        with self._write() as tx:
            key = self._key(tx, collection_id)
            tx.run(
                "INSERT INTO requests (collection, operation, token, params_hash, response, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (collection, operation, token) DO NOTHING",
                (key, operation, token, stored.params_hash, json.dumps(stored.response), time.time()),
            )
