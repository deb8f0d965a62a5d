"""The in-process vector index of each SQLite collection, kept in step through the change log.

Every change to a collection's templates is appended to the ``changes`` table in the same
transaction; each process keeps one in-memory index per collection and, before a search,
applies the changes it has not seen yet, so processes sharing a data directory stay in step.

Small collections are searched with the exact numpy index; from ``ann_min_faces`` on, a
HNSW index (faiss) over PCA-projected templates takes over; it re-ranks the candidates of
its graph by exact distance to the whole templates it keeps in memory.
HNSW indexes are saved to ``index/<key>-<seq>.hnsw``
(``seq``: the last change the file reflects), loaded on open and caught up from the change
log; a missing, unreadable or newer-than-the-database file is rebuilt from SQLite. A file is
never written from an index that has had removals, and removing templates deletes the
collection's files, so erased templates do not linger in index files.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from regard.index.ann import AnnIndex, AnnParams
from regard.index.exact import ExactIndex
from regard.store.base import Neighbor, as_vector
from regard.store.locks import SharedLock
from regard.store.sql import SqlStore, Tx, _chunks, _marks
from regard.types import Embeddings

#: Collections at least this large are searched with HNSW instead of an exact scan.
ANN_MIN_FACES = 20_000
#: Save an HNSW index file after this many changes since the last save.
SAVE_EVERY = 50_000
#: Index files: ``index/<collection key>-<last change applied>.hnsw``.
INDEX_SUFFIX = ".hnsw"
LEGACY_SUFFIX = ".usearch"


@dataclass
class _State:
    """One collection's in-memory index, the last change it reflects and the lock around it."""

    key: int
    index: ExactIndex | AnnIndex
    seq: int  # last change applied
    saved_seq: int
    lock: SharedLock  # shared: searches; exclusive: changes, rebuilds, saves


class SqliteIndexes(SqlStore):
    """Each collection's vector index, caught up from the change log and saved under ``index_dir``."""

    index_dir: Path
    ann_min_faces: int
    ann_params: AnnParams
    save_every: int
    _states: dict[int, _State]
    _states_lock: threading.Lock

    # -- index files ------------------------------------------------------------------------
    def _files(self, key: int) -> list[tuple[int, Path]]:
        out: list[tuple[int, Path]] = []
        for p in self.index_dir.glob(f"{key}-*{INDEX_SUFFIX}"):
            try:
                out.append((int(p.stem.split("-", 1)[1]), p))
            except ValueError:
                continue
        return sorted(out)

    def _drop_files(self, key: int) -> None:
        for _, p in self._files(key):
            p.unlink(missing_ok=True)

    def _after_removal(self, key: int) -> None:
        self._drop_files(key)
        with self._states_lock:
            state = self._states.get(key)
        if state is not None:
            with state.lock.exclusive():
                if not self._collection_exists(key):
                    with self._states_lock:
                        self._states.pop(key, None)
                else:
                    self._sync(state)

    def _collection_exists(self, key: int) -> bool:
        with self._read() as tx:
            return tx.one("SELECT 1 FROM collections WHERE id = ?", (key,)) is not None

    def _save(self, state: _State) -> None:
        if not isinstance(state.index, AnnIndex) or state.seq == state.saved_seq:
            return
        target = self.index_dir / f"{state.key}-{state.seq}{INDEX_SUFFIX}"
        if not state.index.save(target):
            return
        # A removal committed meanwhile (or the collection's deletion) must not survive in a file.
        with self._read() as tx:
            removed = tx.one(
                "SELECT 1 FROM changes WHERE collection = ? AND seq > ? AND op = 'del' LIMIT 1",
                (state.key, state.seq),
            )
            alive = tx.one("SELECT 1 FROM collections WHERE id = ?", (state.key,))
        if removed is not None or alive is None:
            target.unlink(missing_ok=True)
            return
        state.saved_seq = state.seq
        for seq, p in self._files(state.key):
            if seq < state.seq:
                p.unlink(missing_ok=True)

    def _sweep_orphans(self) -> None:
        """Delete index files of collections that no longer exist, and those of older versions."""
        with self._read() as tx:
            live = {int(r[0]) for r in tx.all("SELECT id FROM collections")}
        for p in self.index_dir.glob(f"*{INDEX_SUFFIX}*"):
            head = p.name.split("-", 1)[0]
            if not head.isdigit() or int(head) not in live:
                p.unlink(missing_ok=True)
        # Earlier versions named their files ``.usearch``: never read again, and they may hold
        # templates erased since, so they go (the index is rebuilt from SQLite).
        for p in self.index_dir.glob(f"*{LEGACY_SUFFIX}*"):
            p.unlink(missing_ok=True)

    def _build(self, key: int) -> _State:
        """Load the newest usable index file, else build from SQLite; then catch up."""
        with self._read() as tx:
            row = tx.one("SELECT max(seq) FROM changes WHERE collection = ?", (key,))
        latest = int(row[0] or 0)
        for seq, path in reversed(self._files(key)):
            if seq > latest:
                path.unlink(missing_ok=True)  # from a newer or discarded state of the database
                continue
            try:
                ann = AnnIndex.load(path, params=self.ann_params)
            except (OSError, ValueError, RuntimeError):
                path.unlink(missing_ok=True)
                continue
            state = _State(key, ann, seq, seq, SharedLock())
            self._sync(state)
            return state
        with self._read() as tx:
            row = tx.one("SELECT max(seq) FROM changes WHERE collection = ?", (key,))
            seq = int(row[0] or 0)
            keys, vectors = _templates(tx.all("SELECT id, embedding FROM faces WHERE collection = ?", (key,)))
        index: ExactIndex | AnnIndex = (
            AnnIndex(params=self.ann_params) if len(keys) >= self.ann_min_faces else ExactIndex()
        )
        index.add(keys, vectors)
        state = _State(key, index, seq, 0, SharedLock())
        self._sync(state)
        return state

    def _build_fresh(self, key: int) -> _State:
        """Delete the collection's index files and build its index again from SQLite."""
        self._drop_files(key)
        return self._build(key)

    def _sync(self, state: _State) -> None:
        """Apply the changes committed since ``state.seq`` (caller holds ``state.lock`` exclusively)."""
        with self._read() as tx:
            due = self._apply(state, tx)
        if due:
            self._save(state)

    @staticmethod
    def _pending(state: _State, tx: Tx) -> bool:
        """Whether ``tx`` sees changes to the collection that its index has not applied."""
        row = tx.one("SELECT 1 FROM changes WHERE collection = ? AND seq > ? LIMIT 1", (state.key, state.seq))
        return row is not None

    def _apply(self, state: _State, tx: Tx) -> bool:
        """Apply the changes ``tx`` sees since ``state.seq``; True if the index file is due a save."""
        rows = tx.all(
            "SELECT seq, face_key, op FROM changes WHERE collection = ? AND seq > ? ORDER BY seq",
            (state.key, state.seq),
        )
        if not rows:
            return False
        last: dict[int, str] = {}
        for _, fk, op in rows:
            last[int(fk)] = op
        keys, mat = _templates_by_key(tx, [k for k, op in last.items() if op == "add"])
        added = set(keys.tolist())
        state.index.remove(np.array([k for k in last if k not in added], dtype=np.int64))
        if len(keys):
            if isinstance(state.index, ExactIndex) and state.index.size + len(keys) >= self.ann_min_faces:
                old_keys, old_vectors = state.index.vectors()
                ann = AnnIndex(params=self.ann_params)
                ann.add(old_keys, old_vectors)
                state.index = ann
            state.index.add(keys, mat)
        state.seq = int(rows[-1][0])
        return isinstance(state.index, AnnIndex) and state.seq - state.saved_seq >= self.save_every

    def _state(self, key: int) -> _State:
        with self._states_lock:
            state = self._states.get(key)
            if state is None:
                state = self._build(key)
                self._states[key] = state
            return state

    def nearest(self, collection_id: str, probe: Embeddings, k: int, max_distance: float) -> list[Neighbor]:
        q = as_vector(probe)
        while True:
            # One snapshot: the collection, the changes applied to its index and the face rows read.
            with self._read() as tx:
                key = self._key(tx, collection_id)
                with self._states_lock:
                    state = self._states.get(key)
                if state is not None:
                    due = False
                    if self._pending(state, tx):
                        with state.lock.exclusive():
                            due = self._apply(state, tx)
                    with state.lock.shared():
                        keys, dists = state.index.search(q, k)
                    keep = dists <= max_distance
                    keys, dists = keys[keep], dists[keep]
                    records = self.faces_by_key(tx, [int(x) for x in keys]) if len(keys) else {}
                    break
            self._state(key)  # load or build the index outside any transaction, then search
        if due:
            with state.lock.exclusive():
                self._save(state)
        return [
            Neighbor(face=records[int(fk)], distance=float(dist))
            for fk, dist in zip(keys, dists, strict=True)
            if int(fk) in records
        ]

    def index_stats(self, collection_id: str) -> dict[str, Any]:
        """What the collection's in-memory index is: kind, size, memory (benchmarks, diagnostics)."""
        with self._read() as tx:
            key = self._key(tx, collection_id)
        state = self._state(key)
        with state.lock.exclusive():
            self._sync(state)
            return {
                "kind": "hnsw" if isinstance(state.index, AnnIndex) else "exact",
                "size": state.index.size,
                "memory_bytes": state.index.memory_bytes(),
                "seq": state.seq,
            }

    def exact_search(self, collection_id: str, probe: Embeddings, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The oracle: exact k nearest face keys and distances straight from SQLite (slow; tests, bench)."""
        with self._read() as tx:
            key = self._key(tx, collection_id)
            keys, vectors = _templates(tx.all("SELECT id, embedding FROM faces WHERE collection = ?", (key,)))
        idx = ExactIndex()
        idx.add(keys, vectors)
        return idx.search(as_vector(probe), k)


def _templates(rows: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """Face keys and a float32 template matrix from ``(id, embedding)`` rows."""
    keys = np.fromiter((int(r[0]) for r in rows), dtype=np.int64, count=len(rows))
    return keys, np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), 128)


def _templates_by_key(tx: Tx, keys: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The stored templates of those of ``keys`` that still exist."""
    rows: list[Any] = []
    for chunk in _chunks(keys):
        rows += tx.all(f"SELECT id, embedding FROM faces WHERE id IN ({_marks(len(chunk))})", tuple(chunk))
    return _templates(rows)
