"""Write ``report.json`` and a self-contained ``report.html`` (plots embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from regard.evaluation.bias import ALL, BiasData
from regard.evaluation.metrics import det_points
from regard.evaluation.pairs import BIN_EDGES, Grouping, PairScores, cumulative_fmr, group_hist

SECTIONS = (
    ("system", "System under test"),
    ("data-card", "Data card"),
    ("thresholds", "Global thresholds and calibration"),
    ("groups", "Error rates per group"),
    ("differentials", "Differentials"),
    ("curves", "Curves and distributions"),
    ("identification", "1:N identification"),
    ("watchlist", "Watchlist test"),
    ("acquisition", "Failure to acquire and quality rejection"),
    ("gates", "Release gates"),
)


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2, sort_keys=False, default=_jsonable) + "\n", encoding="utf-8")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


# -- figures ---------------------------------------------------------------------------------------


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


# -- HTML ------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222;
line-height:1.4;padding:0 1rem}
h1{font-size:1.6rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.85rem}
td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:right;vertical-align:top}
th{background:#f2f2f2}td.l,th.l{text-align:left}
.na{color:#999}.fail{color:#b00;font-weight:bold}.pass{color:#070;font-weight:bold}
img{max-width:100%;display:block;margin:.5rem 0}.note{color:#555;font-size:.85rem}code{font-size:.85rem}
"""


def _e(v: Any) -> str:
    return html.escape(str(v))


def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if v == 0:
        return "0"
    if abs(v) < 1e-2 or abs(v) >= 1e4:
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


def _rate_cell(r: dict[str, Any] | None) -> str:
    if r is None or r["trials"] == 0:
        return '<td class="na">no pairs</td>'
    lo, hi = r["ci95_clopper_pearson"]
    text = f"{_fmt(r['rate'])} <small>({r['errors']:,}/{r['trials']:,})<br>CP [{_fmt(lo)}, {_fmt(hi)}]"
    if r.get("ci95_bootstrap_subjects"):
        blo, bhi = r["ci95_bootstrap_subjects"]
        text += f"<br>boot [{_fmt(blo)}, {_fmt(bhi)}]"
    text += "</small>"
    if not r["estimable"]:
        return f'<td class="na">too few pairs to estimate<br><small>{text}</small></td>'
    return f"<td>{text}</td>"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], first_left: bool = True) -> str:
    h = "".join(
        f'<th class="l">{_e(c)}</th>' if i == 0 and first_left else f"<th>{_e(c)}</th>"
        for i, c in enumerate(head)
    )
    body = "".join("<tr>" + "".join(rows_i) + "</tr>" for rows_i in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _td(v: Any, left: bool = False) -> str:
    return f'<td class="l">{_e(v)}</td>' if left else f"<td>{_e(v)}</td>"


def render_html(data: BiasData) -> str:
    rep = data.report
    parts: list[str] = []
    title = f"regard evaluation: {rep['dataset']['name']}"
    parts.append(f"<h1>{_e(title)}</h1>")
    parts.append(
        '<p class="note">One global threshold per target false-match rate is set on all impostor pairs; '
        "every group's rates are measured at that same threshold (NISTIR 8280). FMR per group counts "
        "impostor pairs with both images in the group. Intervals: 95% Clopper-Pearson, and a percentile "
        "bootstrap that resamples subjects. Thresholds are on the pair <em>score</em>: "
        f"{_e(_score_meaning(rep))}; a pair matches when its score is at or below the threshold.</p>"
    )
    parts.append(_summary(rep))
    parts.append(
        "<nav>" + " · ".join(f'<a href="#{sid}">{_e(name)}</a>' for sid, name in SECTIONS) + "</nav>"
    )

    sysrows = [
        [_td(k, True), _td(v, True)]
        for k, v in rep["system"].items()
        if k not in {"calibration_table", "scoring"}
    ]
    scoring = rep["system"].get("scoring") or {}
    for k, v in scoring.items():
        sysrows.append([_td(f"scoring: {'key' if k == 'scoring' else k}", True), _td(v, True)])
    cal = rep["system"].get("calibration_table")
    sysrows.append(
        [
            _td("calibration table", True),
            _td(json.dumps(cal) if cal else "not installed: shipped-table figures absent", True),
        ]
    )
    sysrows.append([_td("regard version", True), _td(rep["regard_version"], True)])
    for k, v in rep["options"].items():
        sysrows.append([_td(f"option {k}", True), _td(v, True)])
    parts.append(_section("system", _table(["item", "value"], sysrows)))

    card = rep["data_card"]
    body = _table(
        ["images", "subjects", "acquired", "not acquired", "genuine pairs", "impostor pairs"],
        [
            [
                _td(f"{card[k]:,}")
                for k in ("images", "subjects", "acquired", "not_acquired", "genuine_pairs", "impostor_pairs")
            ]
        ],
        first_left=False,
    )
    for spec, per in card["by_group"].items():
        if spec == ALL:
            continue
        body += f"<h3>by {_e(spec)}</h3>" + _table(
            [spec, "acquired images", "subjects", "genuine pairs", "impostor pairs (same group)"],
            [
                [
                    _td(g, True),
                    *[
                        _td(f"{v[k]:,}")
                        for k in ("acquired_images", "subjects", "genuine_pairs", "impostor_pairs_same_group")
                    ],
                ]
                for g, v in per.items()
            ],
        )
    parts.append(_section("data-card", body))

    points = rep.get("operating_points", [])
    body = ""
    if rep.get("note"):
        body += f'<p class="note">{_e(rep["note"])}</p>'
    if points:
        body += _table(
            [
                "operating point",
                "score threshold",
                "FMR (all impostor pairs)",
                "FNMR (all genuine pairs)",
                "shipped similarity",
                "shipped FMR",
            ],
            [
                [
                    _td(p["label"], True),
                    _td(f"{p['score']:.4f}"),
                    _rate_cell(p["global"]["fmr"]),
                    _rate_cell(p["global"]["fnmr"]),
                    _td(_fmt(p["shipped_similarity"])),
                    _td(_fmt(p["shipped_fmr"])),
                ]
                for p in points
            ],
        )
        calib = rep["calibration"]["rows"]
        body += "<h3>Calibration: this data vs the shipped table</h3>" + _table(
            [
                "score",
                "measured FMR",
                "measured similarity",
                "shipped FMR",
                "shipped similarity",
                "measured FNMR",
                "shipped FNMR",
            ],
            [
                [
                    _td(f"{r['score']:.2f}", True),
                    _td(_fmt(r["measured_fmr"])),
                    _td(_fmt(r["measured_similarity"])),
                    _td(_fmt(r["shipped_fmr"])),
                    _td(_fmt(r["shipped_similarity"])),
                    _td(_fmt(r["measured_fnmr"])),
                    _td(_fmt(r["shipped_fnmr"])),
                ]
                for r in calib[::2]
            ],
        )
        if data.scores is not None:
            body += f'<img alt="calibration" src="{fig_calibration(rep["calibration"])}">'
    parts.append(_section("thresholds", body))

    body = ""
    for p in points:
        if p["by_group"]:
            body += f"<h3>{_e(p['label'])} (score {p['score']:.4f})</h3>"
        for spec, per in p["by_group"].items():
            body += _table(
                [spec, "FMR", "FNMR"],
                [[_td(g, True), _rate_cell(v["fmr"]), _rate_cell(v["fnmr"])] for g, v in per.items()],
            )
    if not any(p["by_group"] for p in points):
        body += '<p class="note">No group columns: only the global rates above apply.</p>'
    parts.append(_section("groups", body))

    body = ""
    for p in points:
        rows = []
        for spec, d in p["differentials"].items():
            for metric in ("fmr", "fnmr"):
                x = d[metric]
                rows.append(
                    [
                        _td(spec, True),
                        _td(metric.upper()),
                        _td(_fmt(x["max_over_min"])),
                        _td(_fmt(x["max_over_geomean"])),
                        _td(x["worst_group"] or "-"),
                        _td(x["best_group"] or "-"),
                        _td(", ".join(x["zero_count_groups"]) or "-"),
                        _td(x["note"], True),
                    ]
                )
        if rows:
            body += f"<h3>{_e(p['label'])}</h3>" + _table(
                ["grouping", "rate", "max/min", "max/geomean", "worst", "best", "zero-error groups", "note"],
                rows,
            )
    parts.append(_section("differentials", body or '<p class="note">No groups to compare.</p>'))

    body = ""
    if data.scores is not None and points:
        body += f'<img alt="distributions" src="{fig_distributions(data.scores, points)}">'
        mid = _middle(points)
        for g in data.groupings:
            if g.spec == ALL and len(data.groupings) > 1 and not data.scores.genuine_s.size:
                continue
            det = fig_det(data.scores, g, mid)
            if det:
                body += f'<img alt="DET {_e(g.spec)}" src="{det}">'
            curve = fig_vs_threshold(data.scores, g, points)
            body += f'<img alt="rates vs threshold {_e(g.spec)}" src="{curve}">'
            cross = mid["cross_group_fmr"].get(g.spec)
            if cross:
                body += (
                    f'<img alt="cross-group FMR {_e(g.spec)}" src="{fig_cross(cross, g.spec, mid["label"])}">'
                )
    parts.append(_section("curves", body or '<p class="note">No scores.</p>'))

    parts.append(_section("identification", _identification_html(rep.get("identification"))))
    parts.append(_section("watchlist", _watchlist_html(rep.get("identification"), points)))
    parts.append(_section("acquisition", _acquisition_html(rep["acquisition"])))
    parts.append(_section("gates", _gates_html(rep.get("gates"))))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        + "\n".join(parts)
        + "</body></html>\n"
    )


def _summary(rep: dict[str, Any]) -> str:
    """Headline numbers at the deployed threshold (similarity 80), first thing on the page."""
    card = rep["data_card"]
    text = (
        f"{card['images']:,} images of {card['subjects']:,} subjects; {card['acquired']:,} with a face; "
        f"{card['genuine_pairs']:,} genuine and {card['impostor_pairs']:,} impostor pairs."
    )
    deployed = [p for p in rep.get("operating_points", []) if p["kind"] == "similarity80"]
    if deployed:
        p = deployed[0]
        g = p["global"]
        fnmr = (
            f"FNMR {_fmt(g['fnmr']['rate'])} ({g['fnmr']['errors']:,}/{g['fnmr']['trials']:,})"
            if g["fnmr"]["trials"]
            else "no genuine pairs"
        )
        text += (
            f" At {_e(p['label'])} (score {p['score']:.4f}): FMR {_fmt(g['fmr']['rate'])}"
            f" ({g['fmr']['errors']:,}/{g['fmr']['trials']:,}), {fnmr}."
        )
        for spec, d in p["differentials"].items():
            for metric in ("fmr", "fnmr"):
                x = d[metric]
                if x["max_over_geomean"] is not None:
                    text += (
                        f" {metric.upper()} by {_e(spec)}: max/geomean {_fmt(x['max_over_geomean'])},"
                        f" worst {_e(x['worst_group'])}."
                    )
    cal = rep["system"].get("calibration_table")
    if cal and rep["dataset"]["name"] in str(cal.get("dataset", "")):
        if rep["dataset"].get("held_apart_only"):
            text += " Only the samples kept out of fitting the shipped scoring parameters were evaluated."
        else:
            text += (
                " Note: the shipped scoring parameters were fitted on part of this dataset; "
                "<code>--held-apart</code> evaluates only the samples they never saw."
            )
    gates = rep.get("gates")
    if gates is not None:
        verdict = "passed" if gates["passed"] else "FAILED"
        text += f' Release gates: <span class="{"pass" if gates["passed"] else "fail"}">{verdict}</span>.'
    return f'<p id="summary"><b>Summary.</b> {text}</p>'


def _score_meaning(rep: dict[str, Any]) -> str:
    scoring = rep["system"].get("scoring") or {}
    if scoring.get("mode") == "normalized":
        return (
            "the Euclidean distance between the two templates minus both templates' half offsets "
            "(fair score normalization), as regard scores pairs in service; distances are shown where listed"
        )
    return "the Euclidean distance between the two templates (raw scoring, no normalization)"


def _middle(points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The point plots mark: the deployed threshold (similarity 80), else the middle target."""
    deployed = [p for p in points if p["kind"] == "similarity80"]
    if deployed:
        return deployed[0]
    targets = [p for p in points if p["kind"] == "target"]
    return targets[len(targets) // 2] if targets else points[0]


def _section(sid: str, body: str) -> str:
    name = dict(SECTIONS)[sid]
    return f'<section id="{sid}"><h2>{_e(name)}</h2>{body}</section>'


def _identification_html(ident: dict[str, Any] | None) -> str:
    if not ident:
        return '<p class="note">Not run.</p>'
    body = (
        f"<p>Gallery of {ident['gallery_size']:,} enrolled subjects (one image each); "
        f"{ident['mated_probes']:,} mated probes, {ident['nonmated_probes']:,} non-mated probes; "
        f"seed {ident['seed']}. "
        f"Rank-1 identification rate: {_fmt(ident.get('rank1_identification_rate'))}.</p>"
    )
    if ident.get("note"):
        body += f'<p class="note">{_e(ident["note"])}</p>'
    rows = []
    for label, p in ident["operating_points"].items():
        fcl = p["false_candidate_lists"]
        rows.append(
            [
                _td(label, True),
                _rate_cell(p["fpir"]),
                _rate_cell(p["fnir"]),
                _rate_cell(p["fnir_rank1"]),
                _td(f"{fcl['probes_with_candidates']:,}"),
                _td(f"{fcl['candidates_total']:,}"),
                _td(_fmt(fcl["mean_length_when_any"])),
                _td(fcl["max_length"]),
            ]
        )
    body += _table(
        [
            "operating point",
            "FPIR",
            "FNIR",
            "FNIR (rank 1)",
            "probes with false candidates",
            "false candidates",
            "mean list length",
            "longest list",
        ],
        rows,
    )
    for label, p in ident["operating_points"].items():
        for spec, info in p["by_group"].items():
            if spec == ALL:
                continue
            body += f"<h3>{_e(label)}: by {_e(spec)}</h3>" + _table(
                [spec, "FPIR", "FNIR"],
                [
                    [_td(g, True), _rate_cell(v["fpir"]), _rate_cell(v["fnir"])]
                    for g, v in info["groups"].items()
                ],
            )
            mk = info["candidate_makeup"]
            body += (
                "<p class=note>False candidates: probe group (rows) x candidate group (columns)</p>"
                + _table(
                    ["probe \\ candidate", *mk["candidate_groups"]],
                    [
                        [_td(g, True), *[_td(c) for c in row]]
                        for g, row in zip(mk["probe_groups"], mk["counts"], strict=True)
                    ],
                )
            )
    return body


def _watchlist_html(ident: dict[str, Any] | None, points: Sequence[dict[str, Any]]) -> str:
    if not ident or not ident["operating_points"]:
        return '<p class="note">Not run.</p>'
    deployed = {p["label"] for p in points if p["kind"] != "target"}
    body = (
        "<p>Probes of people who are not in the gallery, searched like a watchlist (the ACLU's 2018 test "
        "of Rekognition used similarity 80, Rekognition's default). "
        "Every match is an innocent person flagged.</p>"
    )
    for label, p in ident["operating_points"].items():
        if label not in deployed:
            continue
        w = p["watchlist"]
        body += f"<h3>{_e(label)}: {w['matched']:,} of {w['innocent_probes']:,} innocent probes matched</h3>"
        for spec, per in w["by_group"].items():
            if spec == ALL:
                continue
            body += _table(
                [spec, "innocent probes", "matched", "share", "95% CI"],
                [
                    [
                        _td(g, True),
                        _td(v["innocent_probes"]),
                        _td(v["matched"]),
                        _td(_fmt(v["matched"] / v["innocent_probes"]) if v["innocent_probes"] else "-"),
                        _td(f"[{_fmt(v['ci95'][0])}, {_fmt(v['ci95'][1])}]"),
                    ]
                    for g, v in per.items()
                ],
            )
        if w["closest_examples"]:
            keys = [
                k
                for k in w["closest_examples"][0]
                if k not in {"probe", "matched", "score", "distance", "similarity_shipped"}
            ]
            body += "<p class=note>Closest false matches</p>" + _table(
                ["probe", "matched gallery image", "score", "distance", "similarity", *keys],
                [
                    [
                        _td(x["probe"], True),
                        _td(x["matched"], True),
                        _td(f"{x['score']:.4f}"),
                        _td(f"{x['distance']:.4f}"),
                        _td(_fmt(x["similarity_shipped"])),
                        *[_td(x[k], True) for k in keys],
                    ]
                    for x in w["closest_examples"]
                ],
            )
    return body


def _acquisition_html(acq: dict[str, Any]) -> str:
    body = f"<p>No face found: {acq['no_face']:,} images; unreadable: {acq['unreadable']:,}.</p>"
    for spec, per in acq["by_group"].items():
        body += f"<h3>by {_e(spec)}</h3>" + _table(
            [spec, "failure to acquire", "quality rejected (of acquired)"],
            [
                [_td(g, True), _rate_cell(v["failure_to_acquire"]), _rate_cell(v["quality_rejected"])]
                for g, v in per.items()
            ],
        )
    return body


def _gates_html(gates: dict[str, Any] | None) -> str:
    if not gates:
        return '<p class="note">No gates file given.</p>'
    rows = [
        [
            _td(g["name"], True),
            _td(g["metric"], True),
            _td(g.get("where", ""), True),
            _td(_fmt(g.get("value"))),
            _td(g.get("limit_text", ""), True),
            f'<td class="{"pass" if g["passed"] else "fail"}">{"pass" if g["passed"] else "FAIL"}</td>',
            _td(g.get("reason", ""), True),
        ]
        for g in gates["results"]
    ]
    verdict = "all gates passed" if gates["passed"] else "at least one gate FAILED"
    return f"<p><b>{_e(verdict)}</b> ({_e(gates['file'])})</p>" + _table(
        ["gate", "metric", "where", "value", "limit", "result", "reason"], rows
    )


def write_report(data: BiasData, out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    jpath, hpath = out / "report.json", out / "report.html"
    write_json(data.report, jpath)
    hpath.write_text(render_html(data), encoding="utf-8")
    return jpath, hpath
