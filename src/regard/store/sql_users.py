"""Users in SQL: create, get, list, delete, and associating faces with a user or freeing them again."""

from __future__ import annotations

import time
from collections.abc import Sequence

from regard.errors import ResourceAlreadyExists, ResourceNotFound, ServiceQuotaExceeded
from regard.store.base import MAX_FACES_PER_USER, Page, User, decode_token, encode_token
from regard.store.sql_base import SqlBase, _marks


class SqlUsers(SqlBase):
    """The user rows and faces' ``user_id``: a user's face count moves with its faces, in one transaction."""

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
        after = decode_token(self._token_secret(), token, "users", collection_id) or ""
        with self._read() as tx:
            key = self._key(tx, collection_id)
            rows = tx.all(
                "SELECT user_id, created_at, face_count FROM users WHERE collection = ? AND user_id > ? "
                "ORDER BY user_id LIMIT ?",
                (key, after, max_results + 1),
            )
        items = [self._user_from_row(r) for r in rows[:max_results]]
        nxt = (
            encode_token(self._token_secret(), "users", collection_id, items[-1].user_id)
            if len(rows) > max_results
            else None
        )
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
