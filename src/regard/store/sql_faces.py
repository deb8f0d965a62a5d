"""Faces in SQL: add (logged for in-process indexes), get, list, delete; ``faces_by_key`` for searches."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from regard.errors import ResourceAlreadyExists
from regard.store.base import FaceRecord, NewFace, Page, decode_token, encode_token
from regard.store.sql_base import FACE_COLUMNS, SqlBase, Tx, _chunks, _marks


class SqlFaces(SqlBase):
    """The face rows: each add or delete is one locked transaction that also logs and chains it."""

    def add_faces(
        self, collection_id: str, faces: Sequence[NewFace], *, once_per_image: bool = False
    ) -> list[FaceRecord]:
        now = time.time()
        try:
            with self._write() as tx:
                row = self._locked(tx, collection_id)
                key = int(row[0])
                if once_per_image:
                    # Under the collection's lock, so two identical requests cannot both store.
                    existing = self._image_faces(tx, key, faces)
                    if existing:
                        return existing
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
                # The image hash (migration 7) is set by FaceId in the same transaction, so that
                # the backends' insert statement stays the one both share.
                tx.many(
                    "UPDATE faces SET image_sha256 = ? WHERE collection = ? AND face_id = ?",
                    [(f.image_sha256, key, f.face_id) for f in faces if f.image_sha256 is not None],
                )
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

    def _image_faces(self, tx: Tx, key: int, faces: Sequence[NewFace]) -> list[FaceRecord]:
        """The stored faces of the one image (ExternalImageId and sha256) ``faces`` all come from;
        empty when they come from several, or from one without both."""
        images = {(f.external_image_id, f.image_sha256) for f in faces}
        if len(images) != 1:
            return []
        ((external_image_id, digest),) = images
        if external_image_id is None or digest is None:
            return []
        rows = tx.all(
            f"SELECT {FACE_COLUMNS} FROM faces WHERE collection = ? AND external_image_id = ? "
            "AND image_sha256 = ? ORDER BY id",
            (key, external_image_id, digest),
        )
        return [self._face_from_row(r) for r in rows]

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

    def indexed_images(self, collection_id: str, external_image_ids: Sequence[str]) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        with self._read() as tx:
            key = self._key(tx, collection_id)
            for chunk in _chunks(sorted(set(external_image_ids))):
                rows = tx.all(
                    "SELECT DISTINCT external_image_id, image_sha256 FROM faces WHERE collection = ? "
                    f"AND image_sha256 IS NOT NULL AND external_image_id IN ({_marks(len(chunk))})",
                    (key, *chunk),
                )
                for ext, digest in rows:
                    found.setdefault(str(ext), set()).add(str(digest))
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
        after = decode_token(self._token_secret(), token, "faces", scope) or ""
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
        nxt = (
            encode_token(self._token_secret(), "faces", scope, items[-1].face_id)
            if len(rows) > max_results and items
            else None
        )
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
                self._forget_responses(tx, key, deleted)
                self._bump(tx, row, "delete", deleted, faces=-len(deleted))
        if deleted:
            self._after_removal(key)
        return deleted

    @staticmethod
    def _forget_responses(tx: Tx, key: int, face_ids: Sequence[str]) -> None:
        """Drop the remembered responses (ClientRequestToken) that name a deleted face, so that no
        FaceId outlives its face in the database; a retry of such a request runs again."""
        gone = set(face_ids)
        stale = [
            (str(op), str(token))
            for op, token, response in tx.all(
                "SELECT operation, token, response FROM requests WHERE collection = ?", (key,)
            )
            if any(fid in gone for fid in _face_ids_in(str(response)))
        ]
        for op, token in stale:
            tx.run(
                "DELETE FROM requests WHERE collection = ? AND operation = ? AND token = ?", (key, op, token)
            )


def _face_ids_in(text: str) -> list[str]:
    """The FaceIds (UUIDs) a remembered JSON response mentions."""
    return _UUID.findall(text)


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
