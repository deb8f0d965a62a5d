"""The approximate index alone: HNSW settings, projection and vector types, against an exact scan.

No database work: the same synthetic face-like templates as ``bench_search.py`` (identities with
the variance spectrum of real dlib descriptors, 5 captures each, probes are new captures) go
into regard's ``AnnIndex`` (faiss HNSW over PCA-projected templates by default); each
search re-ranks its graph's pool of candidates by exact distance to the whole float32 templates
it keeps, and the top 10 are compared with an exact scan.
It also searches 2,000 stored templates for themselves: a template its own search cannot find
is unreachable in the graph. With ``--ivf``
faiss's IVF-Flat is timed too.

    .venv/bin/python bench/bench_ann.py --faces 1000000 --sweep 96,128,160,192,256
    .venv/bin/python bench/bench_ann.py --faces 1000000 --variance 1 --candidates 10

Prints one line per expansion_search value: p50/p99 ms of a single query on one thread and
recall@1/@10, plus the build time and memory per face.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from bench_search import Reference, pct, probes, recall, synthetic
from regard.index.ann import AnnIndex, AnnParams


def measure(name: str, search: Callable[[np.ndarray], list[int]], ref: Reference, qs: np.ndarray) -> None:
    """Latency and recall of ``search``, timed side by side with the exact scan (as bench_search)."""
    lat, e1, e2, got = ref.side_by_side(search, qs)
    r1, r10 = recall(got, [ref.scan(q) for q in qs])
    p50 = pct(lat, 50)
    print(
        f"{name:44s} p50 {p50:7.3f} ms  p99 {pct(lat, 99):7.3f} ms  ({e1 / p50:.1f}x / {e2 / p50:.1f}x "
        f"vs exact 1T {e1:.1f} / 2T {e2:.1f} ms)  recall@1 {r1:.4f}  recall@10 {r10:.4f}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = AnnParams()
    ap.add_argument("--faces", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--connectivity", type=int, default=d.connectivity)
    ap.add_argument("--expansion-add", type=int, default=d.expansion_add)
    ap.add_argument("--variance", type=float, default=d.variance, help="variance share the projection keeps")
    ap.add_argument("--candidates", type=int, default=d.candidates, help="pool re-ranked by exact distance")
    ap.add_argument("--sweep", default="64,96,128,160,192,256")
    ap.add_argument("--ivf", default="", help="faiss IVF-Flat list counts to time too, e.g. 4096")
    ap.add_argument(
        "--load", default="", help="search a file saved by bench_search.py --keep-index instead of building"
    )
    args = ap.parse_args()

    x, centres = synthetic(args.faces)
    qs = probes(centres, args.queries)
    ref = Reference(x)
    params = AnnParams(
        args.connectivity, args.expansion_add, d.expansion_search, args.variance, args.candidates
    )
    start = time.perf_counter()
    offset = 0  # key of row 0
    if args.load:
        index = AnnIndex.load(Path(args.load), params=params)
        offset = 1  # the store numbers its faces from 1
        assert index.size == len(x), f"{args.load} holds {index.size} faces, not {len(x)}"
        print(f"  loaded {args.load} in {time.perf_counter() - start:.0f} s", flush=True)
    else:
        index = AnnIndex(params=params)
        for i in range(0, len(x), 100_000):
            chunk = x[i : i + 100_000]
            index.add(np.arange(i, i + len(chunk), dtype=np.int64), chunk)
            print(f"  {i + len(chunk):,} added, {time.perf_counter() - start:.0f} s", flush=True)
    kept = 128 if index.projection is None else index.projection.basis.shape[1]
    print(
        f"HNSW M={args.connectivity} expansion_add={args.expansion_add}, {kept} of 128 "
        f"components: build {time.perf_counter() - start:.0f} s, "
        f"memory {index.memory_bytes() / len(x):.0f} B/face"
    )

    def hnsw(q: np.ndarray) -> list[int]:
        return (index.search(q, 10)[0] - offset).tolist()  # candidates re-ranked by exact distance

    for ef in (int(v) for v in args.sweep.split(",") if v):
        index.expansion_search = ef
        measure(f"  expansion_search {ef}", hnsw, ref, qs)
    with threadpool_limits(limits=1):
        sample = np.random.default_rng(7).choice(len(x), min(2000, len(x)), replace=False)
        lost = sum(int(k) + offset != index.search(x[k], 1)[0][0] for k in sample)
        print(f"  stored templates their own search missed: {lost} of {len(sample)}")
    for lists in (int(v) for v in args.ivf.split(",") if v):
        import faiss

        start = time.perf_counter()
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(128), 128, lists)
        sample = np.random.default_rng(5).choice(len(x), min(len(x), 40 * lists), replace=False)
        ivf.train(x[sample])
        ivf.add(x)
        print(f"IVF-Flat {lists} lists: train and add {time.perf_counter() - start:.0f} s")
        faiss.omp_set_num_threads(1)
        for nprobe in (16, 32, 64, 128, 256):
            ivf.nprobe = nprobe
            measure(f"  nprobe {nprobe}", lambda q, ivf=ivf: ivf.search(q[None], 10)[1][0].tolist(), ref, qs)


if __name__ == "__main__":
    main()
