"""Turn comparison scores into calibrated similarities and false-match rates.

A pair's *score* is the Euclidean distance between its two dlib ResNet descriptors, shifted by
the fair score normalizer (``regard.scoring.normalize``) so that one score means one false-match rate
whoever the faces belong to. The shipped table (``data/calibration.json``) lists, for a ladder of
scores, the false-match rate (share of impostor pairs at or below that score) and false non-match
rate (share of genuine pairs above it) measured on a pooled, diverse set of photos;
``regard calibrate`` re-makes the normalizer and the table on any folders with a ``manifest.csv``.
A :class:`Scorer` applies both.

The similarity is defined from the false-match rate so that a threshold has a known
meaning: ``similarity = -20 * log10(FMR)``, clipped to 0-100. Every 20 points is a
tenfold drop in false matches: 60 means FMR 1e-3, 80 (Rekognition's default
threshold) means FMR 1e-4, 100 means FMR 1e-5 or lower. Between table rows the
log-FMR is interpolated linearly in distance; beyond the last measured row it is
extrapolated along the fitted tail slope stored in the table.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from regard.errors import InvalidParameter, ModelUnavailable, ScoringMismatch
from regard.scoring.normalize import FitOptions, ScoreNormalizer, fit_normalizer
from regard.types import Comparison

SIMILARITY_PER_DECADE = 20.0
FMR_FLOOR = 10 ** (-100.0 / SIMILARITY_PER_DECADE)  # similarity 100


def similarity_from_fmr(fmr: float) -> float:
    """The similarity (0-100) that stands for a false-match rate."""
    fmr = min(max(fmr, FMR_FLOOR), 1.0)
    return min(100.0, max(0.0, -SIMILARITY_PER_DECADE * math.log10(fmr)))


def fmr_from_similarity(similarity: float) -> float:
    """The false-match rate a similarity threshold stands for."""
    s = min(max(similarity, 0.0), 100.0)
    return float(10 ** (-s / SIMILARITY_PER_DECADE))


@dataclass(frozen=True)
class CalibrationTable:
    """Measured distance -> FMR/FNMR rows plus the tail fit used to extrapolate."""

    version: str
    model: str
    dataset: str
    distances: np.ndarray  # increasing
    fmr: np.ndarray  # non-decreasing with distance
    fnmr: np.ndarray  # non-increasing with distance
    tail_slope: float  # d log10(FMR) / d distance below the smallest measured FMR
    tail_anchor: tuple[float, float]  # (distance, log10 FMR) where extrapolation starts
    counts: dict[str, int]
    normalizer: str | None = None  # sha256 of the normalizer whose scores it maps; None: raw distances
    sha256: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CalibrationTable:
        rows = data["rows"]
        return cls(
            version=str(data["version"]),
            model=str(data["model"]),
            dataset=str(data["dataset"]),
            distances=np.array([r["distance"] for r in rows], dtype=np.float64),
            fmr=np.array([r["fmr"] for r in rows], dtype=np.float64),
            fnmr=np.array([r["fnmr"] for r in rows], dtype=np.float64),
            tail_slope=float(data["tail"]["slope"]),
            tail_anchor=(float(data["tail"]["distance"]), float(data["tail"]["log10_fmr"])),
            counts={k: int(v) for k, v in data["counts"].items()},
            normalizer=data.get("normalizer"),
            sha256=hashlib.sha256(
                json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
            ).hexdigest(),
        )

    @classmethod
    def load(cls, path: Path | None = None) -> CalibrationTable:
        if path is None:
            text = resources.files("regard").joinpath("data/calibration.json").read_text()
        else:
            text = path.read_text()
        return cls.from_dict(json.loads(text))

    def fmr_at(self, distance: float) -> float:
        """Estimated false-match rate of a pair at ``distance`` (or of a threshold there)."""
        anchor_d, anchor_log = self.tail_anchor
        if distance <= anchor_d:
            log_fmr = anchor_log + self.tail_slope * (distance - anchor_d)
            return float(max(10**log_fmr, FMR_FLOOR * 1e-3))
        measured = self.distances >= anchor_d
        d = self.distances[measured]
        logs = np.log10(np.maximum(self.fmr[measured], 1e-300))
        if distance >= d[-1]:
            return float(self.fmr[-1])
        return float(10 ** np.interp(distance, d, logs))

    def fnmr_at(self, distance: float) -> float:
        """Estimated false non-match rate of a threshold at ``distance``."""
        return float(np.interp(distance, self.distances, self.fnmr))

    def similarity(self, distance: float) -> float:
        return similarity_from_fmr(self.fmr_at(distance))

    def distance_for_fmr(self, fmr: float) -> float:
        """The largest distance threshold whose estimated FMR is at most ``fmr``."""
        target = math.log10(min(max(fmr, 1e-300), 1.0))
        anchor_d, anchor_log = self.tail_anchor
        if target <= anchor_log:
            return anchor_d + (target - anchor_log) / self.tail_slope
        measured = self.distances >= anchor_d
        d = self.distances[measured]
        logs = np.log10(np.maximum(self.fmr[measured], 1e-300))
        return float(np.interp(target, logs, d))

    def distance_for_similarity(self, similarity: float) -> float:
        return self.distance_for_fmr(fmr_from_similarity(similarity))


@cache
def default_table() -> CalibrationTable:
    """The table shipped with regard."""
    return CalibrationTable.load()


@cache
def raw_table() -> CalibrationTable:
    """The table of regard before 0.2: raw distances, fitted on celeba_dev alone (for comparisons)."""
    return CalibrationTable.load(Path(str(resources.files("regard").joinpath("data/calibration-raw.json"))))


@dataclass(frozen=True)
class Scorer:
    """Templates -> score -> similarity and FMR: the fair score normalizer and the calibration table.

    ``score = distance - half(a) - half(b)``, where ``half`` is a template's half offset from the
    normalizer (0 without one: raw distances). Every place regard turns templates into a
    similarity goes through one Scorer, so a threshold means the same everywhere.
    """

    table: CalibrationTable
    normalizer: ScoreNormalizer | None = None

    def __post_init__(self) -> None:
        want = self.normalizer.sha256 if self.normalizer is not None else None
        if self.table.normalizer != want:
            raise ScoringMismatch(
                f"calibration table {self.table.version!r} maps scores of normalizer "
                f"{(self.table.normalizer or 'none (raw distances)')[:12]}, not of "
                f"{(want or 'none (raw distances)')[:12]}; re-make both with 'regard calibrate'"
            )
        if self.normalizer is not None and self.normalizer.model != self.table.model:
            raise ScoringMismatch(
                f"normalizer fitted for {self.normalizer.model}, calibration table for {self.table.model}"
            )

    @property
    def normalized(self) -> bool:
        return self.normalizer is not None

    @property
    def key(self) -> str:
        """Short identity of the scoring parameters (joins the model identity in reports and audits)."""
        parts = [self.table.sha256, self.normalizer.sha256 if self.normalizer else "raw"]
        return hashlib.sha256("/".join(parts).encode()).hexdigest()[:12]

    def identity(self) -> dict[str, str]:
        """What a report or audit record cites: versions and hashes of both parameter files."""
        return {
            "scoring": self.key,
            "normalizer": self.normalizer.version if self.normalizer else "none (raw distances)",
            "normalizer_sha256": self.normalizer.sha256 if self.normalizer else "",
            "calibration_table": self.table.version,
            "calibration_sha256": self.table.sha256,
        }

    def check_model(self, model_key: str) -> None:
        """Refuse to score templates of a model these parameters were not made for."""
        if self.normalizer is not None:
            self.normalizer.check_model(model_key)
        elif self.table.model != model_key:
            raise ScoringMismatch(
                f"calibration table {self.table.version!r} was made for {self.table.model}; "
                f"these templates come from {model_key}"
            )

    def check_templates(self, preprocessing: str) -> None:
        """Refuse templates made another way (e.g. without the flip) than the normalizer's pool."""
        if self.normalizer is None:
            return
        made = self.normalizer.provenance.get("template_identity", {}).get("preprocessing")
        if made is not None and made != preprocessing:
            raise ScoringMismatch(
                f"score normalizer {self.normalizer.version!r} was fitted on templates made with "
                f"{made!r}; this engine makes {preprocessing!r} (REGARD_EMBED_FLIP?). Re-make the "
                "parameters with 'regard calibrate', or score raw distances."
            )

    def half_offsets(self, templates: np.ndarray) -> np.ndarray:
        """Each template's share of the shift (zeros without a normalizer)."""
        t = np.atleast_2d(np.asarray(templates, dtype=np.float32))
        if self.normalizer is None:
            return np.zeros(len(t), dtype=np.float64)
        return self.normalizer.half_offsets(t)

    def half_offset(self, template: np.ndarray) -> float:
        return float(self.half_offsets(np.asarray(template).reshape(1, -1))[0])

    @property
    def max_half_offset(self) -> float:
        """The largest half offset a template can have (0 without a normalizer)."""
        return 0.0 if self.normalizer is None else self.normalizer.half_offset_range[1]

    def scores(self, probe: np.ndarray, gallery: np.ndarray) -> np.ndarray:
        """Scores of one probe against each gallery row."""
        g = np.atleast_2d(np.asarray(gallery, dtype=np.float32))
        if len(g) == 0:
            return np.zeros(0, dtype=np.float64)
        d = distances(probe, g).astype(np.float64)
        result: np.ndarray = d - self.half_offset(probe) - self.half_offsets(g)
        return result

    def compare(self, a: np.ndarray, b: np.ndarray) -> Comparison:
        distance = float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
        halves = self.half_offsets(np.stack([np.ravel(a), np.ravel(b)]))  # one centroid lookup for both
        score = distance - float(halves[0]) - float(halves[1])
        fmr = self.table.fmr_at(score)
        return Comparison(distance=distance, similarity=similarity_from_fmr(fmr), fmr=fmr, score=score)

    def similarity(self, score: float) -> float:
        return self.table.similarity(score)

    def fmr_at(self, score: float) -> float:
        return self.table.fmr_at(score)

    def score_for_similarity(self, similarity: float) -> float:
        """The largest score whose similarity is still ``similarity``."""
        return self.table.distance_for_similarity(similarity)

    def score_for_fmr(self, fmr: float) -> float:
        return self.table.distance_for_fmr(fmr)


@cache
def default_scorer() -> Scorer:
    """regard's deployed scoring: the shipped normalizer and the table fitted on its scores."""
    return load_scorer(Path(str(resources.files("regard").joinpath("data"))))


def load_scorer(folder: Path) -> Scorer:
    """The scoring parameters ``regard calibrate`` wrote to ``folder``.

    A missing folder or table, or a file that is not valid parameters, is a
    :class:`~regard.errors.ModelUnavailable` naming the path (a fault of the deployment, not of
    a request).
    """
    folder = Path(folder)
    table_path = folder / "calibration.json"
    norm_path = folder / "normalizer.json"
    if not table_path.is_file():
        raise ModelUnavailable(f"{folder} holds no calibration.json (make one with 'regard calibrate')")
    try:
        table = CalibrationTable.load(table_path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, InvalidParameter) as exc:
        raise ModelUnavailable(f"{table_path} is not a calibration table: {exc!r}") from exc
    normalizer = None
    if norm_path.is_file():
        try:
            normalizer = ScoreNormalizer.load(norm_path)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, InvalidParameter) as exc:
            raise ModelUnavailable(f"{norm_path} is not a score normalizer: {exc!r}") from exc
    return Scorer(table, normalizer)


def raw_scorer(table: CalibrationTable) -> Scorer:
    """A scorer on raw distances (no normalizer), for tables made that way."""
    return Scorer(table, None)


def distances(probe: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Euclidean distances from one probe vector to each gallery row."""
    diff = np.asarray(gallery, np.float32) - np.asarray(probe, np.float32)[None, :]
    result: np.ndarray = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return result


# -- building a table from labelled data ---------------------------------------------------------


def pair_blocks(
    embeddings: np.ndarray, half: np.ndarray | None = None, block: int = 1024
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every pair ``i < j`` of rows, a block of rows at a time: ``(i, j, score)``.

    The score is the Euclidean distance, minus both rows' half offsets when ``half`` is given.
    Computed in the dtype of ``embeddings``.
    """
    emb = np.asarray(embeddings)
    n = len(emb)
    sq = np.einsum("ij,ij->i", emb, emb)
    for start in range(0, n, block):
        stop = min(n, start + block)
        d2 = sq[start:stop, None] + sq[None, start:] - 2.0 * (emb[start:stop] @ emb[start:].T)
        rows, cols = np.nonzero(np.arange(start, n)[None, :] > np.arange(start, stop)[:, None])
        i, j = rows + start, cols + start
        score = np.sqrt(np.maximum(d2[rows, cols], 0.0))
        yield i, j, score if half is None else score - half[i] - half[j]


def pair_distances(
    embeddings: np.ndarray, subjects: np.ndarray, block: int = 1024, half: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """All genuine and impostor distances among ``embeddings`` (one row per image).

    With ``half`` (each row's half offset) they are normalized scores instead.
    """
    subj = np.asarray(subjects)
    genuine: list[np.ndarray] = []
    impostor: list[np.ndarray] = []
    for i, j, score in pair_blocks(np.asarray(embeddings, dtype=np.float32), half, block):
        same = subj[i] == subj[j]
        genuine.append(score[same])
        impostor.append(score[~same])
    return np.concatenate(genuine), np.concatenate(impostor)


def build_table(
    genuine: np.ndarray,
    impostor: np.ndarray,
    *,
    model: str,
    dataset: str,
    version: str,
    min_count: int = 10,
    impostor_weights: np.ndarray | None = None,
    normalizer: str | None = None,
) -> dict[str, Any]:
    """A calibration table (as written to ``calibration.json``) from genuine and impostor scores.

    Rows are placed at the impostor-score quantiles for FMR 1, 0.5, 0.2, 0.1, ... down to
    the smallest FMR supported by ``min_count`` impostor pairs, plus a regular score grid.
    Below that, log10(FMR) is extrapolated linearly in score with the slope fitted on the
    measured rows between FMR 1e-2 and the smallest supported FMR.

    ``impostor_weights`` weight the impostor pairs (in a pool, so that every image's comparisons
    weigh the same); ``normalizer`` is the sha256 of the normalizer that made the scores.
    """
    g = np.sort(np.asarray(genuine, dtype=np.float64))
    imp_raw = np.asarray(impostor, dtype=np.float64)
    if len(imp_raw) < 100 or len(g) < 10:
        raise InvalidParameter(
            f"too few pairs to calibrate: {len(g)} genuine and {len(imp_raw)} impostor "
            "(need >= 10 genuine and >= 100 impostor)"
        )
    order = np.argsort(imp_raw, kind="stable")
    imp = imp_raw[order]
    w = np.ones(len(imp)) if impostor_weights is None else np.asarray(impostor_weights, np.float64)[order]
    if len(w) != len(imp) or not np.all(w > 0):
        raise InvalidParameter("impostor_weights must be positive, one per impostor pair")
    cum = np.cumsum(w) / w.sum()  # FMR at (and including) each sorted impostor score

    def fmr_at(d: float) -> float:
        i = int(np.searchsorted(imp, d, side="right"))
        return float(cum[i - 1]) if i > 0 else 0.0

    anchor = float(imp[min_count - 1])
    anchor_fmr = fmr_at(anchor)
    ladder = [f * 10.0**-e for e in range(0, 12) for f in (1.0, 0.5, 0.2)]
    targets = [t for t in ladder if t >= anchor_fmr]
    dists = {float(imp[min(len(imp) - 1, int(np.searchsorted(cum, t)))]) for t in targets}
    dists |= {anchor}
    lowest = min(0.0, math.floor(min(float(g[0]), float(imp[0])) / 0.05) * 0.05 - 0.05)  # scores may be < 0
    dists |= {round(x, 3) for x in np.arange(lowest, float(imp[-1]) + 0.05, 0.05)}
    rows = []
    for d in sorted(dists):
        fnmr = float(1.0 - np.searchsorted(g, d, side="right") / len(g))
        rows.append({"distance": round(d, 6), "fmr": fmr_at(d), "fnmr": fnmr})
    fit = [r for r in rows if anchor <= r["distance"] and anchor_fmr <= r["fmr"] <= 1e-2]
    if len(fit) >= 2:
        xs = np.array([r["distance"] for r in fit])
        ys = np.log10([r["fmr"] for r in fit])
        slope = float(np.polyfit(xs, ys, 1)[0])
    else:
        slope = 0.0
    if not slope > 0:
        slope = 20.0
    return {
        "version": version,
        "model": model,
        "dataset": dataset,
        "normalizer": normalizer,
        "similarity": "similarity = -20 * log10(FMR), clipped to 0-100",
        "counts": {"genuine": len(g), "impostor": len(imp)},
        "tail": {"distance": anchor, "log10_fmr": math.log10(anchor_fmr), "slope": slope},
        "rows": rows,
    }


@dataclass(frozen=True)
class Part:
    """One labelled set of a calibration pool: templates of acquired images and their subjects."""

    name: str
    templates: np.ndarray  # (n, d)
    subjects: np.ndarray  # (n,) str; the image path where every image is a different person


def fit_scoring(
    parts: list[Part],
    *,
    model: str,
    version: str,
    options: FitOptions | None = None,
    normalize: bool = True,
    provenance: dict[str, Any] | None = None,
    normalizer: ScoreNormalizer | None = None,
) -> tuple[ScoreNormalizer | None, CalibrationTable, dict[str, Any]]:
    """Fit the normalizer (unless ``normalize`` is off) and a calibration table on its scores.

    Pairs are formed within each part only. In the table, each image's impostor comparisons
    carry equal total weight (as in the normalizer), so FMR is the mean over images of the
    share of impostors each one matches, whatever the size of the set it came from. (Weighing
    every *set* alike instead was tried: a pool's smallest set then decides the table's tail, one
    of its impostor pairs moving the FMR by 3e-3; see docs/calibration.md.)
    A ``normalizer`` given is used as it is (only the table is fitted).
    Returns the normalizer, the table and the table as written to ``calibration.json``.
    """
    parts = [p for p in parts if len(p.templates)]
    if not parts:
        raise InvalidParameter("no templates to calibrate on")
    names = [p.name for p in parts]
    if len(set(names)) != len(names):
        raise InvalidParameter(f"two datasets of the pool share a name ({sorted(names)}): rename one folder")
    emb = np.concatenate([np.asarray(p.templates, np.float32) for p in parts])
    subj = np.concatenate([np.asarray(p.subjects).astype(str) for p in parts])
    dom = np.concatenate([np.full(len(p.templates), p.name) for p in parts])
    prov = {
        "datasets": {p.name: {"images": len(p.templates), "subjects": len(set(p.subjects))} for p in parts}
    }
    prov.update(provenance or {})
    if normalizer is None and normalize:
        normalizer = fit_normalizer(
            emb, subj, dom, model=model, version=version, options=options, provenance=prov
        )
    half = normalizer.half_offsets(emb) if normalizer is not None else np.zeros(len(emb))
    genuine: list[np.ndarray] = []
    impostor: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for p in parts:
        sel = dom == p.name
        g, imp, w = _scored_pairs(emb[sel], subj[sel], half[sel])
        genuine.append(g)
        impostor.append(imp)
        weights.append(w)
    data = build_table(
        np.concatenate(genuine),
        np.concatenate(impostor),
        model=model,
        dataset=" + ".join(p.name for p in parts),
        version=version,
        impostor_weights=np.concatenate(weights),
        normalizer=normalizer.sha256 if normalizer is not None else None,
    )
    data["provenance"] = prov
    return normalizer, CalibrationTable.from_dict(data), data


def _scored_pairs(
    emb: np.ndarray, subj: np.ndarray, half: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Genuine scores, impostor scores and impostor weights of one set.

    An impostor pair weighs the mean of ``1 / (impostors of each of its images)``, so every image's
    comparisons weigh about the same, whatever the size of the set it came from.
    """
    _, index, counts = np.unique(subj, return_inverse=True, return_counts=True)
    n_imp = (len(subj) - counts[index]).astype(np.float64)
    inv = np.where(n_imp > 0, 1.0 / np.maximum(n_imp, 1.0), 0.0)
    genuine: list[np.ndarray] = []
    impostor: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for i, j, score in pair_blocks(emb, half):
        same = subj[i] == subj[j]
        genuine.append(score[same])
        impostor.append(score[~same])
        weights.append(0.5 * (inv[i[~same]] + inv[j[~same]]))
    return np.concatenate(genuine), np.concatenate(impostor), np.concatenate(weights)


def held_apart(subject: str, fold: int = 3) -> bool:
    """True for the 1/``fold`` of subjects that calibration never sees (a stable hash of the id)."""
    return int(hashlib.sha256(subject.encode()).hexdigest()[:8], 16) % fold == 0


#: How much of each shared dataset the shipped parameters never saw: 1/fold of its subjects
#: (of its images, where every image is a different person). celeba_dev keeps the third it
#: has kept since the first table; every other set keeps half.
HELD_APART_FOLDS = {"celeba_dev": 3}
DEFAULT_HELD_APART_FOLD = 2


def held_apart_fold(dataset: str) -> int:
    """1/fold of the dataset folder named ``dataset`` was kept out of fitting the shipped parameters."""
    return HELD_APART_FOLDS.get(dataset, DEFAULT_HELD_APART_FOLD)


def is_held_apart(dataset: str, subject: str) -> bool:
    """True when ``subject`` (or image path, for sets without identities) of the dataset folder
    named ``dataset`` was kept out of fitting the shipped normalizer and table."""
    return held_apart(subject, held_apart_fold(dataset))
