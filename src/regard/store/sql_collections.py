"""Collections in SQL: create (with its tags), get, list by ``collection_id``, delete with all it holds."""

from __future__ import annotations

import time
from collections.abc import Mapping

from regard.errors import InvalidPaginationToken, ResourceAlreadyExists, ResourceNotFound
from regard.store.base import GENESIS_HASH, Collection, Page, decode_token, encode_token, model_to_json
from regard.store.sql_base import COLLECTION_COLUMNS, SqlBase
from regard.types import ModelIdentity


class SqlCollections(SqlBase):
    """The collection rows: each starts its hash chain at the genesis hash; deleting one empties it."""

    def create_collection(
        self, collection_id: str, arn: str, face_model: ModelIdentity, tags: Mapping[str, str]
    ) -> Collection:
        try:
            with self._write() as tx:
                if tx.one("SELECT 1 FROM collections WHERE collection_id = ?", (collection_id,)):
                    raise ResourceAlreadyExists(f"collection {collection_id} already exists")
                row = tx.one(
                    "INSERT INTO collections (collection_id, arn, face_model, created_at, content_hash) "
                    f"VALUES (?, ?, ?, ?, ?) RETURNING {COLLECTION_COLUMNS}",
                    (collection_id, arn, model_to_json(face_model), time.time(), GENESIS_HASH),
                )
                for k, v in tags.items():
                    tx.run("INSERT INTO tags (collection, key, value) VALUES (?, ?, ?)", (row[0], k, v))
                self._collection_created(tx, int(row[0]))
        except Exception as exc:
            if self._unique_violation(exc):
                raise ResourceAlreadyExists(f"collection {collection_id} already exists") from exc
            raise
        return self._collection_from_row(row)

    def get_collection(self, collection_id: str) -> Collection:
        with self._read() as tx:
            row = tx.one(
                f"SELECT {COLLECTION_COLUMNS} FROM collections WHERE collection_id = ?", (collection_id,)
            )
        if row is None:
            raise ResourceNotFound(f"collection {collection_id} does not exist")
        return self._collection_from_row(row)

    def list_collections(self, max_results: int, token: str | None) -> Page[Collection]:
        # The token's position is the last collection's internal row number, never its name: a
        # key scoped to some collections must not learn the names of the others from a NextToken.
        secret = self._token_secret()
        position = decode_token(secret, token, "collections", "")
        with self._read() as tx:
            after = ""
            if position is not None:
                if not position.isdigit():
                    raise InvalidPaginationToken("the pagination token is malformed")
                last = tx.one("SELECT collection_id FROM collections WHERE id = ?", (int(position),))
                if last is None:
                    raise InvalidPaginationToken(
                        "the pagination token no longer applies: its collection was deleted; list again"
                    )
                after = str(last[0])
            rows = tx.all(
                f"SELECT {COLLECTION_COLUMNS} FROM collections WHERE collection_id > ? "
                "ORDER BY collection_id LIMIT ?",
                (after, max_results + 1),
            )
        items = [self._collection_from_row(r) for r in rows[:max_results]]
        nxt = (
            encode_token(secret, "collections", "", str(rows[max_results - 1][0]))
            if len(rows) > max_results
            else None
        )
        return Page(items, nxt)

    def delete_collection(self, collection_id: str) -> None:
        with self._write() as tx:
            row = self._locked(tx, collection_id)
            key = int(row[0])
            for table in ("faces", "users", "tags", "requests", "changes"):
                tx.run(f"DELETE FROM {table} WHERE collection = ?", (key,))
            tx.run("DELETE FROM collections WHERE id = ?", (key,))
            self._collection_dropped(tx, key)
        self._after_removal(key)
