"""How the shipped scoring reads the photos it was fitted on against photos it never saw.

The normalizer's offsets and the calibration table were both fitted on the fitting part of each
pooled set (``regard.scoring.calibrate.is_held_apart`` says which); every figure in
docs/calibration.md comes from the held-apart parts. This prints, for FairFace, UTKFace and
celeba_dev, the FMR at similarity 80 and 60 over every impostor pair within the fitting part
(the photos the parameters saw) and within the held-apart part, as a multiple of nominal. A gap
between the two is the optimism of a table fitted on the same photos as the offsets.
Needs ``bench/fairness_templates.py`` first.

    .venv/bin/python bench/fairness_insample.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fairness_data import load
from regard.scoring.calibrate import default_scorer, fmr_from_similarity, pair_blocks

SETS = ("fairface_train", "utkface", "celeba_dev")
SIMILARITIES = (80.0, 60.0)


def impostor_rates(
    templates: np.ndarray, subjects: np.ndarray, half: np.ndarray, limits: list[float]
) -> tuple[int, list[int]]:
    """Impostor pairs within one part, and how many score at or under each of ``limits``."""
    pairs, hits = 0, [0] * len(limits)
    for i, j, score in pair_blocks(templates, half):
        impostor = score[subjects[i] != subjects[j]]
        pairs += len(impostor)
        for k, limit in enumerate(limits):
            hits[k] += int((impostor <= limit).sum())
    return pairs, hits


def main() -> int:
    scorer = default_scorer()
    if scorer.normalizer is None:
        print("the shipped scoring has no normalizer", file=sys.stderr)
        return 1
    limits = [scorer.score_for_similarity(s) for s in SIMILARITIES]
    print(f"scoring {scorer.key}: FMR within each part, as a multiple of nominal")
    for name in SETS:
        data = load(name)
        for part, mask in (("fitting", ~data.test), ("held-apart", data.test)):
            keep = mask & data.acquired
            templates = data.templates[keep].astype(np.float32)
            pairs, hits = impostor_rates(
                templates, data.subjects[keep], scorer.normalizer.half_offsets(templates), limits
            )
            cells = [
                f"@{s:.0f} {h / pairs:.2e} ({h / pairs / fmr_from_similarity(s):.2f}x)"
                for s, h in zip(SIMILARITIES, hits, strict=True)
            ]
            print(
                f"{name:15s} {part:10s} {len(templates):5d} images {pairs:9d} impostor pairs  "
                + "  ".join(cells)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
