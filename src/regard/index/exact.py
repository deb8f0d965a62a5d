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


class Rows:
    """An array that grows by doubling, so adding one face to a large index copies nothing."""

    def __init__(self, dtype: type, width: int = 0, data: np.ndarray | None = None) -> None:
        shape = (0, width) if width else (0,)
        self._buf: np.ndarray = np.zeros(shape, dtype=dtype) if data is None else data
        self.n = len(self._buf)

    @property
    def view(self) -> np.ndarray:
        return self._buf[: self.n]

    def append(self, rows: np.ndarray) -> None:
        need = self.n + len(rows)
        if need > len(self._buf):
            grown = np.zeros((max(need, 2 * len(self._buf), 1024), *self._buf.shape[1:]), self._buf.dtype)
            grown[: self.n] = self.view
            self._buf = grown
        self._buf[self.n : need] = rows
        self.n = need

    def nbytes(self) -> int:
        """Bytes allocated, spare capacity included."""
        return int(self._buf.nbytes)


class ExactIndex:
    """A brute-force index: a growable float32 matrix, swap-with-last removal."""

    def __init__(self, dim: int = 128) -> None:
        self.dim = dim
        self._vectors = Rows(np.float32, dim)
        self._keys = Rows(np.int64)
        self._norms = Rows(np.float32)
        self._pos: dict[int, int] = {}

    @property
    def size(self) -> int:
        return self._keys.n

    def __contains__(self, key: int) -> bool:
        return key in self._pos

    def add(self, keys: Keys, vectors: Vectors) -> None:
        keys = np.asarray(keys, dtype=np.int64).reshape(-1)
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(keys), self.dim)
        present = [k for k in keys.tolist() if k in self._pos]
        if present:  # re-adding a key replaces its vector
            self.remove(np.array(present, dtype=np.int64))
        start = self.size
        self._vectors.append(vectors)
        self._keys.append(keys)
        self._norms.append(np.einsum("ij,ij->i", vectors, vectors))
        for i, k in enumerate(keys.tolist()):
            self._pos[k] = start + i

    def remove(self, keys: Keys) -> None:
        vectors, norms, held = self._vectors.view, self._norms.view, self._keys.view
        for k in np.asarray(keys, dtype=np.int64).reshape(-1).tolist():
            pos = self._pos.pop(k, None)
            if pos is None:
                continue
            last = self.size - 1
            if pos != last:
                vectors[pos] = vectors[last]
                norms[pos] = norms[last]
                moved = int(held[last])
                held[pos] = moved
                self._pos[moved] = pos
            vectors[last] = 0.0  # erase the removed template from memory
            for rows in (self._vectors, self._keys, self._norms):
                rows.n = last

    def search(self, probe: Vectors, k: int) -> tuple[Keys, Distances]:
        """The ``k`` nearest keys and their Euclidean distances, nearest first."""
        n = self.size
        if n == 0 or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        q = np.asarray(probe, dtype=np.float32).reshape(self.dim)
        # |x - q|^2 = |x|^2 - 2 x.q + |q|^2. einsum rather than BLAS: a matrix-vector product is
        # memory-bound, and BLAS threads contending for busy cores made it 10-20x slower here.
        d2 = self._norms.view - 2.0 * np.einsum("ij,j->i", self._vectors.view, q) + float(q @ q)
        k = min(k, n)
        part = np.argpartition(d2, k - 1)[:k] if k < n else np.arange(n)
        order = part[np.argsort(d2[part], kind="stable")]
        dist = np.sqrt(np.maximum(d2[order], 0.0)).astype(np.float32)
        return self._keys.view[order].copy(), dist

    def vectors(self) -> tuple[Keys, Vectors]:
        """Every key and vector (copies)."""
        return self._keys.view.copy(), self._vectors.view.copy()

    def memory_bytes(self) -> int:
        return self._vectors.nbytes() + self._keys.nbytes() + self._norms.nbytes() + 100 * len(self._pos)
