"""Before/after tables for docs/calibration.md from ``regard evaluate`` reports.

Give each run as LABEL=DIR, where DIR holds one ``regard evaluate`` output folder per set
(``DIR/<set>/report.json``). For every set it prints, per run: FMR at similarity 80 and 60
(nominal 1e-4 and 1e-3) overall and per group, with the subject-bootstrap 95% interval, the
max/min and max/geomean across groups (with their simultaneous 95% intervals, in reports made
since they were added), innocent probes matched in the watchlist test, FNMR,
TAR with failures to acquire counted as rejections, and failure to acquire per group with a
permutation test of equal rates across groups.

    .venv/bin/python bench/fairness_report.py today=/work/runs/today deployed=/work/runs/deployed
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from regard.scoring.calibrate import is_held_apart

GROUPING = {
    "fairface_train": "race",
    "utkface": "age",
    "celeba_dev": "all",
    **{n: "all" for n in ("orl", "yale", "bbt", "deepface", "fr_examples")},
}
POINTS = {"similarity80": 1e-4, "similarity60": 1e-3, "target": 1e-3}


def _rate(r: dict[str, Any]) -> str:
    if r is None or r.get("rate") is None:
        return "-"
    boot = r.get("ci95_bootstrap_subjects")
    ci = f" ({boot[0]:.2g}-{boot[1]:.2g})" if boot else ""
    return f"{r['rate']:.2g}{ci}"


def _ratio(diff: dict[str, Any], key: str) -> str:
    """A differential's ratio, with its simultaneous 95% interval where the report has one."""
    if not diff.get(key):
        return "-"
    boot = (diff.get("ci95_simultaneous") or {}).get(key)
    return f"{diff[key]:.1f}" + (f" ({boot[0]:.1f}-{boot[1]:.1f})" if boot else "")


def _point(rep: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The operating point of that kind (``target``: the data's own FMR 1e-3 threshold)."""
    want = [p for p in rep["operating_points"] if p["kind"] == kind]
    if kind == "target":
        want = [p for p in want if abs(p["target_fmr"] - 1e-3) < 1e-12]
    return want[0] if want else None


def _genuine_total(manifest: Path, held_apart_only: bool) -> int:
    """Genuine pairs among all images of the run, with or without a face found."""
    with open(manifest) as f:
        rows = list(csv.DictReader(f))
    if not rows or "subject" not in rows[0]:
        return 0
    if held_apart_only:
        rows = [r for r in rows if is_held_apart(manifest.parent.name, r["subject"])]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["subject"]] = counts.get(r["subject"], 0) + 1
    return sum(c * (c - 1) // 2 for c in counts.values())


def main() -> None:
    runs = dict(arg.split("=", 1) for arg in sys.argv[1:])
    for name, grouping in GROUPING.items():
        reports = {}
        for label, folder in runs.items():
            path = Path(folder) / name / "report.json"
            if path.is_file():
                reports[label] = json.loads(path.read_text())
        if not reports:
            continue
        print(f"\n### {name} (held apart; grouped by {grouping})\n")
        print(
            "| run | similarity | FMR overall (nominal) | worst / best group | max/min | max/geomean | "
            "innocent probes matched | FNMR | TAR, no face = reject |"
        )
        print("|---|---:|---|---|---:|---:|---:|---:|---:|")
        for label, rep in reports.items():
            for kind, nominal in POINTS.items():
                p = _point(rep, kind)
                if p is None:
                    continue
                g = p["global"]
                diff = p["differentials"].get(grouping, {}).get("fmr", {}) if grouping != "all" else {}
                by = p["by_group"].get(grouping, {}) if grouping != "all" else {}
                worst = diff.get("worst_group")
                best = diff.get("best_group")
                wb = f"{worst} {_rate(by[worst]['fmr'])} / {best} {_rate(by[best]['fmr'])}" if worst else "-"
                mm, mg = _ratio(diff, "max_over_min"), _ratio(diff, "max_over_geomean")
                ident = rep["identification"]["operating_points"].get(p["label"], {})
                fpir = ident.get("fpir") or {}
                watch = f"{fpir.get('errors', '-')}/{fpir.get('trials', '-')}"
                fnmr = g["fnmr"]
                tar = "-"
                total = _genuine_total(
                    Path(rep["dataset"]["root"]) / "manifest.csv", bool(rep["dataset"].get("held_apart_only"))
                )
                if fnmr.get("trials") and total:
                    tar = f"{(fnmr['trials'] - fnmr['errors']) / total:.3f}"
                sim = kind.removeprefix("similarity") if kind != "target" else "own FMR 1e-3"
                print(
                    f"| {label} | {sim} | {_rate(g['fmr'])} ({nominal:g}) | {wb} | {mm} | {mg} | {watch} | "
                    f"{_rate(fnmr)} | {tar} |"
                )
        if grouping != "all":
            print(f"\nFMR at similarity 80 by {grouping} (subject-bootstrap 95% interval):\n")
            labels = list(reports)
            print("| group | " + " | ".join(labels) + " |")
            print("|---|" + "---|" * len(labels))
            groups = sorted(
                {g for rep in reports.values() for g in _point(rep, "similarity80")["by_group"][grouping]}
            )
            for grp in groups:
                cells = []
                for rep in reports.values():
                    by = _point(rep, "similarity80")["by_group"][grouping]
                    cells.append(_rate(by[grp]["fmr"]) if grp in by else "-")
                print(f"| {grp} | " + " | ".join(cells) + " |")
        if grouping != "all":
            print(f"\nWatchlist test at similarity 80: innocent probes matched, by {grouping}:\n")
            labels = list(reports)
            print("| group | " + " | ".join(labels) + " |")
            print("|---|" + "---|" * len(labels))
            for grp in groups:
                cells = []
                for rep in reports.values():
                    label80 = _point(rep, "similarity80")["label"]
                    ident = rep["identification"]["operating_points"][label80]["by_group"][grouping]["groups"]
                    f = ident.get(grp, {}).get("fpir") or {}
                    cells.append(
                        f"{f['errors']}/{f['trials']} ({f['errors'] / f['trials']:.0%})" if f else "-"
                    )
                print(f"| {grp} | " + " | ".join(cells) + " |")
        print(
            "\nFailure to acquire:",
            ", ".join(
                f"{label} {rep['acquisition']['by_group']['all']['all']['failure_to_acquire']['errors']}"
                f"/{rep['acquisition']['by_group']['all']['all']['failure_to_acquire']['trials']}"
                for label, rep in reports.items()
            ),
        )
        if grouping != "all":
            for label, rep in reports.items():
                by = rep["acquisition"]["by_group"].get(grouping, {})
                counts = {
                    g: (v["failure_to_acquire"]["errors"], v["failure_to_acquire"]["trials"])
                    for g, v in by.items()
                }
                if counts:
                    p_value = homogeneity_p(list(counts.values()))
                    fta = (
                        rep["acquisition"]
                        .get("differentials", {})
                        .get(grouping, {})
                        .get("failure_to_acquire", {})
                    )
                    print(
                        f"  {label}, by {grouping}: "
                        + ", ".join(f"{g} {e}/{n}" for g, (e, n) in counts.items())
                        + f"; same rate in every group? permutation p = {p_value:.3f}"
                        + (f"; max/min {_ratio(fta, 'max_over_min')}" if fta else "")
                    )


def homogeneity_p(counts: list[tuple[int, int]], shuffles: int = 20_000, seed: int = 0) -> float:
    """p-value of a permutation test that every group fails at the same rate (chi-square statistic).

    Exact enough for the small counts left after the detector fallback, where the asymptotic
    chi-square test is not to be trusted: failures are dealt out to the groups' images at random.
    """
    errors = np.array([e for e, _ in counts])
    sizes = np.array([n for _, n in counts])
    if errors.sum() == 0 or errors.sum() == sizes.sum():
        return 1.0

    def statistic(e: np.ndarray) -> np.ndarray:
        expected = sizes * errors.sum() / sizes.sum()
        ok = sizes - e
        expected_ok = sizes - expected
        return ((e - expected) ** 2 / expected).sum(-1) + ((ok - expected_ok) ** 2 / expected_ok).sum(-1)

    rng = np.random.default_rng(seed)
    group_of = np.repeat(np.arange(len(sizes)), sizes)
    draws = np.stack([group_of[rng.permutation(len(group_of))[: errors.sum()]] for _ in range(shuffles)])
    shuffled = np.stack([(draws == g).sum(1) for g in range(len(sizes))], axis=1)
    hits = int((statistic(shuffled) >= statistic(errors) - 1e-9).sum())
    return (hits + 1) / (shuffles + 1)


if __name__ == "__main__":
    main()
