"""The exact index: a numpy matrix scanned in full. It is the oracle ANN recall is measured against.

Keys are the store's integer face keys; distances are Euclidean.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

Keys = npt.NDArray[np.int64]
Vectors = npt.NDArray[np.float32]
Distances = npt.NDArray[np.float32]


class VectorIndex(Protocol):
    """A mutable key -> vector index answering k-nearest-neighbour queries."""

    @property
    def size(self) -> int: ...
    def add(self, keys: Keys, vectors: Vectors) -> None: ...
    def remove(self, keys: Keys) -> None: ...
    def search(self, probe: Vectors, k: int) -> tuple[Keys, Distances]: ...
    def memory_bytes(self) -> int: ...


class ExactIndex:
    """A brute-force index: a growable float32 matrix, swap-with-last removal."""

    def __init__(self, dim: int = 128) -> None:
        self.dim = dim
        self._vectors: Vectors = np.zeros((0, dim), dtype=np.float32)
        self._keys: Keys = np.zeros(0, dtype=np.int64)
        self._norms: npt.NDArray[np.float32] = np.zeros(0, dtype=np.float32)
        self._n = 0
        self._pos: dict[int, int] = {}

    @property
    def size(self) -> int:
        return self._n

    def __contains__(self, key: int) -> bool:
        return key in self._pos

    def _reserve(self, extra: int) -> None:
        need = self._n + extra
        if need <= len(self._keys):
            return
        cap = max(need, 2 * len(self._keys), 1024)
        vectors = np.zeros((cap, self.dim), dtype=np.float32)
        keys = np.zeros(cap, dtype=np.int64)
        norms = np.zeros(cap, dtype=np.float32)
        vectors[: self._n] = self._vectors[: self._n]
        keys[: self._n] = self._keys[: self._n]
        norms[: self._n] = self._norms[: self._n]
        self._vectors, self._keys, self._norms = vectors, keys, norms

    def add(self, keys: Keys, vectors: Vectors) -> None:
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(keys), self.dim)
        fresh = [i for i, k in enumerate(keys.tolist()) if k not in self._pos]
        if len(fresh) != len(keys):
            self.remove(np.array([k for k in keys.tolist() if k in self._pos], dtype=np.int64))
            fresh = list(range(len(keys)))
        self._reserve(len(fresh))
        start = self._n
        end = start + len(keys)
        self._vectors[start:end] = vectors
        self._keys[start:end] = keys
        self._norms[start:end] = np.einsum("ij,ij->i", vectors, vectors)
        for i, k in enumerate(keys.tolist()):
            self._pos[k] = start + i
        self._n = end

    def remove(self, keys: Keys) -> None:
        for k in np.asarray(keys, dtype=np.int64).reshape(-1).tolist():
            pos = self._pos.pop(k, None)
            if pos is None:
                continue
            last = self._n - 1
            if pos != last:
                self._vectors[pos] = self._vectors[last]
                self._norms[pos] = self._norms[last]
                moved = int(self._keys[last])
                self._keys[pos] = moved
                self._pos[moved] = pos
            self._vectors[last] = 0.0  # erase the removed template from memory
            self._n = last

    def search(self, probe: Vectors, k: int) -> tuple[Keys, Distances]:
        """The ``k`` nearest keys and their Euclidean distances, nearest first."""
        n = self._n
        if n == 0 or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        q = np.asarray(probe, dtype=np.float32).reshape(self.dim)
        # |x - q|^2 = |x|^2 - 2 x.q + |q|^2. einsum rather than BLAS: a matrix-vector product is
        # memory-bound, and BLAS threads contending for busy cores made it 10-20x slower here.
        d2 = self._norms[:n] - 2.0 * np.einsum("ij,j->i", self._vectors[:n], q) + float(q @ q)
        k = min(k, n)
        part = np.argpartition(d2, k - 1)[:k] if k < n else np.arange(n)
        order = part[np.argsort(d2[part], kind="stable")]
        dist = np.sqrt(np.maximum(d2[order], 0.0)).astype(np.float32)
        return self._keys[order].copy(), dist

    def vectors(self) -> tuple[Keys, Vectors]:
        """Every key and vector (copies)."""
        return self._keys[: self._n].copy(), self._vectors[: self._n].copy()

    def memory_bytes(self) -> int:
        return int(self._vectors.nbytes + self._keys.nbytes + self._norms.nbytes) + 100 * len(self._pos)
