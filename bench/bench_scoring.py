"""What fair score normalization costs a 1:N search: normalized vs raw scoring, side by side.

One SQLite collection of synthetic face-like templates (bench_search's generator, moved to sit
around the shipped normalizer's centroids so that faces fall in many clusters) is searched by the
same probes through ``Service.search_faces_by_vector`` with two scorers: the shipped one
(normalized: candidates within a radius widened by the largest half offset, re-scored and
re-ranked) and raw distances read through the pre-normalization table. Blocks of 20 searches
alternate between the two so both see the same machine; it prints p50/p99 per scorer, their
ratio, and how many faces each search fetched from the index.

    .venv/bin/python bench/bench_scoring.py --sizes 10000,100000 --queries 400
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_search import faces_for, pct, probes, synthetic
from regard.face.engine import Engine
from regard.scoring.calibrate import Scorer, default_scorer, raw_table
from regard.service import Service
from regard.store.sqlite import SqliteStore


class CountingStore(SqliteStore):
    """Counts the faces each search fetched from the index."""

    fetched: list[int]

    def nearest(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        hits = super().nearest(*args, **kwargs)
        self.fetched.append(len(hits))
        return hits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--queries", type=int, default=400)
    ap.add_argument("--threshold", type=float, default=80.0, help="FaceMatchThreshold")
    ap.add_argument("--max-faces", type=int, default=80, help="MaxFaces (Rekognition's default: 80)")
    args = ap.parse_args()
    normalized = default_scorer()
    assert normalized.normalizer is not None
    raw = Scorer(raw_table())
    centre = normalized.normalizer.centroids.mean(axis=0)
    engine = Engine()
    print(
        "| faces | scorer | p50 ms | p99 ms | ratio (p50) | faces fetched per search | matches per search |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|")
    for n in (int(s) for s in args.sizes.split(",")):
        x, centres = synthetic(n)
        x = x + centre
        qs = probes(centres, args.queries) + centre
        with tempfile.TemporaryDirectory() as tmp:
            store = CountingStore(Path(tmp))
            store.fetched = []
            from bench_search import MODEL

            store.create_collection("bench", "arn:bench", MODEL, {})
            for i in range(0, n, 5000):
                store.add_faces("bench", faces_for(x[i : i + 5000], i))
            services = {
                "normalized": Service(store, engine, scorer=normalized),
                "raw": Service(store, engine, scorer=raw),
            }
            for s in services.values():  # warm: build the index, touch the pages
                s.search_faces_by_vector(
                    "bench", qs[0], max_faces=args.max_faces, face_match_threshold=args.threshold
                )
            times: dict[str, list[float]] = {k: [] for k in services}
            fetched: dict[str, list[int]] = {k: [] for k in services}
            matches: dict[str, list[int]] = {k: [] for k in services}
            for start in range(0, len(qs), 20):
                for name, svc in services.items():
                    for q in qs[start : start + 20]:
                        store.fetched = []
                        t = time.perf_counter()
                        got = svc.search_faces_by_vector(
                            "bench", q, max_faces=args.max_faces, face_match_threshold=args.threshold
                        )
                        times[name].append((time.perf_counter() - t) * 1000)
                        fetched[name].append(sum(store.fetched))
                        matches[name].append(len(got))
            base = float(np.median(times["raw"]))
            for name in services:
                p50 = float(np.median(times[name]))
                print(
                    f"| {n:,} | {name} | {p50:.2f} | {pct(times[name], 99):.2f} | {p50 / base:.2f} | "
                    f"{np.mean(fetched[name]):.1f} | {np.mean(matches[name]):.2f} |",
                    flush=True,
                )
            store.close()
    # The pairwise part alone: one CompareFaces-style score.
    a, b = qs[0], qs[1]
    for name, scorer in (("normalized", normalized), ("raw", raw)):
        t = time.perf_counter()
        for _ in range(2000):
            scorer.compare(a, b)
        print(f"compare ({name}): {(time.perf_counter() - t) / 2000 * 1e6:.1f} us per pair")


if __name__ == "__main__":
    main()
