"""Turn descriptor distances into calibrated similarities and false-match rates.

The shipped table (``data/calibration.json``) lists, for a ladder of Euclidean
distances between dlib ResNet descriptors, the false-match rate (share of impostor
pairs at or below that distance) and false non-match rate (share of genuine pairs
above it) measured on ``recognition/celeba_dev``; ``scripts/calibrate.py`` re-makes
it on any folder with a ``manifest.csv``.

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
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from regard.errors import InvalidParameter
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

    def compare(self, a: np.ndarray, b: np.ndarray) -> Comparison:
        distance = float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
        fmr = self.fmr_at(distance)
        return Comparison(distance=distance, similarity=similarity_from_fmr(fmr), fmr=fmr)


@cache
def default_table() -> CalibrationTable:
    """The table shipped with regard."""
    return CalibrationTable.load()


def distances(probe: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Euclidean distances from one probe vector to each gallery row."""
    diff = np.asarray(gallery, np.float32) - np.asarray(probe, np.float32)[None, :]
    result: np.ndarray = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    return result


# -- building a table from labelled data ---------------------------------------------------------


def pair_distances(
    embeddings: np.ndarray, subjects: np.ndarray, block: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """All genuine and impostor distances among ``embeddings`` (one row per image)."""
    emb = np.asarray(embeddings, dtype=np.float32)
    subj = np.asarray(subjects)
    n = len(emb)
    sq = np.einsum("ij,ij->i", emb, emb)
    genuine: list[np.ndarray] = []
    impostor: list[np.ndarray] = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        d2 = sq[start:stop, None] + sq[None, :] - 2.0 * emb[start:stop] @ emb.T
        d = np.sqrt(np.maximum(d2, 0.0))
        rows = np.arange(start, stop)[:, None]
        upper = np.arange(n)[None, :] > rows
        same = subj[start:stop, None] == subj[None, :]
        genuine.append(d[upper & same])
        impostor.append(d[upper & ~same])
    return np.concatenate(genuine), np.concatenate(impostor)


def build_table(
    genuine: np.ndarray,
    impostor: np.ndarray,
    *,
    model: str,
    dataset: str,
    version: str,
    min_count: int = 10,
) -> dict[str, Any]:
    """A calibration table (as written to ``calibration.json``) from genuine and impostor distances.

    Rows are placed at the impostor-distance quantiles for FMR 1, 0.5, 0.2, 0.1, ... down to
    the smallest FMR supported by ``min_count`` impostor pairs, plus a regular distance grid.
    Below that, log10(FMR) is extrapolated linearly in distance with the slope fitted on the
    measured rows between FMR 1e-2 and the smallest supported FMR.
    """
    g = np.sort(np.asarray(genuine, dtype=np.float64))
    imp = np.sort(np.asarray(impostor, dtype=np.float64))
    if len(imp) < 100 or len(g) < 10:
        raise InvalidParameter(
            f"too few pairs to calibrate: {len(g)} genuine and {len(imp)} impostor "
            "(need >= 10 genuine and >= 100 impostor)"
        )
    smallest_fmr = min_count / len(imp)
    ladder = [f * 10.0**-e for e in range(0, 12) for f in (1.0, 0.5, 0.2)]
    targets = sorted({t for t in ladder if t >= smallest_fmr} | {smallest_fmr})
    dists = {float(imp[max(0, math.ceil(t * len(imp)) - 1)]) for t in targets}
    dists |= {round(x, 3) for x in np.arange(0.0, float(imp[-1]) + 0.05, 0.05)}
    rows = []
    for d in sorted(dists):
        fmr = float(np.searchsorted(imp, d, side="right") / len(imp))
        fnmr = float(1.0 - np.searchsorted(g, d, side="right") / len(g))
        rows.append({"distance": round(d, 6), "fmr": fmr, "fnmr": fnmr})
    anchor = float(imp[min_count - 1])
    anchor_fmr = min_count / len(imp)
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
        "similarity": "similarity = -20 * log10(FMR), clipped to 0-100",
        "counts": {"genuine": len(g), "impostor": len(imp)},
        "tail": {"distance": anchor, "log10_fmr": math.log10(anchor_fmr), "slope": slope},
        "rows": rows,
    }


def held_apart(subject: str, fold: int = 3) -> bool:
    """True for the third of subjects that calibration never sees (a stable hash of the id)."""
    return int(hashlib.sha256(subject.encode()).hexdigest()[:8], 16) % fold == 0
