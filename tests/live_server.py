"""Start and stop a live ``regard serve`` subprocess on loopback (used by fixtures, tests and bench)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass
class LiveServer:
    endpoint: str
    access_key_id: str
    secret: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str]

    def client(self, service: str = "rekognition", **overrides: Any) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=overrides.pop("aws_access_key_id", self.access_key_id),
            aws_secret_access_key=overrides.pop("aws_secret_access_key", self.secret),
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=120),
            **overrides,
        )

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out


LISTENING = re.compile(rb"regard: listening on (http://\S+)")


@dataclass(frozen=True)
class S3Server:
    """A moto S3 server with authentication on, and the credentials of two IAM users in it."""

    endpoint: str
    #: ``reader`` may only get objects from the bucket ``photos`` (what regard is given).
    reader: tuple[str, str]
    #: ``uploader`` may do anything in S3 (what the tests use to put photos there).
    uploader: tuple[str, str]
    region: str = "us-east-1"

    def client(self, who: tuple[str, str] | None = None) -> Any:
        import boto3

        key, secret = who or self.uploader
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=key,
            aws_secret_access_key=secret,
        )

    def regard_env(self, who: tuple[str, str] | None = None) -> dict[str, str]:
        """The settings that point ``regard serve`` at this server as ``who`` (default: reader)."""
        key, secret = who or self.reader
        return {
            "REGARD_S3_ENDPOINT_URL": self.endpoint,
            "REGARD_S3_REGION": self.region,
            "REGARD_S3_ACCESS_KEY_ID": key,
            "REGARD_S3_SECRET_ACCESS_KEY": secret,
        }


def _wait_healthy(proc: subprocess.Popen[bytes], log: Path, start: int, timeout: float = 120.0) -> str:
    """Wait for the address the server reports it bound, then until /health answers there."""
    deadline = time.monotonic() + timeout
    endpoint = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"regard serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        if endpoint is None:
            found = LISTENING.search(log.read_bytes()[start:])
            endpoint = found.group(1).decode() if found else None
        if endpoint is not None:
            try:
                with urllib.request.urlopen(endpoint + "/health", timeout=2) as r:
                    if r.status == 200:
                        return endpoint
            except OSError:
                pass
        time.sleep(0.1)
    raise RuntimeError(f"regard serve did not become healthy:\n{log.read_text()[-4000:]}")


def spawn_serve(
    data_dir: Path, env: dict[str, str], workers: int = 1, extra_args: tuple[str, ...] = ()
) -> tuple[str, subprocess.Popen[bytes], Path]:
    """Start ``regard serve --port 0`` (the server binds a free loopback port and reports it, so no
    other process can take the port in between) and wait until /health answers."""
    log_path = data_dir / "serve.log"
    start = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                str(BIN / "regard"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--data-dir",
                str(data_dir),
                "--workers",
                str(workers),
                *extra_args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        endpoint = _wait_healthy(proc, log_path, start)
    except Exception:
        proc.kill()
        proc.wait()
        raise
    return endpoint, proc, log_path


def start_server(data_dir: Path, extra_env: dict[str, str] | None = None, workers: int = 1) -> LiveServer:
    """Create a key in ``data_dir`` and start ``regard serve`` on a free loopback port."""
    env = dict(os.environ)
    env.update(extra_env or {})
    env["REGARD_DATA_DIR"] = str(data_dir)
    created = subprocess.run(
        [
            str(BIN / "regard"),
            "keys",
            "create",
            "--name",
            "tests",
            "--profile",
            "admin",
            "--role",
            "admin",
            "--json",
            "--data-dir",
            str(data_dir),
        ],
        check=True,
        capture_output=True,
        env=env,
    )
    key = json.loads(created.stdout)
    endpoint, proc, log_path = spawn_serve(data_dir, env, workers)
    return LiveServer(endpoint, key["AccessKeyId"], key["SecretAccessKey"], data_dir, log_path, proc, env)


def terminate(process: subprocess.Popen[bytes], timeout: float = 120) -> int:
    """SIGTERM (unless it has exited), wait, kill after ``timeout``; returns the exit status
    (uvicorn re-raises SIGTERM after a clean shutdown: -15)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def stop_server(server: LiveServer) -> int:
    """Stop a server started by :func:`start_server`; its exit status."""
    return terminate(server.process)


def post_json(url: str, method: str, headers: dict[str, str], data: bytes | None) -> tuple[int, Any]:
    """One raw HTTP request; (status, parsed JSON body), for error statuses too."""
    raw = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(raw, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


@dataclass
class KeyedServer:
    """A live ``regard serve`` with several named keys (people with roles and profiles)."""

    endpoint: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    keys: dict[str, tuple[str, str]]

    def client(self, who: str, headers: dict[str, str] | None = None) -> Any:
        """boto3's rekognition client as ``who``, adding ``headers`` to every request before signing."""
        import boto3
        from botocore.config import Config

        akid, secret = self.keys[who]
        client = boto3.client(
            "rekognition",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=akid,
            aws_secret_access_key=secret,
            # total_max_attempts counts the first attempt; botocore's max_attempts counts retries only
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}, read_timeout=300),
        )
        if headers:

            def add(request: Any, **_: Any) -> None:
                for k, v in headers.items():
                    request.headers[k] = v

            client.meta.events.register("before-sign.rekognition.*", add)
        return client

    def signed(self, who: str, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        """A SigV4-signed request as ``who`` (e.g. to the review endpoints); (HTTP status, JSON body)."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        akid, secret = self.keys[who]
        data = json.dumps(body).encode() if body is not None else b""
        req = AWSRequest(method=method, url=self.endpoint + path, data=data)
        SigV4Auth(Credentials(akid, secret), "rekognition", "us-east-1").add_auth(req)
        return post_json(self.endpoint + path, method, dict(req.headers), data if method == "POST" else None)

    def audit(self) -> list[dict[str, Any]]:
        from regard.accountability.audit import AuditLog

        return list(AuditLog(self.data_dir).records())

    def stop(self) -> int:
        return terminate(self.process)


def start_keyed(
    data_dir: Path,
    keys: dict[str, tuple[str, str]],
    env: dict[str, str] | None = None,
    extra_args: tuple[str, ...] = (),
) -> KeyedServer:
    """Create ``keys`` (name -> (role, profile)) in ``data_dir`` and start ``regard serve`` there."""
    from regard.keys import KeyStore

    store = KeyStore(data_dir)
    made = {}
    for name, (role, profile) in keys.items():
        key, secret = store.create(name, role=role, profile=profile)
        made[name] = (key.access_key_id, secret)
    full_env = dict(os.environ, REGARD_DATA_DIR=str(data_dir), **(env or {}))
    endpoint, proc, log_path = spawn_serve(data_dir, full_env, 1, extra_args)
    return KeyedServer(endpoint, data_dir, proc, log_path, made)


class StubS3:
    """A loopback S3 stand-in for one object: HEAD answers at once with ``size`` (default: the
    body's length); GET counts itself and, when ``hold`` is set, waits for :meth:`release`, so a
    request that reads this object stays in flight until the test says so (never by timing)."""

    def __init__(self, body: bytes, *, size: int | None = None, hold: bool = False) -> None:
        self.body = body
        self.size = len(body) if size is None else size
        self.gets = 0
        self.requested = threading.Event()
        self.released = threading.Event()
        if not hold:
            self.released.set()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _headers(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(stub.size))
                self.send_header("ETag", '"0"')
                self.end_headers()

            def do_HEAD(self) -> None:
                self._headers()

            def do_GET(self) -> None:
                stub.gets += 1
                stub.requested.set()
                stub.released.wait(timeout=300)
                try:
                    self._headers()
                    self.wfile.write(stub.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the server that asked is gone (the request was cut)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def env(self) -> dict[str, str]:
        """The settings that point ``regard serve`` at this stub."""
        return {
            "REGARD_S3_ENDPOINT_URL": self.url,
            "REGARD_S3_ACCESS_KEY_ID": "stub",
            "REGARD_S3_SECRET_ACCESS_KEY": "stub",
        }

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()
