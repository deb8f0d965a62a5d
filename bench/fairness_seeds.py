"""How much the fair score normalizer depends on its k-means seed, alone and averaged.

One setting of the sweep (``bench/fairness_sweep.py``) is fitted again with other seeds, as one
clustering (seeds 0, 1, ...) and as an ensemble of ``--members`` clusterings (seeds 0..m-1,
m..2m-1, ...), on the same folds of the fitting parts. Each row is a seed's worst criterion (1.0 =
issue 12's limit) with the criteria that decide it; the summary gives their spread. A choice that
rests on one lucky seed shows here as a wide spread. Needs ``bench/fairness_templates.py`` first.

    .venv/bin/python bench/fairness_seeds.py --clusters 200 --strength 1.0 --draws 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fairness_sweep import Folds
from regard.scoring.normalize import FitOptions

SHOWN = ("race max/min @80", "celeba_dev FMR/nominal @80", "celeba TAR@1e-3 vs today")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clusters", type=int, default=FitOptions.clusters)
    ap.add_argument("--target", type=float, default=FitOptions.target_fmr)
    ap.add_argument("--iterations", type=int, default=FitOptions.iterations)
    ap.add_argument("--strength", type=float, default=1.0)
    ap.add_argument("--members", type=int, default=FitOptions.members, help="clusterings per ensemble")
    ap.add_argument("--draws", type=int, default=5, help="seeds (or ensembles) per row group")
    args = ap.parse_args()
    data = Folds()
    setting = f"k={args.clusters} fmr={args.target:g} it={args.iterations} strength={args.strength:g}"
    print(f"{setting}; TAR bar (today's pipeline) {data.tar_bar:.4f}\n")
    print("| clusterings | seeds | worst | " + " | ".join(SHOWN) + " | celeba TAR@1e-3 |")
    print("|---:|---|---:|" + "---:|" * len(SHOWN) + "---:|")
    summary = {}
    for members in (1, args.members):
        worsts = []
        for draw in range(args.draws):
            seed = draw * members
            opts = FitOptions(
                clusters=args.clusters,
                target_fmr=args.target,
                iterations=args.iterations,
                seed=seed,
                members=members,
            )
            worst, crit, tar = data.score(data.refit(data.fit(opts), args.strength))
            worsts.append(worst)
            seeds = f"{seed}" if members == 1 else f"{seed}-{seed + members - 1}"
            cells = " | ".join(f"{crit[c]:.2f}" for c in SHOWN)
            print(f"| {members} | {seeds} | {worst:.2f} | {cells} | {tar:.4f} |", flush=True)
        summary[members] = worsts
    print()
    for members, worsts in summary.items():
        print(
            f"{members} clustering(s): worst criterion {min(worsts):.2f} to {max(worsts):.2f}, "
            f"mean {np.mean(worsts):.2f}, sd {np.std(worsts, ddof=1):.2f} over {len(worsts)} seeds"
        )


if __name__ == "__main__":
    main()
