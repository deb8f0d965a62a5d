"""The approximate index: usearch's HNSW graph over PCA-projected float16 templates.

Chosen by measurement (docs/benchmarks.md, "Search"). A 1M-face search is bound by memory
latency: each query reads some 10,000 stored vectors at random. Face templates have a steep
variance spectrum (real dlib descriptors keep 97.8 % of their variance in 64 of 128 principal
components), so the graph holds each template projected onto the collection's top principal
components and stored as float16: 128 bytes instead of 512. The distances it reports are
therefore approximate (an orthogonal projection never lengthens a distance, so they are lower
bounds up to float16 rounding). Callers ask for a pool of :attr:`AnnParams.candidates`
neighbours and re-rank them by exact distance to the stored float32 templates; the SQLite
store does this with the templates in its database.

Removed templates are taken out of the graph at once; a saved file is only ever written
from an index that has had no removals since it was built, so erasure reaches the files
too (:meth:`AnnIndex.save` refuses otherwise and the caller rebuilds from the store).
:meth:`AnnIndex.stored_form` gives the bytes an index holds for a template, so tests and
audits can check that an erased template's bytes are gone from its files.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
from usearch.index import Index

from regard.index.exact import Distances, Keys, Vectors

#: Graphs smaller than this are built with one insertion thread.
SERIAL_INSERT_BELOW = 100_000
#: A projection is fitted only from at least this many templates (twice the dimension keeps the
#: covariance estimate full-rank); an index first filled with fewer keeps whole templates.
MIN_FIT = 256
#: A projection that would keep more than this share of the dimensions is not worth its error.
MAX_KEPT_SHARE = 0.75
#: Templates sampled to fit the projection.
FIT_SAMPLE = 50_000
FILE_MAGIC = b"RGDANN01"
_DTYPES = {"f32": np.float32, "f16": np.float16}


@dataclass(frozen=True, slots=True)
class AnnParams:
    """HNSW parameters, chosen by measurement (docs/benchmarks.md, "Search").

    The graph keeps the fewest principal components that explain ``variance`` of the
    collection's variance (1.0: whole templates; real dlib descriptors need about 64 of 128 for
    0.97, templates without such structure keep all); ``candidates`` is how many neighbours a
    search returns for exact re-ranking.
    """

    connectivity: int = 32
    expansion_add: int = 128
    expansion_search: int = 192
    dtype: str = "f16"
    variance: float = 0.97
    candidates: int = 40

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, not {self.dtype!r}")
        if not 0.0 < self.variance <= 1.0 or self.candidates < 1:
            raise ValueError("variance must be in (0, 1] and candidates >= 1")


@dataclass(frozen=True)
class Projection:
    """Centring plus an orthonormal basis of the top principal components."""

    mean: npt.NDArray[np.float32]
    basis: npt.NDArray[np.float32]  # (dim, dims), orthonormal columns

    @classmethod
    def fit(cls, vectors: Vectors, variance: float, seed: int = 0) -> Projection | None:
        """The top components explaining ``variance``; None if they are most of the dimensions."""
        x = np.asarray(vectors, dtype=np.float64)
        if len(x) > FIT_SAMPLE:
            x = x[np.random.default_rng(seed).choice(len(x), FIT_SAMPLE, replace=False)]
        mean = x.mean(axis=0)
        vals, vecs = np.linalg.eigh(np.cov((x - mean).T))
        vals, vecs = np.maximum(vals[::-1], 0.0), vecs[:, ::-1]  # eigh sorts ascending
        share = np.cumsum(vals) / max(float(vals.sum()), 1e-30)
        dims = int(np.searchsorted(share, variance - 1e-12)) + 1
        if dims > MAX_KEPT_SHARE * x.shape[1]:
            return None
        return cls(mean.astype(np.float32), np.ascontiguousarray(vecs[:, :dims], dtype=np.float32))

    def apply(self, vectors: Vectors) -> Vectors:
        return np.ascontiguousarray((np.asarray(vectors, dtype=np.float32) - self.mean) @ self.basis)


class AnnIndex:
    """A usearch HNSW index over Euclidean distance (usearch reports squared L2; we take the root)."""

    def __init__(self, dim: int = 128, params: AnnParams | None = None) -> None:
        self.dim = dim
        self.params = params or AnnParams()
        self.projection: Projection | None = None
        self._index = self._new(dim)
        self._filled = False  # the projection is decided by the first add
        self.removed_since_build = 0

    def _new(self, ndim: int) -> Index:
        p = self.params
        return Index(
            ndim=ndim,
            metric="l2sq",
            dtype=p.dtype,
            connectivity=p.connectivity,
            expansion_add=p.expansion_add,
            expansion_search=p.expansion_search,
        )

    @property
    def size(self) -> int:
        return len(self._index)

    @property
    def exact_distances(self) -> bool:
        """Whether :meth:`search` reports exact Euclidean distances (whole float32 templates)."""
        return self.projection is None and self.params.dtype == "f32"

    def __contains__(self, key: int) -> bool:
        return bool(self._index.contains(int(key)))

    def _stored(self, vectors: Vectors) -> npt.NDArray[np.generic]:
        """Templates as the graph holds them: projected, then in the index's number type."""
        x = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if self.projection is not None:
            x = self.projection.apply(x)
        return np.ascontiguousarray(x.astype(_DTYPES[self.params.dtype]))

    def stored_form(self, vector: Vectors) -> bytes:
        """The bytes this index (and a file saved from it) holds for ``vector``."""
        return self._stored(vector).tobytes()

    def add(self, keys: Keys, vectors: Vectors) -> None:
        ukeys = np.asarray(keys, dtype=np.uint64).reshape(-1)
        if len(ukeys) == 0:
            return
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ukeys), self.dim)
        if not self._filled:
            self._filled = True
            if self.params.variance < 1.0 and len(vectors) >= MIN_FIT:
                self.projection = Projection.fit(vectors, self.params.variance)
                if self.projection is not None:
                    self._index = self._new(self.projection.basis.shape[1])
        present = np.asarray(self._index.contains(ukeys), dtype=bool).reshape(-1)
        if present.any():
            self.remove(ukeys[present].astype(np.int64))
        # Parallel insertion of many near-duplicate faces into a small graph can leave a whole
        # identity cluster unreachable (measured: docs/benchmarks.md, "Search"); below
        # SERIAL_INSERT_BELOW faces one thread inserts, which is quick at that size anyway.
        threads = 1 if self.size + len(ukeys) < SERIAL_INSERT_BELOW else 0
        self._index.add(ukeys, self._stored(vectors), threads=threads)

    def remove(self, keys: Keys) -> None:
        ukeys = np.asarray(keys, dtype=np.uint64).reshape(-1)
        if len(ukeys) == 0:
            return
        present = np.asarray(self._index.contains(ukeys), dtype=bool).reshape(-1)
        if present.any():
            self._index.remove(ukeys[present], compact=True)
            self.removed_since_build += int(present.sum())

    def search(self, probe: Vectors, k: int) -> tuple[Keys, Distances]:
        """Up to ``k`` approximate nearest keys, nearest first, with approximate distances.

        Unless :attr:`exact_distances`, the order and distances are those of the stored form:
        ask for ``max(k, params.candidates)`` and re-rank by exact distance.
        """
        n = self.size
        if n == 0 or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        q = self._stored(probe).reshape(-1)
        m = self._index.search(q, count=min(k, n), threads=1)
        keys = np.asarray(m.keys, dtype=np.int64)
        dist = np.sqrt(np.maximum(np.asarray(m.distances, dtype=np.float32), 0.0))
        return keys, dist

    def memory_bytes(self) -> int:
        return int(self._index.memory_usage)

    def save(self, path: Path) -> bool:
        """Write the index atomically to ``path``; False (and nothing written) after removals.

        The file is a small header (JSON settings and the projection) followed by usearch's own
        serialisation of the graph.
        """
        if self.removed_since_build:
            return False
        p = self.projection
        header = json.dumps(
            {"dim": self.dim, "dims": 0 if p is None else int(p.basis.shape[1]), "dtype": self.params.dtype}
        ).encode()
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(FILE_MAGIC + struct.pack("<I", len(header)) + header)
            if p is not None:
                fh.write(p.mean.tobytes() + p.basis.tobytes())
            blob = self._index.save()
            if blob is None:
                raise RuntimeError("usearch returned no serialisation")
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return True

    @classmethod
    def load(cls, path: Path, dim: int = 128, params: AnnParams | None = None) -> AnnIndex:
        """Read a saved index; raises ValueError/OSError if the file is unusable.

        The file's own vector type and projection win over ``params`` (an index saved with
        other settings stays searchable until it is rebuilt).
        """
        data = memoryview(Path(path).read_bytes())
        if bytes(data[:8]) != FILE_MAGIC or len(data) < 12:
            raise ValueError(f"{path} is not a regard index file")
        (hlen,) = struct.unpack("<I", data[8:12])
        try:
            header = json.loads(bytes(data[12 : 12 + hlen]))
            file_dim, dims, dtype = int(header["dim"]), int(header["dims"]), str(header["dtype"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} has an unreadable header") from exc
        if file_dim != dim or dtype not in _DTYPES or not 0 <= dims <= dim:
            raise ValueError(f"{path} holds {file_dim}-d {dtype} vectors, expected {dim}-d")
        idx = cls(dim, replace(params or AnnParams(), dtype=dtype))
        at = 12 + hlen
        if dims:
            end = at + 4 * dim * (1 + dims)
            if len(data) < end:
                raise ValueError(f"{path} is truncated")
            mean = np.frombuffer(data[at : at + 4 * dim], dtype=np.float32).copy()
            basis = np.frombuffer(data[at + 4 * dim : end], dtype=np.float32).reshape(dim, dims).copy()
            idx.projection = Projection(mean, basis)
            idx._index = idx._new(dims)
            at = end
        idx._filled = True
        idx._index.load(data[at:])
        if idx._index.ndim != (dims or dim):
            raise ValueError(f"{path} holds {idx._index.ndim}-d vectors, expected {dims or dim}")
        idx._index.expansion_search = idx.params.expansion_search  # type: ignore[misc]  # has a setter
        return idx
