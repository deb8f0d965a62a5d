"""Labelled image folders (``manifest.csv`` with a ``path`` column) and their embeddings."""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regard.engine import Engine
from regard.errors import ImageError, InvalidParameter


@dataclass(frozen=True)
class Manifest:
    """The rows of a dataset folder's ``manifest.csv``; ``path`` is relative to the folder."""

    root: Path
    rows: list[dict[str, str]]

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / "manifest.csv"
        if not path.is_file():
            raise InvalidParameter(f"{folder} has no manifest.csv")
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        if rows and "path" not in rows[0]:
            raise InvalidParameter(f"{path} has no 'path' column")
        return cls(folder, rows)

    def column(self, name: str) -> list[str]:
        return [r.get(name, "") for r in self.rows]


@dataclass(frozen=True)
class EmbeddedSet:
    """One template per image (NaN rows where no face was found)."""

    paths: list[str]
    embeddings: np.ndarray  # (n, 128) float32, NaN where ``found`` is False
    found: np.ndarray  # (n,) bool

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, paths=np.array(self.paths), embeddings=self.embeddings, found=self.found)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> EmbeddedSet:
        with np.load(path) as data:
            return cls([str(p) for p in data["paths"]], data["embeddings"], data["found"])


def embed_manifest(
    engine: Engine,
    manifest: Manifest,
    *,
    cache: Path | None = None,
    progress: Callable[[Iterable[dict[str, str]]], Iterable[dict[str, str]]] | None = None,
) -> EmbeddedSet:
    """The largest face of every image in ``manifest``, embedded; cached in ``cache`` if given.

    The cache file name includes the model identity and the detector, so a change of either
    recomputes.
    """
    key = hashlib.sha256(
        "|".join(
            [engine.embedder.identity.key, engine.detector().name, str(engine.settings.min_face_size)]
            + [r["path"] for r in manifest.rows]
        ).encode()
    ).hexdigest()[:16]
    cache_file = cache / f"embeddings-{key}.npz" if cache else None
    if cache_file is not None and cache_file.is_file():
        return EmbeddedSet.load(cache_file)
    n = len(manifest.rows)
    emb = np.full((n, 128), np.nan, dtype=np.float32)
    found = np.zeros(n, dtype=bool)
    rows: Iterable[dict[str, str]] = progress(manifest.rows) if progress else manifest.rows
    for i, row in enumerate(rows):
        try:
            image = engine.load_image(manifest.root / row["path"])
        except ImageError:
            continue
        dets = engine.detect(image, max_faces=1)
        if dets:
            emb[i] = engine.embed(image, dets[:1])[0]
            found[i] = True
    result = EmbeddedSet([r["path"] for r in manifest.rows], emb, found)
    if cache_file is not None:
        result.save(cache_file)
    return result


def held_apart(subject: str, fold: int = 3) -> bool:
    """True for the third of subjects that calibration never sees (a stable hash of the id)."""
    return int(hashlib.sha256(subject.encode()).hexdigest()[:8], 16) % fold == 0
