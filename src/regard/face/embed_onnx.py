"""dlib's ResNet descriptor run by onnxruntime: the same model, more than ten times faster.

The graph is converted from the packaged dlib weights (:mod:`regard.models.convert_dlib`) and
cached; it returns the same descriptors as :class:`regard.face.embed.DlibEmbedder` (cosine >= 0.9999),
so the two backends share one :class:`~regard.types.ModelIdentity` and templates stay comparable.
"""

from __future__ import annotations

import numpy as np

from regard.config import Settings
from regard.errors import InvalidParameter
from regard.face.embed import EMBEDDING_DIM, resnet_identity
from regard.models.convert_dlib import resnet_onnx_path
from regard.models.session import make_session
from regard.types import Embeddings

CHIP_SIZE = 150
#: Chips per onnxruntime call; bounds memory while keeping the matrix products large.
BATCH = 32


class OnnxEmbedder:
    """Implements :class:`regard.face.embed.Embedder` with onnxruntime (CPU, or CUDA when available)."""

    def __init__(self, settings: Settings | None = None, *, batch_size: int = BATCH) -> None:
        self.settings = settings or Settings.from_env()
        if batch_size < 1:
            raise InvalidParameter("batch_size must be at least 1")
        self.batch_size = batch_size
        self.path = resnet_onnx_path(self.settings.cache_dir)
        self._session = make_session(self.path, self.settings)
        self.providers: list[str] = list(self._session.get_providers())
        self.identity = resnet_identity()

    def embed_chips(self, chips: np.ndarray) -> Embeddings:
        if len(chips) == 0:
            return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
        batch = np.ascontiguousarray(chips, dtype=np.uint8)
        if batch.ndim != 4 or batch.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise InvalidParameter(f"chips must be N x {CHIP_SIZE} x {CHIP_SIZE} x 3, got {batch.shape}")
        parts = [
            self._session.run(["descriptors"], {"chips": batch[i : i + self.batch_size]})[0]
            for i in range(0, len(batch), self.batch_size)
        ]
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)
