"""Evaluation inputs: a labelled folder (``manifest.csv``) or a pairs file, its groups and templates.

A dataset folder holds ``manifest.csv`` with a ``path`` column (relative to the folder) and
any of ``subject``, ``sex``, ``age``, ``race`` or other label columns. Without ``subject`` every
image is taken to be a different person (impostor pairs only). A pairs file is a CSV with
``path_a``, ``path_b`` and ``same`` (1/0) columns; labels then come from a ``manifest.csv``
beside it when there is one.

Templates are computed once per dataset and model and cached as ``.npz`` in the output folder.
Images in which no face is found are *failures to acquire*: they stay in the data card and the
per-group counts, and are left out of pairs.
"""

from __future__ import annotations

import csv
import hashlib
import json
import multiprocessing
import random
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from regard.errors import ImageError, InvalidParameter

#: Age bands (inclusive lower bound, label) used when an ``age`` column holds years.
AGE_BANDS: tuple[tuple[int, str], ...] = (
    (0, "0-12"),
    (13, "13-19"),
    (20, "20-39"),
    (40, "40-59"),
    (60, "60+"),
)
UNKNOWN = "unknown"

#: Acquisition outcomes per image.
OK, NO_FACE, UNREADABLE = "ok", "no_face", "unreadable"


@dataclass(frozen=True)
class Dataset:
    """Images, optional identities and labels, and optionally an explicit pair list."""

    root: Path
    name: str
    paths: list[str]
    subjects: list[str]  # one per image; the path itself when the data has no identities
    has_identities: bool
    labels: dict[str, list[str]]  # column -> one value per image
    pairs: list[tuple[int, int, bool]] | None = None  # explicit (a, b, same) pairs

    def __len__(self) -> int:
        return len(self.paths)

    def group_values(self, spec: str) -> list[str]:
        """One group label per image for a spec such as ``"race"``, ``"age"`` or ``"race+sex"``."""
        parts = [p.strip() for p in spec.split("+") if p.strip()]
        if not parts:
            raise InvalidParameter(f"empty group spec {spec!r}")
        columns = []
        for part in parts:
            if part not in self.labels:
                raise InvalidParameter(
                    f"dataset {self.name} has no column {part!r}; it has {sorted(self.labels) or 'none'}"
                )
            columns.append(_banded(part, self.labels[part]))
        return [" / ".join(vals) for vals in zip(*columns, strict=True)]

    def fingerprint(self) -> str:
        """A hash of the dataset's location and the exact images used."""
        h = hashlib.sha256()
        h.update(str(self.root.resolve()).encode())
        for p in self.paths:
            h.update(b"\0" + p.encode())
        return h.hexdigest()


def _banded(column: str, values: list[str]) -> list[str]:
    """Ages in whole years become :data:`AGE_BANDS`; every other value is kept, blanks are unknown."""
    if column == "age" and values and all(v.strip().isdigit() for v in values if v.strip()):
        out = []
        for v in values:
            if not v.strip():
                out.append(UNKNOWN)
                continue
            years = int(v)
            label = AGE_BANDS[0][1]
            for low, name in AGE_BANDS:
                if years >= low:
                    label = name
            out.append(label)
        return out
    return [v.strip() or UNKNOWN for v in values]


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))
    except OSError as exc:
        raise InvalidParameter(f"cannot read {path}: {exc.strerror}") from exc


def read_dataset(
    location: Path,
    *,
    limit: int | None = None,
    seed: int = 0,
    keep_subject: Callable[[str], bool] | None = None,
) -> Dataset:
    """Read a dataset folder (``manifest.csv``) or a pairs CSV file.

    ``keep_subject`` keeps only the images whose subject it accepts, applied before ``limit``; it
    is called with the value :attr:`Dataset.subjects` holds, so with the image path in a set
    without identities (for example ``lambda s: regard.scoring.calibrate.is_held_apart(name, s)``, the
    samples the shipped scoring parameters never saw). In a pairs file a pair is kept when both
    of its images are.

    ``limit`` keeps about that many images, chosen with ``seed``: whole subjects when the data
    has identities (so genuine pairs survive), single images otherwise, original order kept.
    """
    location = Path(location)
    if location.is_file():
        return _read_pairs(location, limit=limit, seed=seed, keep_subject=keep_subject)
    manifest = location / "manifest.csv"
    if not manifest.is_file():
        raise InvalidParameter(f"{location} is neither a pairs file nor a folder with manifest.csv")
    rows = _read_csv(manifest)
    if not rows or "path" not in rows[0]:
        raise InvalidParameter(f"{manifest} has no rows or no 'path' column")
    has_ids = "subject" in rows[0]
    if keep_subject is not None:
        rows = [r for r in rows if keep_subject(_subject_of(r, has_ids))]
        if not rows:
            raise InvalidParameter(f"no image of {manifest} is among the kept subjects")
    if limit is not None and limit < len(rows):
        rows = _subset(rows, limit, seed, has_ids)
    paths = [r["path"] for r in rows]
    subjects = [_subject_of(r, has_ids) for r in rows]
    label_cols = [c for c in rows[0] if c not in {"path", "subject"}]
    labels = {c: [r.get(c) or "" for r in rows] for c in label_cols}
    return Dataset(location, location.name, paths, subjects, has_ids, labels)


def _subject_of(row: dict[str, str], has_ids: bool) -> str:
    """A manifest row's subject: its ``subject`` column, or its path when it has none."""
    return row["subject"] if has_ids and row["subject"] else row["path"]


def _subset(rows: list[dict[str, str]], limit: int, seed: int, by_subject: bool) -> list[dict[str, str]]:
    rng = random.Random(seed)
    if not by_subject:
        keep = set(rng.sample(range(len(rows)), limit))
        return [r for i, r in enumerate(rows) if i in keep]
    subjects = sorted({r["subject"] for r in rows})
    rng.shuffle(subjects)
    sizes: dict[str, int] = {}
    for r in rows:
        sizes[r["subject"]] = sizes.get(r["subject"], 0) + 1
    chosen: set[str] = set()
    total = 0
    for s in subjects:
        if total >= limit:
            break
        chosen.add(s)
        total += sizes[s]
    return [r for r in rows if r["subject"] in chosen]


def _read_pairs(
    path: Path, *, limit: int | None, seed: int, keep_subject: Callable[[str], bool] | None = None
) -> Dataset:
    rows = _read_csv(path)
    if not rows or not {"path_a", "path_b", "same"} <= set(rows[0]):
        raise InvalidParameter(f"{path} needs the columns path_a, path_b and same")
    root = path.parent
    manifest_rows: dict[str, dict[str, str]] = {}
    if (root / "manifest.csv").is_file():
        manifest_rows = {r["path"]: r for r in _read_csv(root / "manifest.csv") if "path" in r}

    listed = {r[k] for r in rows for k in ("path_a", "path_b")}
    ids = bool(manifest_rows) and all(manifest_rows.get(p, {}).get("subject") for p in listed)
    if keep_subject is not None:

        def kept(p: str) -> bool:
            return keep_subject(manifest_rows[p]["subject"] if ids else p)

        rows = [r for r in rows if kept(r["path_a"]) and kept(r["path_b"])]
        if not rows:
            raise InvalidParameter(f"no pair of {path} has both images among the kept subjects")
    if limit is not None and limit < len(rows):
        rng = random.Random(seed)
        keep = set(rng.sample(range(len(rows)), limit))
        rows = [r for i, r in enumerate(rows) if i in keep]
    index: dict[str, int] = {}
    for r in rows:
        for key in ("path_a", "path_b"):
            index.setdefault(r[key], len(index))
    paths = list(index)
    subjects = [manifest_rows[p]["subject"] if ids else p for p in paths]
    label_cols: list[str] = []
    if manifest_rows:
        first = next(iter(manifest_rows.values()))
        label_cols = [c for c in first if c not in {"path", "subject"}]
    labels = {c: [manifest_rows.get(p, {}).get(c, "") for p in paths] for c in label_cols}
    pairs = [
        (index[r["path_a"]], index[r["path_b"]], r["same"].strip() in {"1", "true", "True"}) for r in rows
    ]
    return Dataset(root, f"{root.name}/{path.name}", paths, subjects, ids, labels, pairs)


# -- templates ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Templates:
    """One template per image (NaN rows where none was acquired) plus acquisition facts."""

    embeddings: np.ndarray  # (n, d) float32
    status: np.ndarray  # (n,) str: ok / no_face / unreadable
    face_height: np.ndarray  # (n,) float, pixels; 0 when no face
    sharpness: np.ndarray  # (n,) float 0-100
    brightness: np.ndarray  # (n,) float 0-100
    seconds: float  # time it took to compute (0 when loaded from the cache)
    cached: bool

    @property
    def acquired(self) -> np.ndarray:
        return np.asarray(self.status == OK)


class TemplateSource:
    """What the evaluation needs from a face engine: identity and one template per image."""

    def __init__(self, engine: object) -> None:
        from regard.face.engine import Engine

        if not isinstance(engine, Engine):
            raise TypeError("TemplateSource needs a regard.face.engine.Engine")
        self.engine = engine

    def identity(self) -> dict[str, str]:
        from regard.face.detect.fallback import describe

        ident = self.engine.model_identity
        return {
            "embedding_model": ident.name,
            "embedding_version": ident.version,
            "embedding_weights_sha256": ident.weights_sha256,
            "preprocessing": ident.preprocessing,
            "model_key": ident.key,
            "embed_backend": self.engine.settings.embed_backend,
            "detector": self.engine.detector().name,
            "detector_version": self.engine.detector().version,
            "min_face_size": str(self.engine.settings.min_face_size),
            "detect_max_side": str(self.engine.settings.detect_max_side),
            "detect_fallback": describe(self.engine.fallback_steps()),
        }

    def one(self, path: Path) -> tuple[str, np.ndarray | None, float, float, float]:
        """Outcome, template, face height (pixels), sharpness and brightness of ``path``'s largest face.

        The face is the one :meth:`regard.face.engine.Engine.probe` picks, as CompareFaces does.
        """
        try:
            image = self.engine.load_image(path)
        except ImageError:
            return UNREADABLE, None, 0.0, 0.0, 0.0
        probe = self.engine.probe(image)
        if probe is None:
            return NO_FACE, None, 0.0, 0.0, 0.0
        face = probe.face
        q = face.analysis.quality
        return OK, face.embedding, float(face.detection.box.height), q.sharpness, q.brightness


_worker: TemplateSource | None = None


def _init_worker(settings: object) -> None:
    global _worker
    from regard.config import Settings
    from regard.face.engine import Engine

    assert isinstance(settings, Settings)
    _worker = TemplateSource(Engine(settings))


def _worker_one(path: str) -> tuple[str, np.ndarray | None, float, float, float]:
    assert _worker is not None
    return _worker.one(Path(path))


Progress = Callable[[Iterable[Any], int], Iterable[Any]]


def cache_prefix(identity: dict[str, str], dataset: Dataset) -> str:
    """File-name prefix shared by every template cache of one model setup and dataset folder.

    ``identity`` says how templates are made (:meth:`TemplateSource.identity`), never how they are
    scored, so runs with another scoring reuse the same templates.
    """
    ident = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]
    root = hashlib.sha256(str(dataset.root.resolve()).encode()).hexdigest()[:8]
    return f"templates-{ident}-{root}"


def load_cached(cache_dir: Path, prefix: str, dataset: Dataset) -> Templates | None:
    """Templates of ``dataset`` from any cache file of the same setup holding all its images.

    A run on a subset (``--limit``, ``--held-apart``) after a full run takes its rows from the
    full run's file.
    """
    wanted = dataset.paths
    for path in sorted(cache_dir.glob(f"{prefix}-*.npz")):
        if path.name.endswith(".tmp.npz"):
            continue
        with np.load(path) as data:
            index = {str(p): i for i, p in enumerate(data["paths"])}
            if not all(p in index for p in wanted):
                continue
            rows = np.array([index[p] for p in wanted], dtype=np.int64)
            return Templates(
                data["embeddings"][rows],
                data["status"].astype(str)[rows],
                data["face_height"][rows],
                data["sharpness"][rows],
                data["brightness"][rows],
                0.0,
                True,
            )
    return None


def compute_templates(
    source: TemplateSource,
    dataset: Dataset,
    cache_dir: Path,
    *,
    workers: int = 1,
    progress: Progress | None = None,
) -> Templates:
    """Templates for every image of ``dataset``, from the cache in ``cache_dir`` when possible.

    With ``workers > 1`` images are processed by that many processes, each with its own engine
    built from the source engine's settings; results keep the dataset's order either way.
    ``progress`` wraps the stream of per-image results (for a progress bar).
    """
    ident = source.identity()
    cached = load_cached(cache_dir, cache_prefix(ident, dataset), dataset)
    if cached is not None:
        return cached
    n = len(dataset)
    files = [str(dataset.root / rel) for rel in dataset.paths]
    start = time.perf_counter()
    if workers > 1 and n > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(source.engine.settings,)
        ) as ex:
            stream: Iterable[Any] = ex.map(_worker_one, files, chunksize=8)
            results = list(progress(stream, n) if progress else stream)
    else:
        stream = (source.one(Path(f)) for f in files)
        results = list(progress(stream, n) if progress else stream)
    seconds = time.perf_counter() - start
    dim = next((r[1].shape[0] for r in results if r[1] is not None), 128)
    emb = np.full((n, dim), np.nan, dtype=np.float32)
    for i, r in enumerate(results):
        if r[1] is not None:
            emb[i] = r[1]
    status = np.array([r[0] for r in results], dtype=str)
    height = np.array([r[2] for r in results], dtype=np.float64)
    sharp = np.array([r[3] for r in results], dtype=np.float64)
    bright = np.array([r[4] for r in results], dtype=np.float64)
    result = Templates(emb, status, height, sharp, bright, seconds, False)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = cache_dir / f"{cache_prefix(ident, dataset)}-{dataset.fingerprint()[:16]}.npz"
    tmp = cache.with_name(cache.stem + ".tmp.npz")
    np.savez(
        tmp,
        paths=np.array(dataset.paths, dtype=str),
        embeddings=emb,
        status=status,
        face_height=height,
        sharpness=sharp,
        brightness=bright,
    )
    tmp.replace(cache)
    return result
