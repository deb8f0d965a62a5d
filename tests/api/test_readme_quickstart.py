"""Issue 19, items 12 and 13: the README's quick start runs as written.

The blocks marked ``<!-- quickstart -->`` are taken from README.md and run in order in one bash
session, in a clean temporary folder: bash blocks as they are, each Python block saved to a file
and run with ``python`` at its place. Two things differ from a reader's machine, neither in the
blocks: the port (8080 may be taken here, so a free one replaces it) and where pip looks first for
the ``face_recognition`` sdist (the copy the test suite already fetched).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from regard.config import Settings
from regard.scoring.versions import FACE_MODEL_VERSIONS

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BLOCK = re.compile(r"<!-- quickstart -->\n```(bash|python)\n(.*?)```", re.S)

pytestmark = pytest.mark.slow


def quickstart_blocks() -> list[tuple[str, str]]:
    return [(m[1], m[2]) for m in BLOCK.finditer((ROOT / "README.md").read_text(encoding="utf-8"))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_the_quick_start_blocks_are_marked() -> None:
    kinds = [kind for kind, _ in quickstart_blocks()]
    assert kinds == ["bash", "bash", "python", "bash"]
    text = "".join(body for _, body in quickstart_blocks())
    for needed in ("export REGARD_DATA_DIR=./data", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID", "x-regard-"):
        assert needed in text


def test_the_readme_quick_start_runs_as_written(tmp_path: Path, fr_images: Path) -> None:
    if not (BIN / "aws").exists():
        pytest.skip("the awscli package is not installed in this environment")
    port = str(free_port())
    script = ["set -eo pipefail"]
    for i, (kind, body) in enumerate(quickstart_blocks()):
        body = body.replace("8080", port)
        if kind == "python":
            (tmp_path / f"quickstart_{i}.py").write_text(body)
            script.append(f"python quickstart_{i}.py")
        else:
            script.append(body)
    # The reader's environment, less anything of regard's or the AWS CLI's that the quick start sets.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "REGARD_", "X_REGARD_"))}
    env["PATH"] = f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env["REGARD_CACHE_DIR"] = str(Settings.from_env().cache_dir)  # converted models: reused, not remade
    env["PIP_FIND_LINKS"] = f"{fr_images.parent / 'sdist'} {env.get('PIP_FIND_LINKS', '')}".strip()
    process = subprocess.Popen(
        ["bash", "-c", "\n".join(script)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=600)
    finally:
        # whatever the quick start left running in its session (its server, should a block fail)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == 0, err[-4000:]
    assert re.search(r"similarity \d+\.\d/100", out)  # regard compare
    shipped = max(FACE_MODEL_VERSIONS.values(), key=float)  # what regard's own parameters are
    assert "indexed" in out and f"model {shipped}" in out  # boto3 IndexFaces
    assert re.search(r"^similarity 9\d\.\d+", out, re.M)  # boto3 CompareFaces with the verification key
    assert "the verification profile does not allow CreateCollection" in out
    assert "regard keys create --name NAME --profile" in out  # the AccessDenied says what would allow it
    assert '"ExternalImageId": "biden"' in out  # the AWS CLI's IndexFaces
    assert '"NextToken"' in out  # the AWS CLI paginated list-faces
    assert "audit log OK" in out
    assert err.count("regard: using embedded store in data") >= 3  # keys, keys, audit verify
    assert (tmp_path / "biden-boxes.png").is_file() and (tmp_path / "data").is_dir()
