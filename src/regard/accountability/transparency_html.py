"""Write the transparency report: ``transparency.json`` and a self-contained ``transparency.html``.

The conventions of the evaluation report (:mod:`regard.evaluation.report`): one file, CSS inline,
the plot a base64 PNG drawn with matplotlib, no script and no external asset; a section per part
of the data (:data:`regard.accountability.transparency.SECTIONS`) with a stable ``id``.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from regard.accountability.transparency import SECTIONS

JSON_NAME = "transparency.json"
HTML_NAME = "transparency.html"

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222;
line-height:1.4;padding:0 1rem}
h1{font-size:1.6rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.2rem}
h3{font-size:1.05rem;margin-top:1.4rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.85rem}
td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:right;vertical-align:top}
th{background:#f2f2f2}td.l,th.l{text-align:left}
.na{color:#999}.fail{color:#b00;font-weight:bold}.pass{color:#070;font-weight:bold}
.flag{background:#fde2e2;border:1px solid #b00;padding:.5rem .8rem;margin:.6rem 0}
img{max-width:100%;display:block;margin:.5rem 0}.note{color:#555;font-size:.85rem}code{font-size:.85rem}
"""


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write both files into ``out`` (created); returns (html, json) paths."""
    out.mkdir(parents=True, exist_ok=True)
    jpath = out / JSON_NAME
    hpath = out / HTML_NAME
    write_json(report, jpath)
    hpath.write_text(render_html(report), encoding="utf-8")
    return hpath, jpath


# -- helpers ---------------------------------------------------------------------------------------


def _e(v: Any) -> str:
    return html.escape(str(v))


def _cell(v: Any, left: bool = False) -> str:
    cls = ' class="l"' if left else ""
    if v is None:
        return f'<td{cls}><span class="na">-</span></td>'
    if isinstance(v, bool):
        return f'<td{cls}><span class="{"pass" if v else "fail"}">{"yes" if v else "no"}</span></td>'
    if isinstance(v, float):
        return f"<td{cls}>{v:.3g}</td>"
    return f"<td{cls}>{_e(v)}</td>"


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1) -> str:
    """A table whose first ``left`` columns are text (left-aligned)."""
    if not rows:
        return '<p class="note">None in this period.</p>'
    th = "".join(f"<th{' class=l' if i < left else ''}>{_e(h)}</th>" for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(_cell(v, i < left) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _share(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{_e(title)}</h2>{body}</section>'


# -- the figure ------------------------------------------------------------------------------------


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def fig_rejection_share(months: Sequence[dict[str, Any]], predicted: Sequence[tuple[str, float]]) -> str:
    """The share of leads reviewers rejected each month, against each assessment's prediction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    x = list(range(len(months)))
    shown = [(i, m) for i, m in zip(x, months, strict=True) if m["decided"]]
    if shown:
        ax.plot(
            [i for i, _ in shown],
            [m["rejected_share"] for _, m in shown],
            "o-",
            color="tab:red",
            label="observed: share of decided leads rejected",
        )
        for i, m in shown:
            ax.annotate(
                f"{m['rejected']}/{m['decided']}",
                (i, m["rejected_share"]),
                fontsize=7,
                xytext=(3, 4),
                textcoords="offset points",
            )
    styles = ["--", ":", "-.", (0, (5, 5))]
    for n, (aid, share) in enumerate(predicted):
        ax.axhline(share, color="black", ls=styles[n % len(styles)], lw=1, label=f"predicted by {aid}")
    ax.set_xticks(x)
    ax.set_xticklabels([m["month"] for m in months], rotation=45, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of leads rejected")
    ax.set_title("Leads rejected by reviewers, per month")
    if shown or predicted:
        ax.legend(fontsize=7)
    return _png(fig)


# -- the page --------------------------------------------------------------------------------------


def _assessments_html(part: dict[str, Any]) -> str:
    items = part["items"]
    rows = [
        [
            a["assessment_id"],
            a["profile"],
            ", ".join(a["collections"]),
            a["status"],
            a["created_at"],
            a["decided_at"],
            a["expires_at"],
            a["in_force_during_period"],
            a["in_force_now"],
            a["stale_because"] or a["suspension_reason"],
            _share(a["predicted_rejection_share"]),
        ]
        for a in items
    ]
    out = [
        f"<p>{len(items)} assessments; {part['created']} created in this period; in force during it: "
        f"{_e(', '.join(part['in_force_during_period']) or 'none')}; in force now: "
        f"{_e(', '.join(part['in_force_now']) or 'none')}.</p>",
        _table(
            [
                "assessment",
                "profile",
                "collections",
                "status",
                "created",
                "decided",
                "expires",
                "in force (period)",
                "in force (now)",
                "why not now",
                "predicted rejected",
            ],
            rows,
            left=7,
        ),
    ]
    for a in items:
        out.append(f'<h3 id="assessment-{_e(a["assessment_id"])}">{_e(a["assessment_id"])}</h3>')
        form = a["form"]
        if form:
            rows = [[k, ("yes" if v else "no") if isinstance(v, bool) else v] for k, v in form.items()]
            out.append(_table(["field", "value"], rows, left=2))
        for r in a["reports"]:
            ds = r["dataset"]
            out.append(
                f'<p class="note">Evaluation report {_e(r["file"])} (sha256 <code>{_e(r["sha256"])}</code>), '
                f"dataset {_e(ds.get('name'))}: {_e(ds.get('images'))} images, "
                f"{_e(ds.get('subjects'))} subjects; predicted rejected share "
                f"{_share(r['predicted_rejection_share'])}.</p>"
            )
            out.append(
                _table(
                    ["gate", "where", "value", "limit", "passed"],
                    [[g["name"], g["where"], g["value"], g["limit"], g["passed"]] for g in r["gates"]],
                    left=2,
                )
            )
    return "".join(out)


def _searches_html(part: dict[str, Any]) -> str:
    totals = part["totals"]
    summary = _table(
        ["", "total", "done", "refused", "failed"],
        [[k, v["total"], v["success"], v["refused"], v["failed"]] for k, v in totals.items()],
    )
    rows = [
        [
            r["month"],
            r["category"],
            r["profile"],
            r["purpose"],
            r["operation"],
            r["total"],
            r["success"],
            r["refused"],
            r["failed"],
        ]
        for r in part["rows"]
    ]
    return (
        "<p>Biometric operations: identification (1:N searches of a gallery) and others (detection, "
        "comparison, enrolment...). Refused: denied by the policy or the assessment gate.</p>"
        + summary
        + _table(
            ["month", "kind", "profile", "purpose", "operation", "total", "done", "refused", "failed"],
            rows,
            left=5,
        )
    )


def _leads_html(part: dict[str, Any], figure: str) -> str:
    t = part["totals"]
    rows = [
        [m["month"], m["raised"], m["confirmed"], m["rejected"], m["decided"], _share(m["rejected_share"])]
        for m in part["months"]
    ]
    return (
        f"<p>{t['raised']} candidate leads raised; reviewers made {t['decided']} final: {t['confirmed']} "
        f"confirmed by two verifiers, {t['rejected']} rejected ({_share(t['rejected_share'])}). The share "
        "rejected is the false-positive rate seen in the field.</p>"
        + _table(["month", "raised", "confirmed", "rejected", "decided", "rejected share"], rows)
        + f'<img alt="share of leads rejected per month" src="{figure}">'
    )


def _drift_html(part: dict[str, Any]) -> str:
    out: list[str] = []
    for d in part["tests"]:
        if not d["tested"]:
            out.append(f'<p class="note">{_e(d["assessment_id"])}: not tested ({_e(d["why_not"])}).</p>')
            continue
        verdict = (
            f"rejected {d['rejected']} of the last {d['leads']} decided leads "
            f"({_share(d['rejected_share'])}) "
            f"against {_share(d['predicted_share'])} predicted: one-sided binomial p = {d['p_value']:.3g}"
        )
        if d["flagged"]:
            out.append(
                f'<div class="flag"><strong>Drift flagged</strong> for {_e(d["assessment_id"])}: '
                f"{_e(verdict)} &lt; {d['alpha']:g}.</div>"
            )
        else:
            out.append(f"<p>{_e(d['assessment_id'])}: no drift; {_e(verdict)}.</p>")
    if not part["tests"]:
        out.append('<p class="note">No assessment was in force during this period.</p>')
    out.append("<h3>Drift records in the audit log</h3>")
    out.append(
        _table(
            ["time", "seq", "assessment", "leads", "rejected", "p value", "suspended"],
            [
                [
                    r["time"],
                    r["seq"],
                    r["assessment_id"],
                    r["leads"],
                    r["rejected"],
                    r["p_value"],
                    r["suspended"],
                ]
                for r in part["records"]
            ],
            left=3,
        )
    )
    return "".join(out)


def _requests_html(part: dict[str, Any]) -> str:
    t = part["totals"]
    rows = [
        [
            m["month"],
            m["erasures"],
            m["faces_erased"],
            m["erasures_failed"],
            m["subject_access"],
            m["subject_access_failed"],
        ]
        for m in part["months"]
    ]
    return (
        f"<p>{t['erasures']} erasure requests served ({t['faces_erased']} faces erased), "
        f"{t['subject_access']} subject-access requests served.</p>"
        + _table(
            [
                "month",
                "erasures",
                "faces erased",
                "erasures failed",
                "subject access",
                "subject access failed",
            ],
            rows,
        )
    )


def _audit_html(part: dict[str, Any]) -> str:
    v = part["verify"]
    state = (
        f'<span class="pass">verified</span>: {v["records"]} records check out'
        if v["ok"]
        else f'<span class="fail">BROKEN</span> at seq {_e(v["broken_seq"])}: {_e(v["reason"])}'
    )
    return (
        f"<p>Head of the hash chain when this report was made: seq <code>{part['head']['seq']}</code>, "
        f"hash <code>{_e(part['head']['hash'])}</code>. Chain {state}. {part['records_in_period']} records "
        f"fall in this period.</p>"
        '<p class="note">Anyone holding a copy of the log can check this head with '
        "<code>regard audit verify --expect SEQ:HASH</code>.</p>"
    )


def render_html(report: dict[str, Any]) -> str:
    period = report["period"]
    predicted = [
        (a["assessment_id"], float(a["predicted_rejection_share"]))
        for a in report["assessments"]["items"]
        if a["in_force_during_period"] and a["predicted_rejection_share"] is not None
    ]
    figure = fig_rejection_share(report["leads"]["months"], predicted)
    bodies = {
        "assessments": _assessments_html(report["assessments"]),
        "searches": _searches_html(report["searches"]),
        "leads": _leads_html(report["leads"], figure),
        "drift": _drift_html(report["drift"]),
        "requests": _requests_html(report["requests"]),
        "audit": _audit_html(report["audit"]),
    }
    title = f"{report['title']}: {period['since'][:10]} to {period['until'][:10]}"
    toc = "".join(f'<li><a href="#{sid}">{_e(name)}</a></li>' for sid, name in SECTIONS)
    sections = "".join(_section(sid, name, bodies[sid]) for sid, name in SECTIONS)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(title)}</h1>"
        f'<p class="note">Generated {_e(report["generated_at"])}; the period includes its start and '
        "excludes its end (UTC). Counts only: no image, template, face or user id, case reference or "
        "name of anyone searched.</p>"
        f"<ul>{toc}</ul>{sections}</body></html>\n"
    )
