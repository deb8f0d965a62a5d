"""The SQL both backends share: every store operation as statements over one schema.

A backend supplies connections and transactions, the placeholder style, how a template
is encoded, and ``nearest``. Each write runs in one transaction that first locks the
collection's row (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: ``SELECT ... FOR UPDATE``), so
counts, the content version and the hash chain never race, and a failure leaves nothing.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from regard.errors import ResourceAlreadyExists, ResourceNotFound, ServiceQuotaExceeded
from regard.store.base import (
    GENESIS_HASH,
    MAX_FACES_PER_USER,
    Collection,
    FaceRecord,
    Neighbor,
    NewFace,
    Page,
    StoredResponse,
    User,
    chain_hash,
    decode_token,
    encode_token,
    model_from_json,
    model_to_json,
)
from regard.types import Box, Embeddings, ModelIdentity

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


class SqlStore(ABC):
    """Store operations in portable SQL; subclasses provide connections, vectors and search."""

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

    # -- collections ------------------------------------------------------------------------
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
        after = decode_token(token, "collections", "") or ""
        with self._read() as tx:
            rows = tx.all(
                f"SELECT {COLLECTION_COLUMNS} FROM collections WHERE collection_id > ? "
                "ORDER BY collection_id LIMIT ?",
                (after, max_results + 1),
            )
        items = [self._collection_from_row(r) for r in rows[:max_results]]
        nxt = encode_token("collections", "", items[-1].collection_id) if len(rows) > max_results else None
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

    # -- faces ------------------------------------------------------------------------------
    def add_faces(self, collection_id: str, faces: Sequence[NewFace]) -> list[FaceRecord]:
        now = time.time()
        try:
            with self._write() as tx:
                row = self._locked(tx, collection_id)
                key = int(row[0])
                params = [
                    (
                        key,
                        f.face_id,
                        f.image_id,
                        f.external_image_id,
                        f.bounding_box.left,
                        f.bounding_box.top,
                        f.bounding_box.width,
                        f.bounding_box.height,
                        f.confidence,
                        f.brightness,
                        f.sharpness,
                        self._encode(f.embedding),
                        now,
                        f.source_note,
                        f.legal_basis,
                    )
                    for f in faces
                ]
                face_keys = self._insert_faces(tx, key, params)
                if self.log_changes:
                    tx.many(
                        "INSERT INTO changes (collection, face_key, op) VALUES (?, ?, 'add')",
                        [(key, fk) for fk in face_keys],
                    )
                out = [
                    FaceRecord(
                        face_id=f.face_id,
                        image_id=f.image_id,
                        external_image_id=f.external_image_id,
                        bounding_box=f.bounding_box,
                        confidence=f.confidence,
                        embedding=np.asarray(f.embedding, dtype=np.float32),
                        user_id=None,
                        indexed_at=now,
                        brightness=f.brightness,
                        sharpness=f.sharpness,
                        source_note=f.source_note,
                        legal_basis=f.legal_basis,
                    )
                    for f in faces
                ]
                self._bump(tx, row, "add", [f.face_id for f in faces], faces=len(faces))
        except Exception as exc:
            if self._unique_violation(exc):
                raise ResourceAlreadyExists("a FaceId is already in the collection") from exc
            raise
        return out

    def get_faces(self, collection_id: str, face_ids: Sequence[str]) -> dict[str, FaceRecord]:
        found: dict[str, FaceRecord] = {}
        with self._read() as tx:
            key = self._key(tx, collection_id)
            for chunk in _chunks(list(face_ids)):
                rows = tx.all(
                    f"SELECT {FACE_COLUMNS} FROM faces WHERE collection = ? "
                    f"AND face_id IN ({_marks(len(chunk))})",
                    (key, *chunk),
                )
                for r in rows:
                    rec = self._face_from_row(r)
                    found[rec.face_id] = rec
        return found

    def faces_by_key(self, tx: Tx, keys: Sequence[int]) -> dict[int, FaceRecord]:
        out: dict[int, FaceRecord] = {}
        for chunk in _chunks(list(keys)):
            for r in tx.all(
                f"SELECT {FACE_COLUMNS} FROM faces WHERE id IN ({_marks(len(chunk))})", tuple(chunk)
            ):
                out[int(r[0])] = self._face_from_row(r)
        return out

    def list_faces(
        self,
        collection_id: str,
        *,
        user_id: str | None,
        face_ids: Sequence[str] | None,
        max_results: int,
        token: str | None,
    ) -> Page[FaceRecord]:
        scope = collection_id
        after = decode_token(token, "faces", scope) or ""
        where = "collection = ? AND face_id > ?"
        with self._read() as tx:
            key = self._key(tx, collection_id)
            params: list[Any] = [key, after]
            if user_id is not None:
                where += " AND user_id = ?"
                params.append(user_id)
            if face_ids is not None:
                if not face_ids:
                    return Page([], None)
                where += f" AND face_id IN ({_marks(len(face_ids))})"
                params.extend(face_ids)
            rows = tx.all(
                f"SELECT {FACE_COLUMNS} FROM faces WHERE {where} ORDER BY face_id LIMIT ?",
                (*params, max_results + 1),
            )
        items = [self._face_from_row(r) for r in rows[:max_results]]
        nxt = encode_token("faces", scope, items[-1].face_id) if len(rows) > max_results and items else None
        return Page(items, nxt)

    def delete_faces(self, collection_id: str, face_ids: Sequence[str]) -> list[str]:
        deleted: list[str] = []
        with self._write() as tx:
            row = self._locked(tx, collection_id)
            key = int(row[0])
            for chunk in _chunks(list(face_ids)):
                rows = tx.all(
                    f"SELECT id, face_id FROM faces WHERE collection = ? AND user_id IS NULL "
                    f"AND face_id IN ({_marks(len(chunk))})",
                    (key, *chunk),
                )
                if not rows:
                    continue
                keys = [int(r[0]) for r in rows]
                tx.run(f"DELETE FROM faces WHERE id IN ({_marks(len(keys))})", keys)
                if self.log_changes:
                    tx.many(
                        "INSERT INTO changes (collection, face_key, op) VALUES (?, ?, 'del')",
                        [(key, k) for k in keys],
                    )
                deleted.extend(r[1] for r in rows)
            if deleted:
                self._bump(tx, row, "delete", deleted, faces=-len(deleted))
        if deleted:
            self._after_removal(key)
        return deleted

    # -- users ------------------------------------------------------------------------------
    def create_user(self, collection_id: str, user_id: str) -> User:
        now = time.time()
        try:
            with self._write() as tx:
                row = self._locked(tx, collection_id)
                if tx.one("SELECT 1 FROM users WHERE collection = ? AND user_id = ?", (row[0], user_id)):
                    raise ResourceAlreadyExists(f"user {user_id} already exists")
                tx.run(
                    "INSERT INTO users (collection, user_id, created_at) VALUES (?, ?, ?)",
                    (row[0], user_id, now),
                )
                self._bump(tx, row, "create_user", [user_id], users=1)
        except Exception as exc:
            if self._unique_violation(exc):
                raise ResourceAlreadyExists(f"user {user_id} already exists") from exc
            raise
        return User(user_id=user_id, status="CREATED", face_count=0, created_at=now)

    def get_user(self, collection_id: str, user_id: str) -> User:
        with self._read() as tx:
            key = self._key(tx, collection_id)
            row = tx.one(
                "SELECT user_id, created_at, face_count FROM users WHERE collection = ? AND user_id = ?",
                (key, user_id),
            )
        if row is None:
            raise ResourceNotFound(f"user {user_id} does not exist in collection {collection_id}")
        return self._user_from_row(row)

    def list_users(self, collection_id: str, max_results: int, token: str | None) -> Page[User]:
        after = decode_token(token, "users", collection_id) or ""
        with self._read() as tx:
            key = self._key(tx, collection_id)
            rows = tx.all(
                "SELECT user_id, created_at, face_count FROM users WHERE collection = ? AND user_id > ? "
                "ORDER BY user_id LIMIT ?",
                (key, after, max_results + 1),
            )
        items = [self._user_from_row(r) for r in rows[:max_results]]
        nxt = encode_token("users", collection_id, items[-1].user_id) if len(rows) > max_results else None
        return Page(items, nxt)

    def delete_user(self, collection_id: str, user_id: str) -> None:
        with self._write() as tx:
            row = self._locked(tx, collection_id)
            if tx.run("DELETE FROM users WHERE collection = ? AND user_id = ?", (row[0], user_id)) == 0:
                raise ResourceNotFound(f"user {user_id} does not exist in collection {collection_id}")
            tx.run("UPDATE faces SET user_id = NULL WHERE collection = ? AND user_id = ?", (row[0], user_id))
            self._bump(tx, row, "delete_user", [user_id], users=-1)

    def associate_faces(self, collection_id: str, user_id: str, face_ids: Sequence[str]) -> list[str]:
        ids = list(face_ids)
        with self._write() as tx:
            row = self._locked(tx, collection_id)
            key = row[0]
            urow = tx.one("SELECT face_count FROM users WHERE collection = ? AND user_id = ?", (key, user_id))
            if urow is None:
                raise ResourceNotFound(f"user {user_id} does not exist in collection {collection_id}")
            free = tx.all(
                "SELECT face_id FROM faces WHERE collection = ? AND user_id IS NULL "
                f"AND face_id IN ({_marks(len(ids))})",
                (key, *ids),
            )
            done = [r[0] for r in free]
            if int(urow[0]) + len(done) > MAX_FACES_PER_USER:
                raise ServiceQuotaExceeded(f"a user holds at most {MAX_FACES_PER_USER} faces")
            if done:
                tx.run(
                    f"UPDATE faces SET user_id = ? WHERE collection = ? AND face_id IN ({_marks(len(done))})",
                    (user_id, key, *done),
                )
                tx.run(
                    "UPDATE users SET face_count = face_count + ? WHERE collection = ? AND user_id = ?",
                    (len(done), key, user_id),
                )
                self._bump(tx, row, f"associate:{user_id}", done)
        return done

    def disassociate_faces(self, collection_id: str, user_id: str, face_ids: Sequence[str]) -> list[str]:
        ids = list(face_ids)
        with self._write() as tx:
            row = self._locked(tx, collection_id)
            key = row[0]
            if tx.one("SELECT 1 FROM users WHERE collection = ? AND user_id = ?", (key, user_id)) is None:
                raise ResourceNotFound(f"user {user_id} does not exist in collection {collection_id}")
            mine = tx.all(
                "SELECT face_id FROM faces WHERE collection = ? AND user_id = ? "
                f"AND face_id IN ({_marks(len(ids))})",
                (key, user_id, *ids),
            )
            done = [r[0] for r in mine]
            if done:
                tx.run(
                    "UPDATE faces SET user_id = NULL WHERE collection = ? "
                    f"AND face_id IN ({_marks(len(done))})",
                    (key, *done),
                )
                tx.run(
                    "UPDATE users SET face_count = face_count - ? WHERE collection = ? AND user_id = ?",
                    (len(done), key, user_id),
                )
                self._bump(tx, row, f"disassociate:{user_id}", done)
        return done

    # -- tags -------------------------------------------------------------------------------
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

    # -- idempotency ------------------------------------------------------------------------
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
