"""Locate packaged model weights (nothing is downloaded) and, later, their converted forms."""

from regard.models.packaged import (
    DLIB_MODELS,
    dlib_model_path,
    file_sha256,
    mtcnn_weights_dir,
)

__all__ = ["DLIB_MODELS", "dlib_model_path", "file_sha256", "mtcnn_weights_dir"]
