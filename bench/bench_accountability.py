"""What accountability costs per request: the guard (policy + fsync'ed audit record) around an
operation, side by side with the same operation called directly.

The operation is SearchFaces by FaceId on a collection of synthetic templates (no image
decoding, so the guard's share is as large as it gets; an operation with an image costs
100+ ms of engine time, next to which the guard's few milliseconds vanish). Also times
``AuditLog.append`` alone and ``AuditLog.verify`` over the records written.

    .venv/bin/python bench/bench_accountability.py --faces 10000 --calls 300
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from regard.accountability.audit import AuditLog
from regard.accountability.guard import Caller, Guard, RequestInfo
from regard.api.rekognition import operations
from regard.api.rekognition.operations import OPERATIONS, Context
from regard.api.rekognition.s3 import S3Images
from regard.config import Settings
from regard.face.engine import Engine
from regard.service import Service
from regard.store.base import NewFace
from regard.types import Box

ADMIN = Caller("RGKBENCH000000000001", "bench", "admin", "admin")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=int, default=10000)
    ap.add_argument("--calls", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        engine = Engine()
        service = Service.open(root, engine=engine)
        service.create_collection("bench")
        rng = np.random.default_rng(0)
        vectors = (rng.standard_normal((args.faces, 128)) * 0.09).astype(np.float32)
        faces = [
            NewFace(str(uuid.uuid4()), str(uuid.uuid4()), None, Box(0.1, 0.1, 0.5, 0.5), 99.0, v)
            for v in vectors
        ]
        for start in range(0, len(faces), 5000):
            service.add_templates("bench", faces[start : start + 5000])
        guard = Guard(root, service_factory=lambda: service)
        ctx = Context(
            engine=engine, s3=S3Images(Settings.from_env(data_dir=root)), service_factory=lambda: service
        )
        fn = OPERATIONS["SearchFaces"]
        probes = [faces[i % len(faces)].face_id for i in range(args.calls)]

        def params(fid: str) -> dict[str, object]:
            return {"CollectionId": "bench", "FaceId": fid, "MaxFaces": 10}

        for fid in probes[:20]:  # warm caches and the index
            fn(ctx, params(fid))
        direct, guarded = [], []
        for fid in probes:  # interleaved, so both see the same machine load
            t = time.perf_counter()
            fn(ctx, params(fid))
            direct.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            out = operations.run(guard, fn, params(fid), ADMIN, RequestInfo(str(uuid.uuid4())), ctx)
            operations.respond(fn, out, params(fid))  # rendered after the guard, as the API does
            guarded.append((time.perf_counter() - t) * 1000)

        log = AuditLog(root / "bare")
        appends = []
        for i in range(args.calls):
            t = time.perf_counter()
            log.append({"operation": "SearchFaces", "request_id": str(i), "results": {"match_count": 3}})
            appends.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        result = guard.audit.verify()
        verify_s = time.perf_counter() - t
        assert result.ok
        service.close()

    print(f"SearchFaces by FaceId, {args.faces} faces, {args.calls} calls (ms)")
    print(f"{'':24}{'p50':>9}{'p99':>9}")
    print(f"{'direct':24}{statistics.median(direct):9.3f}{pct(direct, 0.99):9.3f}")
    print(f"{'guarded (policy+audit)':24}{statistics.median(guarded):9.3f}{pct(guarded, 0.99):9.3f}")
    print(f"{'guard overhead':24}{statistics.median(guarded) - statistics.median(direct):9.3f}")
    print(f"{'ratio guarded/direct':24}{statistics.median(guarded) / statistics.median(direct):9.2f}")
    print(f"{'audit append alone':24}{statistics.median(appends):9.3f}{pct(appends, 0.99):9.3f}")
    print(
        f"verify: {result.records} records in {verify_s * 1000:.1f} ms "
        f"({result.records / verify_s:,.0f} records/s)"
    )


if __name__ == "__main__":
    main()
