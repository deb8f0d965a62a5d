"""Start and stop a live ``regard serve`` subprocess on loopback (used by fixtures, tests and bench)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
            config=Config(retries={"max_attempts": 1, "mode": "standard"}, read_timeout=120),
            **overrides,
        )

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"regard serve exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"regard serve did not become healthy:\n{log.read_text()[-4000:]}")


def spawn_serve(
    data_dir: Path, env: dict[str, str], workers: int = 1
) -> tuple[str, subprocess.Popen[bytes], Path]:
    """Start ``regard serve`` on a free loopback port and wait until /health answers."""
    port = free_port()
    log_path = data_dir / "serve.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [
                str(BIN / "regard"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
                "--workers",
                str(workers),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(endpoint, proc, log_path)
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
