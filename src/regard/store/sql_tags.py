"""Tags in SQL: set (insert or overwrite), remove and read a collection's tags, under its row lock."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from regard.store.sql_base import SqlBase


class SqlTags(SqlBase):
    """A collection's tags: one row per key; changing them does not touch the content hash."""

    def tag(self, collection_id: str, tags: Mapping[str, str]) -> None:
        with self._write() as tx:
            row = self._locked(tx, collection_id)
            for k, v in tags.items():
                tx.run(
                    "INSERT INTO tags (collection, key, value) VALUES (?, ?, ?) "
                    "ON CONFLICT (collection, key) DO UPDATE SET value = excluded.value",
                    (row[0], k, v),
                )

    def untag(self, collection_id: str, keys: Sequence[str]) -> None:
        with self._write() as tx:
            row = self._locked(tx, collection_id)
            for k in keys:
                tx.run("DELETE FROM tags WHERE collection = ? AND key = ?", (row[0], k))

    def tags(self, collection_id: str) -> dict[str, str]:
        with self._read() as tx:
            key = self._key(tx, collection_id)
            rows = tx.all("SELECT key, value FROM tags WHERE collection = ? ORDER BY key", (key,))
        return {r[0]: r[1] for r in rows}
