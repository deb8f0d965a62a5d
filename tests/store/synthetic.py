"""Synthetic templates for the store suite (noisy copies around random centres) and checks on them."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np

from regard.index.ann import AnnIndex
from regard.store.base import NewFace
from regard.types import Box


def people(n_people: int, per_person: int, seed: int = 0, spread: float = 0.12) -> np.ndarray:
    """Synthetic templates: ``n_people`` well-separated centres, ``per_person`` noisy copies of each.

    Centres sit about 1.4 apart (impostors far beyond distance 0.6); copies stay within about
    ``spread * 1.4`` of their centre (genuine pairs well under 0.5, similarity > 80).
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_people, 128)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.normal(size=(n_people, per_person, 128)).astype(np.float32)
    noise *= spread / np.sqrt(128)
    out = centres[:, None, :] + noise
    return out.reshape(n_people * per_person, 128).astype(np.float32)


def face_like(n_people: int, per_person: int, seed: int = 0) -> np.ndarray:
    """Templates with real descriptors' steep variance spectrum (variance ~ exp(-i / 19) along
    random orthogonal axes, as PCA of dlib descriptors shows), ``per_person`` captures each;
    impostor pairs sit about 0.9 apart, genuine pairs about 0.4."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(128, 128)))
    scale = np.sqrt(np.exp(-np.arange(128) / 19.0) / np.exp(-np.arange(128) / 19.0).sum())

    def draw(rows: int, total: float) -> np.ndarray:
        return np.asarray((rng.normal(size=(rows, 128)) * scale * np.sqrt(total)) @ basis.T)

    centres = draw(n_people, 0.30)
    out = np.repeat(centres, per_person, axis=0) + draw(n_people * per_person, 0.08)
    return out.astype(np.float32)


def new_faces(vectors: np.ndarray, external: str | None = None, image_id: str | None = None) -> list[NewFace]:
    image = image_id or str(uuid.uuid4())
    return [
        NewFace(
            face_id=str(uuid.uuid4()),
            image_id=image,
            external_image_id=external,
            bounding_box=Box(0.1, 0.2, 0.3, 0.4),
            confidence=99.5,
            embedding=np.asarray(v, dtype=np.float32),
            brightness=60.0,
            sharpness=70.0,
        )
        for v in vectors
    ]


def in_index_files(root: Path, vector: np.ndarray) -> bool:
    """Whether any HNSW index file of the data directory ``root`` holds ``vector`` in a stored form."""
    return any(AnnIndex.file_holds(p, vector) for p in (root / "index").glob("*.hnsw"))
