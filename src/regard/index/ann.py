"""The approximate index: usearch's HNSW graph, chosen by measurement (docs/benchmarks.md, "Search").

Removed templates are taken out of the graph at once; a saved file is only ever written
from an index that has had no removals since it was built, so erasure reaches the files
too (:meth:`AnnIndex.save` refuses otherwise and the caller rebuilds from the store).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from usearch.index import Index

from regard.index.exact import Distances, Keys, Vectors

#: Graphs smaller than this are built with one insertion thread.
SERIAL_INSERT_BELOW = 100_000


@dataclass(frozen=True, slots=True)
class AnnParams:
    """HNSW parameters, chosen by measurement (docs/benchmarks.md, "Search").

    M=32 / expansion_add=128 / expansion_search=192 reached recall@10 0.992 at 1M synthetic faces,
    where these defaults reach 0.932; but with M=32 usearch's multi-threaded insertion left whole
    identity clusters unreachable in small graphs (4 of 60 trials of 1,000 faces missed a
    stored face searched for itself; 0 of 60 with one insertion thread or with M=16). Graphs
    under SERIAL_INSERT_BELOW faces are now built with one thread; larger ones still in parallel,
    so the defaults stay at M=16 until that is measured at scale.
    """

    connectivity: int = 16
    expansion_add: int = 64
    expansion_search: int = 128
    dtype: str = "f32"


class AnnIndex:
    """A usearch HNSW index over Euclidean distance (usearch reports squared L2; we take the root)."""

    def __init__(self, dim: int = 128, params: AnnParams | None = None) -> None:
        self.dim = dim
        self.params = params or AnnParams()
        self._index = self._new()
        self.removed_since_build = 0

    def _new(self) -> Index:
        p = self.params
        return Index(
            ndim=self.dim,
            metric="l2sq",
            dtype=p.dtype,
            connectivity=p.connectivity,
            expansion_add=p.expansion_add,
            expansion_search=p.expansion_search,
        )

    @property
    def size(self) -> int:
        return len(self._index)

    def __contains__(self, key: int) -> bool:
        return bool(self._index.contains(int(key)))

    def add(self, keys: Keys, vectors: Vectors) -> None:
        ukeys = np.asarray(keys, dtype=np.uint64).reshape(-1)
        if len(ukeys) == 0:
            return
        vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(len(ukeys), self.dim))
        present = np.asarray(self._index.contains(ukeys), dtype=bool).reshape(-1)
        if present.any():
            self.remove(ukeys[present].astype(np.int64))
        # Parallel insertion of many near-duplicate faces into a small graph can leave a whole
        # identity cluster unreachable (measured: docs/benchmarks.md, "Search"); below
        # SERIAL_INSERT_BELOW faces one thread inserts, which is quick at that size anyway.
        threads = 1 if self.size + len(ukeys) < SERIAL_INSERT_BELOW else 0
        self._index.add(ukeys, vectors, threads=threads)

    def remove(self, keys: Keys) -> None:
        ukeys = np.asarray(keys, dtype=np.uint64).reshape(-1)
        if len(ukeys) == 0:
            return
        present = np.asarray(self._index.contains(ukeys), dtype=bool).reshape(-1)
        if present.any():
            self._index.remove(ukeys[present], compact=True)
            self.removed_since_build += int(present.sum())

    def search(self, probe: Vectors, k: int) -> tuple[Keys, Distances]:
        n = self.size
        if n == 0 or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        q = np.ascontiguousarray(np.asarray(probe, dtype=np.float32).reshape(self.dim))
        m = self._index.search(q, count=min(k, n), threads=1)
        keys = np.asarray(m.keys, dtype=np.int64)
        dist = np.sqrt(np.maximum(np.asarray(m.distances, dtype=np.float32), 0.0))
        return keys, dist

    def memory_bytes(self) -> int:
        return int(self._index.memory_usage)

    def save(self, path: Path) -> bool:
        """Write the index atomically to ``path``; False (and nothing written) after removals."""
        if self.removed_since_build:
            return False
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        self._index.save(str(tmp))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return True

    @classmethod
    def load(cls, path: Path, dim: int = 128, params: AnnParams | None = None) -> AnnIndex:
        """Read a saved index; raises ValueError/OSError if the file is unusable."""
        idx = cls(dim, params)
        idx._index.load(str(path))
        if idx._index.ndim != dim:
            raise ValueError(f"{path} holds {idx._index.ndim}-d vectors, expected {dim}")
        idx._index.expansion_search = idx.params.expansion_search  # type: ignore[misc]  # has a setter
        return idx
