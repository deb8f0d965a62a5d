"""What every SQL resource module shares: the cursor wrapper, the backend hooks, rows and the lock.

:class:`SqlBase` declares what a backend supplies (transactions, vector encoding, face
inserts, search) and holds the helpers the resource mixins build on: decoding rows, finding
and locking a collection's row, and advancing its counts, content version and hash chain.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from regard.errors import ResourceNotFound
from regard.store.base import Collection, FaceRecord, Neighbor, User, chain_hash, model_from_json
from regard.types import Box, Embeddings

FACE_COLUMNS = (
    "id, face_id, image_id, external_image_id, box_left, box_top, box_width, box_height, confidence, "
    "brightness, sharpness, embedding, user_id, indexed_at, source_note, legal_basis"
)
COLLECTION_COLUMNS = (
    "id, collection_id, arn, face_model, created_at, face_count, user_count, content_version, content_hash"
)
INSERT_FACE = (
    "INSERT INTO faces (collection, face_id, image_id, external_image_id, box_left, box_top, box_width, "
    "box_height, confidence, brightness, sharpness, embedding, indexed_at, source_note, legal_basis) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
CHUNK = 500


class Tx:
    """A cursor with the few verbs the store uses; SQL is written with ``?`` placeholders."""

    def __init__(self, cursor: Any, placeholder: str) -> None:
        self.cursor = cursor
        self.placeholder = placeholder

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        self.cursor.execute(self._sql(sql), tuple(params))
        return int(self.cursor.rowcount)

    def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.cursor.executemany(self._sql(sql), [tuple(r) for r in rows])

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        self.cursor.execute(self._sql(sql), tuple(params))
        return self.cursor.fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        self.cursor.execute(self._sql(sql), tuple(params))
        return list(self.cursor.fetchall())


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _marks(n: int) -> str:
    return ",".join("?" * n)


class SqlBase(ABC):
    """The backend hooks and row helpers behind :class:`regard.store.sql.SqlStore`'s resources."""

    placeholder = "?"
    lock_row = ""  # " FOR UPDATE" where the database needs it
    log_changes = True  # keep the change log that in-process indexes catch up from

    # -- backend hooks ----------------------------------------------------------------------
    @abstractmethod
    def _write(self) -> AbstractContextManager[Tx]:
        """A write transaction: committed on normal exit, rolled back on an exception."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[Tx]:
        """A read-only transaction with one consistent snapshot."""

    @abstractmethod
    def _encode(self, vector: Embeddings) -> Any: ...

    @abstractmethod
    def _decode(self, raw: Any) -> Embeddings: ...

    @abstractmethod
    def _unique_violation(self, exc: BaseException) -> bool: ...

    @abstractmethod
    def _insert_faces(self, tx: Tx, key: int, rows: Sequence[Sequence[Any]]) -> list[int]:
        """Insert face rows (columns as in :data:`INSERT_FACE`); the new rows' keys, in order."""

    def _collection_created(self, tx: Tx, key: int) -> None:  # noqa: B027 - optional hook
        """Called inside the creating transaction (PostgreSQL builds the collection's ANN index)."""

    def _collection_dropped(self, tx: Tx, key: int) -> None:  # noqa: B027 - optional hook
        """Called inside the deleting transaction."""

    def _after_removal(self, key: int) -> None:  # noqa: B027 - optional hook
        """Called after a commit that removed templates (SQLite drops stale index files)."""

    @abstractmethod
    def nearest(
        self, collection_id: str, probe: Embeddings, k: int, max_distance: float
    ) -> list[Neighbor]: ...

    @abstractmethod
    def compact(self) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    # -- pagination tokens ------------------------------------------------------------------
    _page_secret: bytes | None = None

    def _token_secret(self) -> bytes:
        """The key that authenticates this store's pagination tokens: made once per database
        (``store_secrets``), so every process and worker sharing it accepts the others' tokens."""
        if self._page_secret is None:
            with self._read() as tx:  # a read: listing must not wait for a writer
                row = tx.one("SELECT value FROM store_secrets WHERE name = ?", ("pagination",))
            if row is not None:
                self._page_secret = bytes.fromhex(str(row[0]))
                return self._page_secret
            with self._write() as tx:
                tx.run(
                    "INSERT INTO store_secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
                    ("pagination", secrets.token_hex(32)),
                )
                row = tx.one("SELECT value FROM store_secrets WHERE name = ?", ("pagination",))
            assert row is not None
            self._page_secret = bytes.fromhex(str(row[0]))
        return self._page_secret

    # -- row helpers ------------------------------------------------------------------------
    @staticmethod
    def _collection_from_row(row: Any) -> Collection:
        return Collection(
            collection_id=row[1],
            arn=row[2],
            face_model=model_from_json(row[3]),
            created_at=float(row[4]),
            face_count=int(row[5]),
            user_count=int(row[6]),
            content_version=int(row[7]),
            content_hash=row[8],
        )

    def _face_from_row(self, row: Any) -> FaceRecord:
        return FaceRecord(
            face_id=row[1],
            image_id=row[2],
            external_image_id=row[3],
            bounding_box=Box(
                left=float(row[4]), top=float(row[5]), width=float(row[6]), height=float(row[7])
            ),
            confidence=float(row[8]),
            brightness=None if row[9] is None else float(row[9]),
            sharpness=None if row[10] is None else float(row[10]),
            embedding=self._decode(row[11]),
            user_id=row[12],
            indexed_at=float(row[13]),
            source_note=row[14],
            legal_basis=row[15],
        )

    @staticmethod
    def _user_from_row(row: Any) -> User:
        count = int(row[2])
        return User(
            user_id=row[0],
            status="ACTIVE" if count else "CREATED",
            face_count=count,
            created_at=float(row[1]),
        )

    def _locked(self, tx: Tx, collection_id: str) -> Any:
        row = tx.one(
            f"SELECT {COLLECTION_COLUMNS} FROM collections WHERE collection_id = ?{self.lock_row}",
            (collection_id,),
        )
        if row is None:
            raise ResourceNotFound(f"collection {collection_id} does not exist")
        return row

    def _key(self, tx: Tx, collection_id: str) -> int:
        row = tx.one("SELECT id FROM collections WHERE collection_id = ?", (collection_id,))
        if row is None:
            raise ResourceNotFound(f"collection {collection_id} does not exist")
        return int(row[0])

    @staticmethod
    def _bump(tx: Tx, row: Any, operation: str, ids: Sequence[str], faces: int = 0, users: int = 0) -> None:
        new_hash = chain_hash(row[8], operation, ids)
        tx.run(
            "UPDATE collections SET face_count = face_count + ?, user_count = user_count + ?, "
            "content_version = content_version + 1, content_hash = ? WHERE id = ?",
            (faces, users, new_hash, row[0]),
        )
