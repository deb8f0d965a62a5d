"""Write ``report.json`` and a self-contained ``report.html`` (plots embedded as base64 PNG)."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from regard.evaluation.bias import ALL, BiasData
from regard.evaluation.figures import fig_calibration, fig_cross, fig_det, fig_distributions, fig_vs_threshold

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


def _ratio_cell(x: dict[str, Any], key: str) -> str:
    """A differential's ratio with its simultaneous 95% interval, when the audit computed one."""
    text = _fmt(x[key])
    ci = (x.get("ci95_simultaneous") or {}).get(key)
    if ci:
        text += f" <small>95% [{_fmt(ci[0])}, {_fmt(ci[1])}]</small>"
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
                        _ratio_cell(x, "max_over_min"),
                        _ratio_cell(x, "max_over_geomean"),
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
    if body:
        body += (
            '<p class="note">95% [..]: where the ratio can lie, given every group\'s subject-bootstrap '
            "interval at once (each at level 1 - 0.05/groups). A few dozen errors per group leave it wide; "
            "an interval reaching past a limit means the data do not show the limit is met.</p>"
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
                    ci = (x.get("ci95_simultaneous") or {}).get("max_over_geomean")
                    interval = f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""
                    text += (
                        f" {metric.upper()} by {_e(spec)}: max/geomean {_fmt(x['max_over_geomean'])}"
                        f"{interval}, worst {_e(x['worst_group'])}."
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
        d = acq.get("differentials", {}).get(spec, {}).get("failure_to_acquire")
        if d and d["max_over_min"] is not None:
            body += _table(
                ["failure to acquire", "max/min", "max/geomean", "worst", "best", "zero-error groups"],
                [
                    [
                        _td(f"by {spec}", True),
                        _ratio_cell(d, "max_over_min"),
                        _ratio_cell(d, "max_over_geomean"),
                        _td(d["worst_group"] or "-"),
                        _td(d["best_group"] or "-"),
                        _td(", ".join(d["zero_count_groups"]) or "-"),
                    ]
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
