"""How often three intervals for a max/min (or max/geomean) across groups hold the true ratio.

Simulated data, so the truth is known: ``G`` groups of ``n`` independent trials at set rates; each
dataset's groups are resampled on their own (binomial: one trial per subject), and each method
makes a 95% interval from the replicates:

- percentile: the 2.5% and 97.5% quantiles of the replicates' own max/min;
- basic: the reverse percentile interval on the log scale (``estimate^2 / q97.5 .. estimate^2 / q2.5``);
- simultaneous: ``regard.evaluation.metrics.differential_interval`` (per-group intervals at
  level 1 - 0.05/G, the wider of the bootstrap's and Clopper-Pearson's, combined), what
  ``regard evaluate`` reports.

Prints, per scenario, the share of datasets whose interval holds the true ratio (should be about
0.95) and the median interval. docs/evaluation.md quotes this output.

    .venv/bin/python bench/differential_coverage.py [--datasets 300] [--replicates 1000]
"""

from __future__ import annotations

import argparse

import numpy as np

from regard.evaluation.metrics import differential_interval

SCENARIOS = {
    "7 groups at 1.3%, n=350 (FTA-like, equal)": ([0.013] * 7, 350),
    "7 groups at 5e-4, n=60,000 (FMR-like, equal)": ([5e-4] * 7, 60_000),
    "7 groups 0.5%-2% (4x spread), n=350": ([0.005, 0.008, 0.01, 0.012, 0.015, 0.018, 0.02], 350),
    "6 groups at 1%, one at 3%, n=350": ([0.01] * 6 + [0.03], 350),
    "FairFace-like at similarity 80, n=60,000": (
        [6.1e-4, 7.8e-4, 5e-4, 1.8e-4, 8.1e-4, 2.5e-4, 4.9e-4],
        60_000,
    ),
}


def ratios(rates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return rates.max(-1) / rates.min(-1), rates.max(-1) / np.exp(np.log(rates).mean(-1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", type=int, default=300)
    ap.add_argument("--replicates", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    print("| scenario | ratio | true | percentile | basic (log) | simultaneous | its median interval |")
    print("|---|---|---:|---:|---:|---:|---|")
    for name, (p_list, n) in SCENARIOS.items():
        p = np.array(p_list)
        truth = ratios(p[None, :])
        held = np.zeros((3, 2))
        spans = []
        for _ in range(args.datasets):
            e = rng.binomial(n, p)
            boot = rng.binomial(n, e / n, size=(args.replicates, len(p)))
            estimate = ratios(np.maximum(e, 0.5)[None, :] / n)
            replicate = ratios(np.maximum(boot, 0.5) / n)
            reps = {
                str(g): (boot[:, g].astype(float), np.full(args.replicates, float(n))) for g in range(len(p))
            }
            simultaneous = differential_interval({str(g): (int(e[g]), n) for g in range(len(p))}, reps)
            assert simultaneous is not None
            for k, key in enumerate(("max_over_min", "max_over_geomean")):
                t = float(truth[k][0]) * (1 + 1e-12)
                lo, hi = np.quantile(replicate[k], [0.025, 0.975])
                held[0, k] += lo <= t and truth[k][0] <= hi
                est = float(estimate[k][0])
                held[1, k] += max(1.0, est * est / hi) <= t and truth[k][0] <= est * est / lo
                slo, shi = simultaneous[key]
                held[2, k] += slo <= t and truth[k][0] <= shi
            spans.append(simultaneous["max_over_min"] + simultaneous["max_over_geomean"])
        med = np.median(np.array(spans), axis=0)
        share = held / args.datasets
        for k, label in enumerate(("max/min", "max/geomean")):
            print(
                f"| {name} | {label} | {truth[k][0]:.2f} | {share[0, k]:.2f} | {share[1, k]:.2f} | "
                f"{share[2, k]:.2f} | {med[2 * k]:.2f}-{med[2 * k + 1]:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
