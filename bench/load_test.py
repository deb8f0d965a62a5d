"""Bounded loopback load test of the HTTP API.

Starts ``regard serve`` on a free loopback port with a temp data dir (or uses --endpoint
with --key/--secret), then N concurrent boto3 clients mix IndexFaces and
SearchFacesByImage for a fixed time. Afterwards it checks that every face the server
acknowledged is listed (before and after a graceful restart) and that no call got a
5xx, and prints p50/p99 latency, throughput, the server-side operation time per call
(``x-regard-operation-ms``: engine + store) and the rest (protocol, SigV4, JSON, queueing),
next to the in-process engine time for the same image and a sequential no-engine call
(DescribeCollection) that shows the bare API overhead.

    python bench/load_test.py --duration 60 --clients 8
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from live_server import LiveServer, start_server, stop_server  # noqa: E402


def photos() -> dict[str, bytes]:
    spec = importlib.util.spec_from_file_location("regard_tests_conftest", ROOT / "tests" / "conftest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    folder: Path = module._fetch_fr_images()
    return {p.stem: p.read_bytes() for p in sorted(folder.glob("*.jpg"))}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    idx = min(len(ordered) - 1, max(0, round(q / 100.0 * (len(ordered) - 1))))
    return ordered[idx]


class Worker(threading.Thread):
    def __init__(self, index: int, client: Any, images: dict[str, bytes], collection: str, stop_at: float):
        super().__init__(name=f"client-{index}", daemon=True)
        self.index = index
        self.client = client
        self.images = list(images.items())
        self.collection = collection
        self.stop_at = stop_at
        self.samples: list[tuple[str, float, float]] = []  # (operation, latency ms, server op ms)
        self.acknowledged: list[str] = []
        self.server_errors: list[str] = []
        self.client_errors: list[str] = []

    def run(self) -> None:
        from botocore.exceptions import ClientError

        i = self.index
        while time.perf_counter() < self.stop_at:
            name, data = self.images[i % len(self.images)]
            op = "IndexFaces" if i % 2 == 0 else "SearchFacesByImage"
            i += 1
            started = time.perf_counter()
            try:
                if op == "IndexFaces":
                    r = self.client.index_faces(
                        CollectionId=self.collection,
                        Image={"Bytes": data},
                        ExternalImageId=f"{name}-{self.index}-{i}",
                    )
                    self.acknowledged += [f["Face"]["FaceId"] for f in r["FaceRecords"]]
                else:
                    r = self.client.search_faces_by_image(CollectionId=self.collection, Image={"Bytes": data})
            except ClientError as exc:
                status = exc.response["ResponseMetadata"].get("HTTPStatusCode", 0)
                target = self.server_errors if status >= 500 else self.client_errors
                target.append(f"{op}: {exc}")
                continue
            except Exception as exc:  # connection reset, timeout: counted as server failures
                self.server_errors.append(f"{op}: {type(exc).__name__}: {exc}")
                continue
            latency = (time.perf_counter() - started) * 1000.0
            server_ms = float(r["ResponseMetadata"]["HTTPHeaders"].get("x-regard-operation-ms", "nan"))
            self.samples.append((op, latency, server_ms))


def listed_faces(client: Any, collection: str) -> set[str]:
    ids: set[str] = set()
    for page in client.get_paginator("list_faces").paginate(
        CollectionId=collection, PaginationConfig={"PageSize": 1000}
    ):
        ids.update(f["FaceId"] for f in page["Faces"])
    return ids


def engine_reference(images: dict[str, bytes], repeats: int) -> float:
    """Median in-process time (ms) of decode + detect + analyze + embed for the test photos."""
    from regard.face.engine import Engine

    engine = Engine()
    first = next(iter(images.values()))
    engine.faces(engine.load_image(first))  # load models
    times = []
    for _ in range(repeats):
        for data in images.values():
            t = time.perf_counter()
            engine.faces(engine.load_image(data))
            times.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(times)


def bare_api_overhead(server: LiveServer, collection: str, calls: int) -> tuple[float, float]:
    """Sequential DescribeCollection: median and p99 client latency (ms) of a call with no engine work."""
    client = server.client()
    client.describe_collection(CollectionId=collection)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        client.describe_collection(CollectionId=collection)
        times.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(times), pct(times, 99)


def server_side_overhead(server: LiveServer) -> dict[str, tuple[int, float, float]]:
    """Per operation, from the server's request log: calls, p50 and p99 of total_ms - operation_ms."""
    out: dict[str, tuple[int, float, float]] = {}
    records = [r for r in server.log_lines() if r.get("event") == "request" and r.get("status") == 200]
    for op in sorted({str(r["operation"]) for r in records}):
        rest = [float(r["total_ms"]) - float(r["operation_ms"]) for r in records if r["operation"] == op]
        out[op] = (len(rest), pct(rest, 50), pct(rest, 99))
    return out


def pipeline_cost(image: bytes, repeats: int = 50) -> float:
    """Median ms, in-process, of SigV4 verification + JSON parse + model validation of one IndexFaces body."""
    import base64
    import json

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from regard.api.rekognition import shapes, sigv4
    from regard.keys import KeyStore

    keys = KeyStore(Path(tempfile.mkdtemp(prefix="regard-keys-")))
    key, secret = keys.create("bench")
    body = json.dumps({"CollectionId": "c", "Image": {"Bytes": base64.b64encode(image).decode()}}).encode()
    req = AWSRequest(
        method="POST",
        url="http://127.0.0.1:9000/",
        data=body,
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "RekognitionService.IndexFaces",
        },
    )
    SigV4Auth(Credentials(key.access_key_id, secret), "rekognition", "us-east-1").add_auth(req)
    headers = [*req.headers.items(), ("host", "127.0.0.1:9000")]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sigv4.verify(keys, method="POST", path="/", query="", headers=headers, body=body)
        shapes.validate("IndexFaces", json.loads(body))
        times.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes (default 1)")
    args = parser.parse_args()

    images = photos()
    print(f"machine: {os.cpu_count()} CPUs, load average at start {os.getloadavg()[0]:.1f}", flush=True)
    data_dir = Path(tempfile.mkdtemp(prefix="regard-load-"))
    print(f"starting regard serve (data dir {data_dir}, {args.workers} worker(s)) ...", flush=True)
    server = start_server(data_dir, workers=args.workers)
    collection = "load"
    try:
        setup = server.client()
        setup.create_collection(CollectionId=collection)
        clients = [server.client() for _ in range(args.clients)]
        for c in clients:  # open connections and warm the server's models outside the timed window
            c.describe_collection(CollectionId=collection)
        setup.search_faces_by_image(CollectionId=collection, Image={"Bytes": images["obama"]})
        print(
            f"{args.clients} clients, IndexFaces/SearchFacesByImage 50/50, {args.duration:.0f} s ...",
            flush=True,
        )
        started = time.perf_counter()
        stop_at = started + args.duration
        workers = [Worker(i, c, images, collection, stop_at) for i, c in enumerate(clients)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - started
        alive = server.process.poll() is None

        acknowledged = [f for w in workers for f in w.acknowledged]
        present = listed_faces(setup, collection)
        lost = set(acknowledged) - present
        bare_p50, bare_p99 = bare_api_overhead(server, collection, 200)
        overhead = server_side_overhead(server)
    finally:
        code = stop_server(server)
    print(f"server stopped gracefully (exit {code}); restarting on the same data dir ...", flush=True)
    again = start_server(data_dir, workers=1)
    try:
        after_restart = listed_faces(again.client(), collection)
    finally:
        stop_server(again)
    lost_after_restart = set(acknowledged) - after_restart

    samples = [s for w in workers for s in w.samples]
    server_errors = [e for w in workers for e in w.server_errors]
    client_errors = [e for w in workers for e in w.client_errors]
    engine_ms = engine_reference(images, 3)
    pipeline_ms = pipeline_cost(images["obama"])

    print()
    print(f"calls: {len(samples)} ok, {len(server_errors)} 5xx/transport, {len(client_errors)} 4xx", end="")
    print(f" in {elapsed:.1f} s; server process alive throughout: {alive}")
    print(f"throughput: {len(samples) / elapsed:.2f} calls/s")
    print(f"acknowledged faces: {len(acknowledged)}; lost: {len(lost)}", end="")
    print(f"; lost after a graceful restart: {len(lost_after_restart)}")
    header = f"{'operation':<20}{'calls':>7}{'p50 ms':>10}{'p99 ms':>10}{'server op p50':>15}{'rest p50':>10}"
    print(header)
    for op in ("IndexFaces", "SearchFacesByImage"):
        lat = [s[1] for s in samples if s[0] == op]
        srv = [s[2] for s in samples if s[0] == op]
        rest = [s[1] - s[2] for s in samples if s[0] == op]
        print(
            f"{op:<20}{len(lat):>7}{pct(lat, 50):>10.1f}{pct(lat, 99):>10.1f}"
            f"{pct(srv, 50):>15.1f}{pct(rest, 50):>10.1f}"
        )
    print()
    print(f"in-process engine (decode+detect+analyze+embed), 1 call at a time: {engine_ms:.1f} ms")
    print(f"bare API call (DescribeCollection, sequential): p50 {bare_p50:.2f} ms, p99 {bare_p99:.2f} ms")
    print(
        f"SigV4 + JSON + validation of one {len(images['obama'])} B IndexFaces body, in-process: "
        f"{pipeline_ms:.2f} ms"
    )
    print("server-side API overhead (request log: total_ms - operation_ms, includes queueing):")
    for op, (n, p50, p99) in overhead.items():
        print(f"  {op:<20}{n:>6} calls  p50 {p50:7.2f} ms  p99 {p99:7.2f} ms")
    all_ops = [s[1] for s in samples]
    if all_ops:
        print(f"ratio load p50 / engine: {pct(all_ops, 50) / engine_ms:.2f}x")
    for e in server_errors[:5]:
        print("5xx:", e)
    for e in client_errors[:5]:
        print("4xx:", e)
    ok = alive and not server_errors and not lost and not lost_after_restart
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    print("RESULT:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
