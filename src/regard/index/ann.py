"""The approximate index: an HNSW graph (faiss) over PCA-projected templates.

Chosen by measurement (docs/benchmarks.md, "Search"). A 1M-face search is bound by the cost of
each of the ~8,000 distances it computes. Face templates have a steep variance spectrum (real
dlib descriptors keep 97.8 % of their variance in 64 of 128 principal components), so the graph
holds each template projected onto the collection's top principal components. The distances it
walks are therefore approximate (an orthogonal projection never lengthens a distance, so its
distances are lower bounds). A search for k faces takes k + :attr:`AnnParams.candidates` neighbours
from the graph and re-ranks them by exact distance to the whole float32 templates, which the
index keeps beside the graph (512 bytes a face, measured cheaper than reading them back from
SQLite per query): the keys it returns are approximate, their order and distances exact.
faiss's HNSW was 3x faster than usearch's at the same graph settings and recall on this
machine, so it replaced usearch.

faiss's HNSW cannot delete: removed templates are dropped from every result at once and their
keys forgotten, and their vectors leave memory when the index is rebuilt (the store's
``compact``). A saved file is only ever written from an index that has had no removals since it
was built, so erasure reaches the files too (:meth:`AnnIndex.save` refuses otherwise and the
caller rebuilds from the store). :meth:`AnnIndex.stored_forms` gives the bytes an index holds
for a template, so tests and audits can check that an erased template's bytes are gone.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from regard.index.exact import Distances, Keys, Rows, Vectors

#: Graphs smaller than this are built with one insertion thread.
SERIAL_INSERT_BELOW = 100_000
#: A projection is fitted only from at least this many templates (twice the dimension keeps the
#: covariance estimate full-rank); an index first filled with fewer keeps whole templates.
MIN_FIT = 256
#: A projection that would keep more than this share of the dimensions is not worth its error.
MAX_KEPT_SHARE = 0.75
#: Templates sampled to fit the projection.
FIT_SAMPLE = 50_000
FILE_MAGIC = b"RGDANN03"
#: faiss's thread count is process-wide; builds that change it take this lock.
_THREADS = threading.Lock()


@dataclass(frozen=True, slots=True)
class AnnParams:
    """HNSW parameters, chosen by measurement (docs/benchmarks.md, "Search").

    The graph keeps the fewest principal components that explain ``variance`` of the
    collection's variance (1.0: whole templates; real dlib descriptors need about 64 of 128 for
    0.97, templates without such structure keep all); ``candidates`` is how many neighbours
    beyond the k asked for a search takes from a projected graph to re-rank by exact distance.
    """

    connectivity: int = 32
    expansion_add: int = 128
    expansion_search: int = 256
    variance: float = 0.97
    candidates: int = 40

    def __post_init__(self) -> None:
        if not 0.0 < self.variance <= 1.0 or self.candidates < 1 or self.connectivity < 2:
            raise ValueError("variance must be in (0, 1], candidates >= 1 and connectivity >= 2")


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
        # In float64, so that a template projects to the same float32 bytes alone or in a batch
        # (BLAS blocks float32 sums differently by batch size; erasure checks rely on the bytes).
        x = np.asarray(vectors, dtype=np.float64) - self.mean.astype(np.float64)
        return np.ascontiguousarray(x @ self.basis.astype(np.float64), dtype=np.float32)


class AnnIndex:
    """An HNSW index over Euclidean distance, keyed by the store's integer face keys."""

    def __init__(self, dim: int = 128, params: AnnParams | None = None) -> None:
        self.dim = dim
        self.params = params or AnnParams()
        self.projection: Projection | None = None
        self._graph = self._new(dim)
        self._keys = Rows(np.int64)  # graph position -> key, -1 once removed
        self._whole = Rows(np.float32, dim)  # graph position -> float32 template (projected graphs)
        self._live = 0
        self.removed_since_build = 0

    def _new(self, ndim: int) -> faiss.IndexHNSWFlat:
        graph = faiss.IndexHNSWFlat(ndim, self.params.connectivity)
        graph.hnsw.efConstruction = self.params.expansion_add
        graph.hnsw.efSearch = self.params.expansion_search
        return graph

    @property
    def size(self) -> int:
        return self._live

    @property
    def expansion_search(self) -> int:
        return int(self._graph.hnsw.efSearch)

    @expansion_search.setter
    def expansion_search(self, value: int) -> None:
        self._graph.hnsw.efSearch = int(value)

    def _positions(self, keys: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """Graph positions holding any of ``keys``."""
        return np.flatnonzero(np.isin(self._keys.view, keys))

    def __contains__(self, key: int) -> bool:
        return bool(len(self._positions(np.array([int(key)], dtype=np.int64))))

    def _stored(self, vectors: Vectors) -> Vectors:
        """Templates as the graph holds them: projected (if the index has a projection), float32."""
        x = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if self.projection is not None:
            x = self.projection.apply(x)
        return np.ascontiguousarray(x, dtype=np.float32)

    def stored_forms(self, vector: Vectors) -> list[bytes]:
        """The byte strings this index (and a file saved from it) holds for ``vector``.

        The graph's form (projected, if the index projects) and, beside a projected graph, the
        whole float32 template that re-ranks candidates.
        """
        forms = [self._stored(vector).tobytes()]
        if self.projection is not None:
            forms.append(np.asarray(vector, dtype=np.float32).reshape(self.dim).tobytes())
        return forms

    @classmethod
    def file_holds(cls, path: Path, vector: Vectors) -> bool:
        """Whether the index file at ``path`` holds ``vector`` in any form it stores templates."""
        data = Path(path).read_bytes()
        return any(form in data for form in cls.load(path).stored_forms(vector))

    def add(self, keys: Keys, vectors: Vectors) -> None:
        ikeys = np.asarray(keys, dtype=np.int64).reshape(-1)
        if len(ikeys) == 0:
            return
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ikeys), self.dim)
        # The first add decides the projection.
        if self._keys.n == 0 and self.params.variance < 1.0 and len(vectors) >= MIN_FIT:
            self.projection = Projection.fit(vectors, self.params.variance)
            if self.projection is not None:
                self._graph = self._new(self.projection.basis.shape[1])
        if self._keys.n and ikeys.min() <= self._keys.view.max():
            self.remove(ikeys)  # re-adding a key replaces its template (the store's keys only grow)
        # Parallel insertion of many near-duplicate faces into a small graph can leave a whole
        # identity cluster unreachable (measured with usearch: docs/benchmarks.md, "Search");
        # below SERIAL_INSERT_BELOW faces one thread inserts, which is quick at that size anyway.
        serial = self._live + len(ikeys) < SERIAL_INSERT_BELOW
        with _THREADS:
            before = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1 if serial else max(1, os.cpu_count() or 1))
            try:
                self._graph.add(self._stored(vectors))
            finally:
                faiss.omp_set_num_threads(before)
        self._keys.append(ikeys)
        if self.projection is not None:
            self._whole.append(vectors)
        self._live += len(ikeys)

    def remove(self, keys: Keys) -> None:
        ikeys = np.asarray(keys, dtype=np.int64).reshape(-1)
        if len(ikeys) == 0 or self._live == 0:
            return
        at = self._positions(ikeys)
        if len(at):
            self._keys.view[at] = -1
            if self._whole.n:
                self._whole.view[at] = 0.0  # the graph's copy waits for the rebuild; this one need not
            self._live -= len(at)
            self.removed_since_build += len(at)

    def search(self, probe: Vectors, k: int) -> tuple[Keys, Distances]:
        """Up to ``k`` approximate nearest keys, nearest first, with their exact distances."""
        if self._live == 0 or k <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        q = np.asarray(probe, dtype=np.float32).reshape(self.dim)
        # Projected distances only approximate the order: keep spare candidates for the re-rank.
        pool = k if self.projection is None else k + self.params.candidates
        total = self._keys.n
        want = min(total, pool + (total - self._live))  # removed entries still sit in the graph
        d2, pos = self._graph.search(self._stored(q), want)
        pos = pos[0][pos[0] >= 0]
        keys = self._keys.view[pos]
        live = keys >= 0
        if self.projection is None:  # the graph's distances are exact
            dist = np.sqrt(np.maximum(d2[0][: len(live)][live], 0.0)).astype(np.float32)
            return keys[live][:k], dist[:k]
        pos, keys = pos[live], keys[live]
        dist = np.linalg.norm(self._whole.view[pos] - q, axis=1).astype(np.float32)
        order = np.argsort(dist, kind="stable")[:k]
        return keys[order], dist[order]

    def memory_bytes(self) -> int:
        """Vectors (graph and whole templates), graph links and the key table."""
        hnsw: Any = self._graph.hnsw  # faiss's stubs omit the link table
        links = faiss.vector_to_array(hnsw.neighbors).nbytes + faiss.vector_to_array(hnsw.offsets).nbytes
        return int(self._keys.n * 4 * self._graph.d + self._keys.nbytes() + self._whole.nbytes() + links)

    def save(self, path: Path) -> bool:
        """Write the index atomically to ``path``; False (and nothing written) after removals.

        The file is a small header (JSON settings), the projection, the key table, the whole
        templates (projected graphs) and faiss's own serialisation of the graph.
        """
        if self.removed_since_build:
            return False
        p = self.projection
        header = json.dumps(
            {"dim": self.dim, "dims": 0 if p is None else int(p.basis.shape[1]), "count": self._keys.n}
        ).encode()
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(FILE_MAGIC + struct.pack("<I", len(header)) + header)
            if p is not None:
                fh.write(p.mean.tobytes() + p.basis.tobytes())
            fh.write(self._keys.view.tobytes())
            if p is not None:
                fh.write(self._whole.view.tobytes())
            fh.write(faiss.serialize_index(self._graph).tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return True

    @classmethod
    def load(cls, path: Path, dim: int = 128, params: AnnParams | None = None) -> AnnIndex:
        """Read a saved index; raises ValueError/OSError if the file is unusable.

        The file's projection wins over ``params.variance``, its graph over the graph settings;
        ``params.expansion_search`` and ``params.candidates`` apply.
        """
        data = memoryview(Path(path).read_bytes())
        if bytes(data[:8]) != FILE_MAGIC or len(data) < 12:
            raise ValueError(f"{path} is not a regard index file of this version")
        (hlen,) = struct.unpack("<I", data[8:12])
        try:
            header = json.loads(bytes(data[12 : 12 + hlen]))
            file_dim, dims, count = int(header["dim"]), int(header["dims"]), int(header["count"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} has an unreadable header") from exc
        if file_dim != dim or not 0 <= dims <= dim or count < 0:
            raise ValueError(f"{path} holds {file_dim}-d vectors, expected {dim}-d")
        idx = cls(dim, params)
        at = 12 + hlen
        end = at + 8 * count + (4 * dim * (1 + dims + count) if dims else 0)
        if len(data) <= end:
            raise ValueError(f"{path} is truncated")

        def take(nbytes: int, dtype: type) -> np.ndarray:
            nonlocal at
            out: np.ndarray = np.frombuffer(data[at : at + nbytes], dtype=dtype).copy()
            at += nbytes
            return out

        if dims:
            mean = take(4 * dim, np.float32)
            idx.projection = Projection(mean, take(4 * dim * dims, np.float32).reshape(dim, dims))
        idx._keys = Rows(np.int64, data=take(8 * count, np.int64))
        if dims:
            idx._whole = Rows(np.float32, dim, data=take(4 * dim * count, np.float32).reshape(count, dim))
        graph = faiss.deserialize_index(np.frombuffer(data[at:], dtype=np.uint8))
        if not isinstance(graph, faiss.IndexHNSWFlat) or graph.d != (dims or dim) or graph.ntotal != count:
            raise ValueError(f"{path} holds an unexpected graph")
        graph.hnsw.efSearch = idx.params.expansion_search
        idx._graph, idx._live = graph, int(np.count_nonzero(idx._keys.view >= 0))
        return idx
