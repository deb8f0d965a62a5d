"""Schema migrations: numbered, applied on open, and a database written by an older version opens."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from regard.store.base import GENESIS_HASH, model_to_json
from regard.store.migrations import all_migrations, statements
from regard.store.postgres import PostgresStore
from regard.store.sqlite import SqliteStore
from regard.types import ModelIdentity

MODEL = ModelIdentity("test-model", "1", "0" * 64, "none")
FACE_ID = "0b7d3f0e-1111-4222-8333-944445555666"


def test_migrations_are_numbered_from_one() -> None:
    found = all_migrations()
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert len(found) >= 2


def test_a_version_1_sqlite_database_opens_and_is_upgraded(tmp_path: Path) -> None:
    # Write a database as the first schema version left it, with one face.
    conn = sqlite3.connect(tmp_path / "regard.db", isolation_level=None)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at REAL)")
    for stmt in statements(all_migrations()[0].sqlite):
        conn.execute(stmt)
    conn.execute("INSERT INTO schema_migrations VALUES (1, 'initial', ?)", (time.time(),))
    conn.execute(
        "INSERT INTO collections (collection_id, arn, face_model, created_at, face_count, content_hash) "
        "VALUES ('old', 'arn:old', ?, ?, 1, ?)",
        (model_to_json(MODEL), time.time(), GENESIS_HASH),
    )
    vector = np.linspace(-1, 1, 128, dtype=np.float32)
    conn.execute(
        "INSERT INTO faces (collection, face_id, image_id, box_left, box_top, box_width, box_height, "
        "confidence, "
        "embedding, indexed_at) VALUES (1, ?, 'img', 0.1, 0.1, 0.2, 0.2, 99.0, ?, ?)",
        (FACE_ID, vector.tobytes(), time.time()),
    )
    conn.execute("INSERT INTO changes (collection, face_key, op) VALUES (1, 1, 'add')")
    conn.close()

    store = SqliteStore(tmp_path)
    assert store.schema_version() == len(all_migrations())
    (face,) = store.list_faces("old", user_id=None, face_ids=None, max_results=10, token=None).items
    assert face.face_id == FACE_ID and face.source_note is None and face.legal_basis is None
    assert store.nearest("old", vector, 1, 0.1)[0].face.face_id == FACE_ID
    store.close()
    # Opening again applies nothing twice.
    again = SqliteStore(tmp_path)
    assert again.schema_version() == len(all_migrations())
    again.close()


@pytest.mark.postgres
def test_postgres_schema_is_migrated_once(pg_url: str) -> None:
    first = PostgresStore(pg_url)
    second = PostgresStore(pg_url)
    assert first.schema_version() == second.schema_version() == len(all_migrations())
    first.close()
    second.close()
