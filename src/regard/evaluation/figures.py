"""The evaluation report's figures, each a matplotlib plot returned as a base64 PNG data URL."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from regard.evaluation.bias import ALL
from regard.evaluation.metrics import det_points
from regard.evaluation.pairs import BIN_EDGES, Grouping, PairScores, cumulative_fmr, group_hist


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float = 7.0, height: float = 4.0) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def _score_range(values: Sequence[float], lo: float, hi: float) -> tuple[float, float]:
    """The plotted score range: ``lo``..``hi``, widened to show every value (normalized scores
    can be negative)."""
    if not values:
        return lo, hi
    return min(lo, min(values) - 0.05), max(hi, max(values) + 0.05)


def fig_distributions(scores: PairScores, points: Sequence[dict[str, Any]]) -> str:
    fig, ax = _figure()
    centres = (BIN_EDGES[:-1] + BIN_EDGES[1:]) / 2
    step = 20  # 0.01-wide display bins
    imp = scores.hist_all.reshape(-1, step).sum(axis=1)
    x = centres.reshape(-1, step).mean(axis=1)
    if imp.sum():
        ax.plot(x, imp / imp.sum() / 0.01, label=f"impostor ({scores.n_impostor:,} pairs)", color="tab:red")
    if scores.genuine_s.size:
        # Out-of-range scores count in the end bins, as the impostor histogram counts them.
        gen = np.clip(scores.genuine_s, BIN_EDGES[0], BIN_EDGES[-1])
        g, _ = np.histogram(gen, bins=BIN_EDGES[::step])
        ax.plot(x, g / g.sum() / 0.01, label=f"genuine ({scores.genuine_s.size:,} pairs)", color="tab:blue")
    styles = [":", "--", "-.", (0, (1, 3)), (0, (5, 5)), (0, (3, 1, 1, 1))]
    for n, p in enumerate(points):
        ax.axvline(p["score"], color="black", ls=styles[n % len(styles)], lw=1, label=p["label"])
    shown = [float(p["score"]) for p in points]
    if scores.genuine_s.size:
        shown.append(float(scores.genuine_s.min()))
    if imp.sum():
        shown.append(float(x[np.nonzero(imp)[0][0]]))
    ax.set_xlim(*_score_range(shown, 0.0, 1.2))
    ax.set_xlabel("score (distance between templates minus both half offsets; raw: the distance)")
    ax.set_ylabel("density")
    ax.set_title("Genuine and impostor score distributions")
    ax.legend(fontsize=7)
    return _png(fig)


def fig_calibration(calibration: dict[str, Any]) -> str:
    fig, ax = _figure()
    rows = calibration["rows"]
    d = [r["score"] for r in rows]
    ax.semilogy(d, [r["measured_fmr"] or np.nan for r in rows], "o-", label="measured on this data")
    if rows and rows[0]["shipped_fmr"] is not None:
        ax.semilogy(d, [r["shipped_fmr"] for r in rows], "s--", label="shipped calibration table")
    ax.set_xlabel("score threshold")
    ax.set_ylabel("false-match rate")
    twin = ax.twinx()
    twin.set_yscale("log")
    twin.set_ylim(ax.get_ylim())
    ticks = [10.0**-k for k in range(0, 11) if ax.get_ylim()[0] <= 10.0**-k <= ax.get_ylim()[1]]
    twin.set_yticks(ticks, [f"{20 * k}" for k in range(0, 11) if 10.0**-k in ticks])
    twin.minorticks_off()
    twin.set_ylabel("similarity = -20 log10(FMR)")
    ax.set_title("Score -> FMR -> similarity: this data vs the shipped table")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return _png(fig)


def _group_genuine(scores: PairScores, g: Grouping, k: int) -> np.ndarray:
    ij = scores.genuine_ij
    if ij.size == 0:
        return np.zeros(0)
    sel = (g.codes[ij[:, 0]] == k) & (g.codes[ij[:, 1]] == k)
    return np.asarray(scores.genuine_s[sel])


def fig_det(scores: PairScores, g: Grouping, point: dict[str, Any]) -> str | None:
    fig, ax = _figure()
    drawn = False
    for k, name in enumerate(g.names):
        gen = _group_genuine(scores, g, k)
        hist = group_hist(scores, g.spec, k)
        if gen.size == 0 or hist.sum() == 0:
            continue
        fmr, fnmr, _ = det_points(gen, hist, BIN_EDGES)
        keep = (fmr > 0) & (fnmr > 0)
        (line,) = ax.loglog(fmr[keep], fnmr[keep], label=name)
        r = point["by_group"].get(g.spec, {}).get(name) if g.spec != ALL else point["global"]
        if r and r["fmr"]["rate"] and r["fnmr"]["rate"]:
            ax.plot([r["fmr"]["rate"]], [r["fnmr"]["rate"]], "o", color=line.get_color())
        drawn = True
    if not drawn:
        import matplotlib.pyplot as plt

        plt.close(fig)
        return None
    ax.set_xlabel("false-match rate")
    ax.set_ylabel("false non-match rate")
    ax.set_title(f"DET by {g.spec}; dots: operating point {point['label']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def fig_vs_threshold(scores: PairScores, g: Grouping, points: Sequence[dict[str, Any]]) -> str:
    fig, ax = _figure()
    x = BIN_EDGES[1:]
    lo, hi = _score_range([float(p["score"]) for p in points], 0.2, 0.9)
    for k, name in enumerate(g.names):
        hist = group_hist(scores, g.spec, k)
        if hist.sum() == 0:
            continue
        fmr = cumulative_fmr(hist)
        keep = (fmr > 0) & (x >= lo) & (x <= hi)
        (line,) = ax.semilogy(x[keep], fmr[keep], label=f"FMR {name}")
        gen = np.sort(_group_genuine(scores, g, k))
        if gen.size:
            fnmr = 1.0 - np.searchsorted(gen, x, side="right") / gen.size
            ok = (fnmr > 0) & (x >= lo) & (x <= hi)
            ax.semilogy(x[ok], fnmr[ok], ls="--", color=line.get_color(), label=f"FNMR {name}")
    for p in points:
        ax.axvline(p["score"], color="grey", ls=":", lw=1)
    ax.set_xlim(lo, hi)
    ax.set_xlabel("score threshold")
    ax.set_ylabel("error rate")
    ax.set_title(f"FMR (solid) and FNMR (dashed) vs threshold by {g.spec}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def fig_cross(cross: dict[str, Any], spec: str, label: str) -> str:
    names = cross["groups"]
    mat = np.array([[np.nan if v is None else v for v in row] for row in cross["fmr"]], dtype=float)
    fig, ax = _figure(1.2 + 0.9 * len(names), 1.0 + 0.8 * len(names))
    shown = np.log10(np.where(mat > 0, mat, np.nan))
    im = ax.imshow(shown, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i in range(len(names)):
        for j in range(len(names)):
            v = mat[i, j]
            text = "n/a" if not np.isfinite(v) else ("0" if v == 0 else f"{v:.1e}")
            colour = "white" if np.isfinite(shown[i, j]) else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color=colour)
    fig.colorbar(im, ax=ax, label="log10 FMR")
    ax.set_title(f"Impostor FMR between {spec} groups at {label}", fontsize=9)
    return _png(fig)
