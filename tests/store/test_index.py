"""Vector indexes: the exact oracle, HNSW recall against it, and the SQLite store's index files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from regard.index.ann import AnnIndex
from regard.index.exact import ExactIndex
from regard.store.sqlite import SqliteStore
from regard.types import ModelIdentity
from store.synthetic import face_like, in_index_files, new_faces, people

MODEL = ModelIdentity("test-model", "1", "0" * 64, "none")


def test_exact_index_matches_brute_force_and_removes() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 128)).astype(np.float32)
    idx = ExactIndex()
    idx.add(np.arange(500, dtype=np.int64) + 1000, x)
    q = rng.normal(size=128).astype(np.float32)
    keys, dist = idx.search(q, 5)
    truth = np.argsort(np.linalg.norm(x - q, axis=1))[:5]
    assert keys.tolist() == (truth + 1000).tolist()
    assert np.allclose(dist, np.linalg.norm(x[truth] - q, axis=1), atol=1e-4)
    idx.remove(np.array([truth[0] + 1000]))
    assert idx.size == 499
    assert int(truth[0] + 1000) not in idx
    assert idx.search(q, 1)[0][0] == truth[1] + 1000
    # Re-adding a key replaces its vector.
    idx.add(np.array([truth[1] + 1000]), (q + 5)[None, :])
    assert idx.size == 499
    assert idx.search(q, 1)[0][0] != truth[1] + 1000


@pytest.mark.parametrize("shape", ["face-like", "isotropic"])
def test_hnsw_recall_against_the_exact_index(shape: str) -> None:
    x = face_like(1000, 5, seed=3) if shape == "face-like" else people(1000, 5, seed=3, spread=0.6)
    keys = np.arange(len(x), dtype=np.int64)
    exact, ann = ExactIndex(), AnnIndex()
    exact.add(keys, x)
    ann.add(keys, x)
    rng = np.random.default_rng(4)
    probes = x[rng.choice(len(x), 100, replace=False)] + rng.normal(scale=0.05, size=(100, 128)).astype(
        np.float32
    )
    # A steep spectrum is projected onto its top components; templates without one are kept whole.
    if shape == "face-like":
        assert ann.projection is not None and 40 <= ann.projection.basis.shape[1] <= 96
    else:
        assert ann.projection is None
    hits1 = hits10 = 0
    for q in probes:
        truth = exact.search(q, 10)[0]
        got, dist = ann.search(q, 10)
        # The graph's candidates come back re-ranked: exact distances, nearest first.
        assert np.allclose(dist, np.linalg.norm(x[got] - q, axis=1), atol=1e-5)
        assert np.all(np.diff(dist) >= 0)
        if ann.projection is not None:  # a projection never lengthens a distance
            whole = np.linalg.norm(x - q, axis=1)
            projected = np.linalg.norm(ann.projection.apply(x) - ann.projection.apply(q[None]), axis=1)
            assert np.all(projected <= whole + 1e-4)
        hits1 += int(got[0] == truth[0])
        hits10 += len(set(got.tolist()) & set(truth.tolist()))
    assert hits1 / 100 >= 0.99
    assert hits10 / 1000 >= 0.99


def test_hnsw_files_keep_the_projection_and_the_stored_form(tmp_path: Path) -> None:
    x = face_like(100, 5, seed=9)
    ann = AnnIndex()
    ann.add(np.arange(len(x), dtype=np.int64), x)
    forms = ann.stored_forms(x[7])
    assert ann.projection is not None
    # The graph's float32 components, and the whole template beside the graph for re-ranking.
    assert [len(f) for f in forms] == [4 * ann.projection.basis.shape[1], 4 * 128]
    assert forms[1] == x[7].tobytes()
    assert ann.save(tmp_path / "a.hnsw")
    data = (tmp_path / "a.hnsw").read_bytes()
    assert all(f in data for f in forms)
    back = AnnIndex.load(tmp_path / "a.hnsw")
    assert back.stored_forms(x[7]) == forms and back.size == len(x)
    for q in x[::50]:
        keys, dist = back.search(q, 5)
        assert keys.tolist() == ann.search(q, 5)[0].tolist()
        assert np.allclose(dist, np.linalg.norm(x[keys] - q, axis=1), atol=1e-5)
    # A removed face's whole template leaves memory at once (its graph copy at the next rebuild).
    ann.remove(np.array([7]))
    assert forms[1] not in ann._whole.view.tobytes() and 7 not in ann.search(x[7], 5)[0].tolist()
    # Too few templates to fit a projection: whole templates, in the graph only.
    small = AnnIndex()
    small.add(np.arange(50, dtype=np.int64), x[:50])
    assert small.projection is None and small.stored_forms(x[0]) == [x[0].tobytes()]
    (tmp_path / "b.hnsw").write_bytes(b"RGDANN01" + b"\xff" * 8)
    with pytest.raises(ValueError):
        AnnIndex.load(tmp_path / "b.hnsw")


def _store(path: Path, **kw: int) -> SqliteStore:
    return SqliteStore(
        path, ann_min_faces=kw.get("ann_min_faces", 300), save_every=kw.get("save_every", 10**9)
    )


def _same_as_oracle(store: SqliteStore, vectors: np.ndarray) -> None:
    for q in vectors[::97]:
        got = [n.face.face_id for n in store.nearest("c", q, 5, 10.0)]
        oracle_keys, _ = store.exact_search("c", q, 5)
        with store._read() as tx:
            oracle = store.faces_by_key(tx, [int(k) for k in oracle_keys])
        assert got[0] == oracle[int(oracle_keys[0])].face_id
        assert len(set(got) & {f.face_id for f in oracle.values()}) >= 4


def test_switches_to_hnsw_saves_loads_and_repairs_index_files(tmp_path: Path) -> None:
    vectors = people(200, 5, seed=5, spread=0.5)
    s = _store(tmp_path)
    s.create_collection("c", "arn:c", MODEL, {})
    s.add_faces("c", new_faces(vectors[:100]))
    assert s.index_stats("c")["kind"] == "exact"
    for i in range(100, 1000, 100):
        s.add_faces("c", new_faces(vectors[i : i + 100]))
    stats = s.index_stats("c")
    assert stats == {**stats, "kind": "hnsw", "size": 1000}
    _same_as_oracle(s, vectors)
    s.close()
    files = sorted((tmp_path / "index").glob("*.hnsw"))
    assert len(files) == 1 and files[0].name.endswith(f"-{stats['seq']}.hnsw")

    # Reopen: the file is loaded and caught up with faces another writer added meanwhile.
    writer = _store(tmp_path)
    writer.add_faces("c", new_faces(people(1, 3, seed=6)))
    writer.close()
    s = _store(tmp_path)
    stats2 = s.index_stats("c")
    assert stats2["kind"] == "hnsw" and stats2["size"] == 1003
    _same_as_oracle(s, vectors)
    s.close()

    # A corrupt file is discarded and the index rebuilt from SQLite.
    for f in (tmp_path / "index").glob("*.hnsw"):
        f.write_bytes(b"not an index")
    s = _store(tmp_path)
    assert s.index_stats("c")["size"] == 1003
    _same_as_oracle(s, vectors)
    s.close()

    # A file claiming a later state than the database (e.g. a restored backup) is not trusted.
    (only,) = list((tmp_path / "index").glob("*.hnsw"))
    key = only.name.split("-")[0]
    only.rename(only.with_name(f"{key}-999999.hnsw"))
    s = _store(tmp_path)
    assert s.index_stats("c")["size"] == 1003
    assert not (tmp_path / "index" / f"{key}-999999.hnsw").exists()
    s.close()


def _index_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted((root / "index").glob("*.hnsw")))


def test_removal_drops_index_files_until_compacted(tmp_path: Path) -> None:
    vectors = face_like(100, 5, seed=7)  # projected: files hold templates in projected form
    s = _store(tmp_path)
    s.create_collection("c", "arn:c", MODEL, {})
    records = s.add_faces("c", new_faces(vectors))
    s.nearest("c", vectors[0], 1, 10.0)  # an index exists once a search needed it
    s.close()
    assert in_index_files(tmp_path, vectors[0])
    s = _store(tmp_path)
    s.nearest("c", vectors[0], 1, 10.0)  # loaded from the file
    s.delete_faces("c", [records[0].face_id])
    assert not list((tmp_path / "index").glob("*.hnsw"))
    assert records[0].face_id not in {n.face.face_id for n in s.nearest("c", vectors[0], 3, 10.0)}
    s.close()  # an index that has had removals is not written back
    assert not list((tmp_path / "index").glob("*.hnsw"))
    s = _store(tmp_path)
    s.nearest("c", vectors[0], 1, 10.0)  # rebuilt from SQLite, without the removed template
    s.delete_faces("c", [records[1].face_id])
    s.compact()  # rebuilds without the removed templates, then saves
    assert len(list((tmp_path / "index").glob("*.hnsw"))) == 1
    assert s.index_stats("c")["size"] == 498
    s.close()
    assert _index_bytes(tmp_path)
    assert not in_index_files(tmp_path, vectors[0]) and not in_index_files(tmp_path, vectors[1])
    assert in_index_files(tmp_path, vectors[2])


def test_an_index_file_of_an_older_format_is_rebuilt(tmp_path: Path) -> None:
    vectors = face_like(100, 5, seed=10)
    s = _store(tmp_path)
    s.create_collection("c", "arn:c", MODEL, {})
    s.add_faces("c", new_faces(vectors))
    s.nearest("c", vectors[0], 1, 10.0)
    s.close()
    (only,) = list((tmp_path / "index").glob("*.hnsw"))
    # Earlier versions wrote usearch graphs (bare or behind "RGDANN01"), then graphs without the
    # whole templates ("RGDANN02").
    only.write_bytes(b"RGDANN02" + only.read_bytes()[8:])
    s = _store(tmp_path)
    assert s.index_stats("c")["size"] == 500
    _same_as_oracle(s, vectors)
    s.close()
    (again,) = list((tmp_path / "index").glob("*.hnsw"))
    assert again.read_bytes().startswith(b"RGDANN03")


def test_an_index_of_a_collection_deleted_elsewhere_is_not_written(tmp_path: Path) -> None:
    vectors = people(60, 5, seed=8, spread=0.5)
    a = _store(tmp_path)
    a.create_collection("c", "arn:c", MODEL, {})
    a.add_faces("c", new_faces(vectors))
    a.nearest("c", vectors[0], 1, 10.0)  # process A holds an HNSW index of "c"
    b = _store(tmp_path)
    b.delete_collection("c")  # process B deletes the collection
    b.close()
    a.close()  # ... and must not write the deleted collection's templates to a file
    assert not list((tmp_path / "index").glob("*"))
    # Leftovers of a crash (an orphan file) are swept when a store opens.
    (tmp_path / "index" / "77-5.hnsw").write_bytes(vectors[0].tobytes())
    _store(tmp_path).close()
    assert not list((tmp_path / "index").glob("*"))
    # So are files of earlier versions (".usearch"), even of a live collection: never read, and
    # they may hold templates erased since.
    c = _store(tmp_path)
    c.create_collection("d", "arn:d", MODEL, {})
    with c._read() as tx:
        key = c._key(tx, "d")
    (tmp_path / "index" / f"{key}-5.usearch").write_bytes(vectors[0].tobytes())
    c.close()
    _store(tmp_path).close()
    assert not list((tmp_path / "index").glob("*"))


@pytest.mark.postgres
def test_postgres_builds_its_hnsw_index_on_the_first_search_past_the_threshold(pg_url: str) -> None:
    from regard.store.postgres import PostgresStore

    store = PostgresStore(pg_url, ann_min_faces=2000)
    store.create_collection("c", "arn:c", MODEL, {})
    vectors = people(600, 5, seed=9, spread=0.5)
    store.add_faces("c", new_faces(vectors[:1000]))
    store.nearest("c", vectors[0], 1, 10.0)
    conn = store._conn()
    assert conn.execute("SELECT to_regclass('faces_hnsw_1')").fetchone() == (None,)  # still exact
    store.add_faces("c", new_faces(vectors[1000:]))
    for q in vectors[::300]:
        got = [n.face.face_id for n in store.nearest("c", q, 5, 10.0)]
        want = [n.face.face_id for n in store.exact_search("c", q, 5)]
        assert got[0] == want[0] and len(set(got) & set(want)) >= 4
    assert conn.execute("SELECT to_regclass('faces_hnsw_1') IS NOT NULL").fetchone() == (True,)
    plan = "\n".join(
        r[0]
        for r in conn.execute(
            "EXPLAIN SELECT id FROM faces WHERE collection = 1 ORDER BY embedding <-> %s LIMIT 5",
            (np.asarray(vectors[0], np.float32),),
        ).fetchall()
    )
    assert "faces_hnsw_1" in plan
    store.delete_collection("c")
    assert conn.execute("SELECT to_regclass('faces_hnsw_1')").fetchone() == (None,)
    store.close()
