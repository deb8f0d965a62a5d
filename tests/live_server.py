"""Start and stop a live ``regard serve`` subprocess on loopback (used by fixtures, tests and bench)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
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


def stop_server(server: LiveServer) -> int:
    """SIGTERM, then wait; returns the exit status (uvicorn re-raises SIGTERM after a clean shutdown: -15)."""
    server.process.send_signal(signal.SIGTERM)
    try:
        return server.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.process.kill()
        return server.process.wait()
