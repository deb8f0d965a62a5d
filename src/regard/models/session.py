"""onnxruntime sessions configured from :class:`regard.config.Settings` (threads, provider)."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from regard.config import Settings
from regard.errors import InvalidParameter, ModelUnavailable

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def providers_for(choice: str) -> list[str]:
    """Execution providers for a ``Settings.onnx_provider`` value ("auto", "cpu" or "cuda")."""
    available = ort.get_available_providers()
    choice = choice.lower()
    if choice == "cpu":
        return [CPU]
    if choice == "cuda":
        if CUDA not in available:
            raise ModelUnavailable(
                "onnx_provider is 'cuda' but onnxruntime has no CUDA provider: install onnxruntime-gpu"
            )
        return [CUDA, CPU]
    if choice == "auto":
        return [CUDA, CPU] if CUDA in available else [CPU]
    raise InvalidParameter(f"unknown onnx_provider {choice!r}; choose auto, cpu or cuda")


def make_session(path: Path, settings: Settings) -> ort.InferenceSession:
    """A session on ``path`` with ``settings.threads`` intra-op threads (0: onnxruntime's default)."""
    if settings.threads < 0:
        raise InvalidParameter("threads must be 0 (library default) or more")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if settings.threads:
        options.intra_op_num_threads = settings.threads
    options.inter_op_num_threads = 1
    # Idle worker threads sleep instead of spinning: on a small shared machine spinning threads
    # steal the cores the other stages (and other processes) need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=providers_for(settings.onnx_provider))
    except (RuntimeError, ValueError) as exc:  # onnxruntime's load errors (bad or truncated file)
        raise ModelUnavailable(f"onnxruntime cannot load {path}: {exc}") from exc
