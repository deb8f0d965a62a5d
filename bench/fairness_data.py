"""The shared datasets as the fairness work uses them: cached templates, labels and splits.

``bench/fairness_templates.py`` embeds every image of the shared sets once, trying each detector
fallback step on the images where MTCNN finds nothing, and stores plain and mirrored-chip
templates per step in ``.cache/fair/``. This module reads those files back as the deployed
pipeline sees them (MTCNN, then MTCNN on the padded image, then MMOD on it; flip-mean templates)
and splits every set the way the shipped parameters were fitted (``regard.scoring.calibrate.is_held_apart``).
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regard.scoring.calibrate import is_held_apart

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
CACHE = ROOT / ".cache" / "fair"
#: Every shared set with faces: (folder, whether it has identities).
SETS = {
    "celeba_dev": "recognition/celeba_dev",
    "fairface_train": "demographics/fairface_train",
    "utkface": "demographics/utkface",
    "orl": "recognition/orl",
    "yale": "recognition/yale",
    "bbt": "recognition/bbt",
    "deepface": "recognition/deepface",
    "fr_examples": "recognition/fr_examples",
}
#: The fallback cascade as shipped: the first step that finds a face wins.
CASCADE = ("mtcnn", "pad25_mtcnn", "pad25_cnn")
AGE_BANDS = ((0, 12), (13, 19), (20, 39), (40, 59), (60, 200))


def age_band(age: str) -> str:
    a = int(float(age))
    for lo, hi in AGE_BANDS:
        if lo <= a <= hi:
            return f"{lo}-{hi}" if hi < 200 else f"{lo}+"
    return "unknown"


@dataclass
class Set:
    """One dataset: every image's template (NaN where none), subject, labels and split."""

    name: str
    templates: np.ndarray
    plain: np.ndarray  # without the flip
    subjects: np.ndarray
    labels: dict[str, np.ndarray]
    test: np.ndarray  # held apart from every fit
    step: np.ndarray  # which cascade step found the face ("" where none)
    #: regard before 0.2: MTCNN's face, no flip, aligned on the bare picture (NaN where none)
    before: np.ndarray | None = None

    @property
    def acquired(self) -> np.ndarray:
        return np.asarray(np.isfinite(self.templates[:, 0]))

    def fold(self, salt: str) -> np.ndarray:
        """A stable half of the subjects, different for each salt (inner cross-validation)."""
        return subject_parts(self.subjects, salt, 2) == 0


def subject_parts(subjects: np.ndarray, salt: str, parts: int) -> np.ndarray:
    """A stable part (0 .. ``parts`` - 1) for each subject, different for each salt."""
    return np.array(
        [int(hashlib.sha256(f"{salt}:{s}".encode()).hexdigest()[:8], 16) % parts for s in subjects]
    )


def load(name: str, cascade: tuple[str, ...] = CASCADE) -> Set:
    folder = DATASETS / SETS[name]
    with open(folder / "manifest.csv") as f:
        rows = list(csv.DictReader(f))
    data = np.load(CACHE / (SETS[name].replace("/", "__") + ".npz"))
    if [str(p) for p in data["paths"]] != [r["path"] for r in rows]:
        raise SystemExit(
            f"{name}: template cache does not match the manifest; rerun bench/fairness_templates.py"
        )
    n = len(rows)
    emb = np.full((n, 128), np.nan, np.float32)
    plain = emb.copy()
    step = np.full(n, "", dtype=object)
    for v in reversed(cascade):  # earlier steps overwrite later ones
        ok = np.isfinite(data[f"{v}_emb"][:, 0])
        emb[ok] = (data[f"{v}_emb"][ok] + data[f"{v}_flip"][ok]) / 2
        plain[ok] = data[f"{v}_emb"][ok]
        step[ok] = v
    has_ids = "subject" in rows[0]
    subjects = np.array([r["subject"] if has_ids else r["path"] for r in rows])
    labels: dict[str, np.ndarray] = {}
    for col in ("race", "sex", "age"):
        if col in rows[0]:
            vals = [r[col] for r in rows]
            if col == "age" and all(v.replace(".", "").isdigit() for v in vals if v):
                vals = [age_band(v) if v else "unknown" for v in vals]
            labels[col] = np.array(vals)
    test = np.array([is_held_apart(name, s) for s in subjects])
    before = data["before_emb"] if "before_emb" in data.files else None
    return Set(name, emb, plain, subjects, labels, test, step, before)
