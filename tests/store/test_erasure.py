"""Erasure is physical: deleted templates leave the database file, its WAL and the index files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from regard.face.engine import Engine
from regard.scoring.calibrate import Scorer
from regard.service import Service
from regard.store.sqlite import SqliteStore
from store.synthetic import in_index_files, new_faces, people


def _database_files(pg_server: Any, service: Service) -> bytes:
    """After a CHECKPOINT, the bytes of the store's own database (``base/<its oid>``): other tests'
    databases on the same server may hold templates made from the same seeds."""
    conn = service.store._conn()  # type: ignore[attr-defined]
    conn.execute("CHECKPOINT")
    (oid,) = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()
    return b"".join(
        p.read_bytes() for p in (Path(pg_server.pgdata) / "base" / str(oid)).rglob("*") if p.is_file()
    )


def _sqlite_bytes(root: Path) -> bytes:
    files = [root / "regard.db", root / "regard.db-wal", *sorted((root / "index").glob("*"))]
    return b"".join(p.read_bytes() for p in files if p.is_file())


@pytest.mark.parametrize("ann_min_faces", [10**9, 50], ids=["exact", "hnsw"])
def test_deleted_faces_and_collections_leave_the_sqlite_files(
    tmp_path: Path, engine: Engine, scorer: Scorer, ann_min_faces: int
) -> None:
    root = tmp_path / "data"
    store = SqliteStore(root, ann_min_faces=ann_min_faces)
    service = Service(store, engine, scorer=scorer)
    service.create_collection("keep")
    service.create_collection("drop")
    vectors = people(40, 3, seed=11, spread=0.6)
    kept = service.add_templates("keep", new_faces(vectors[:60]))
    dropped = service.add_templates("drop", new_faces(vectors[60:]))
    for name, recs in (("keep", kept), ("drop", dropped)):
        service.search_faces_by_vector(name, recs[0].embedding)  # build (and for HNSW save) indexes
    store.close()
    store = SqliteStore(root, ann_min_faces=ann_min_faces)
    service = Service(store, engine, scorer=scorer)
    service.search_faces_by_vector("keep", kept[0].embedding)
    service.compact()

    def marker(v: np.ndarray) -> bytes:
        return np.asarray(v, dtype=np.float32).tobytes()

    before = _sqlite_bytes(root)
    assert all(marker(r.embedding) in before for r in kept[:5] + dropped[:5])
    if ann_min_faces < 100:
        assert all(in_index_files(root, r.embedding) for r in kept[:5]), "the index files hold templates"
    erased = kept[:5]
    out = service.delete_faces("keep", [r.face_id for r in erased])
    assert len(out.deleted_faces) == 5
    service.delete_collection("drop")
    service.compact()
    after = _sqlite_bytes(root)
    for r in erased + dropped:
        assert marker(r.embedding) not in after
        assert not in_index_files(root, r.embedding)
        assert r.face_id.encode() not in after
    assert all(marker(r.embedding) in after for r in kept[5:10])  # the rest is still there
    if ann_min_faces < 100:
        assert all(in_index_files(root, r.embedding) for r in kept[5:10])
    assert service.describe_collection("keep").face_count == 55
    store.close()
    assert all(marker(r.embedding) not in _sqlite_bytes(root) for r in erased + dropped)


@pytest.mark.postgres
def test_deleted_faces_leave_the_postgres_table_files(
    pg_server: Any, pg_url: str, engine: Engine, scorer: Scorer
) -> None:
    service = Service.open(Path("unused"), engine=engine, database_url=pg_url, scorer=scorer)
    service.create_collection("c")
    records = service.add_templates("c", new_faces(people(10, 2, seed=12, spread=0.6)))
    service.delete_faces("c", [r.face_id for r in records[:5]])
    service.compact()
    base = _database_files(pg_server, service)
    for r in records[:5]:
        assert np.asarray(r.embedding, np.float32).tobytes() not in base
    assert any(np.asarray(r.embedding, np.float32).tobytes() in base for r in records[5:])
    service.close()


@pytest.mark.postgres
def test_compaction_waits_for_a_snapshot_that_still_sees_the_erased_rows(
    pg_server: Any, pg_url: str, engine: Engine, scorer: Scorer
) -> None:
    """A session that took its snapshot before the deletion (another node's long read) would make
    VACUUM FULL copy the deleted rows into the new table file. Compaction waits for it to end."""
    import threading
    import time

    import psycopg

    service = Service.open(Path("unused"), engine=engine, database_url=pg_url, scorer=scorer)
    service.create_collection("c")
    records = service.add_templates("c", new_faces(people(6, 2, seed=13, spread=0.6)))
    erased = records[:4]
    reader = psycopg.connect(pg_url)
    reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    reader.execute("SELECT 1")  # its snapshot, taken now, sees every face (no table lock held)
    service.delete_faces("c", [r.face_id for r in erased])

    done = threading.Event()
    worker = threading.Thread(target=lambda: (service.compact(), done.set()), daemon=True)
    worker.start()
    # Wait until compaction is looking at the reader's snapshot: then it cannot have rewritten yet.
    with psycopg.connect(pg_url, autocommit=True) as watch:
        while not done.is_set():
            rows = watch.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid NOT IN (%s, pg_backend_pid()) AND query LIKE '%%pg_stat_activity%%'",
                (reader.info.backend_pid,),
            ).fetchall()
            if rows:
                break
            time.sleep(0.05)
    assert not done.is_set(), "compaction finished while an older snapshot could still see rows"
    reader.rollback()
    reader.close()
    worker.join()
    assert done.is_set()

    base = _database_files(pg_server, service)
    for r in erased:
        assert np.asarray(r.embedding, np.float32).tobytes() not in base
    assert any(np.asarray(r.embedding, np.float32).tobytes() in base for r in records[4:])
    service.close()
