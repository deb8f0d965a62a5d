"""The console's HTML: server-rendered pages, every value through :func:`html.escape`, no inline
script or style (the CSS and JS are the static files of ``static/``, allowed by the CSP)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from regard.accountability.review import CONFIRMATIONS_NEEDED, PENDING

STATUS_FILTERS = (("PENDING_VERIFICATION", "Pending"), ("CONFIRMED", "Confirmed"), ("REJECTED", "Rejected"),
                  ("CLOSED", "Closed"), ("ALL", "All"))  # fmt: skip


def e(value: Any) -> str:
    """``value`` as escaped HTML text (None as an empty string)."""
    return "" if value is None else html.escape(str(value), quote=True)


def fmr_text(fmr: float | None) -> str:
    """A false-match rate as people read it: ``1 in 250,000 (4.0e-06)``."""
    if fmr is None:
        return "unknown"
    if fmr <= 0:
        return "0 (below what the calibration can tell)"
    if fmr >= 1:
        return "1 (every comparison)"
    return f"1 in {round(1 / fmr):,} ({fmr:.1e})"


def page(title: str, body: str, *, who: Mapping[str, str] | None = None, csrf: str | None = None) -> str:
    """A whole page: header with navigation (when signed in) and ``body`` (already escaped HTML)."""
    nav = ""
    if who is not None:
        links = [("/console", "Leads"), ("/console/audit", "Audit log")]
        if who.get("role") == "admin":
            links.append(("/console/admin", "Keys and profiles"))
        items = "".join(f'<li><a href="{e(href)}">{e(text)}</a></li>' for href, text in links)
        nav = (
            f'<nav aria-label="Console"><ul>{items}</ul>'
            f'<p class="who">Signed in as <strong>{e(who.get("principal"))}</strong> '
            f"({e(who.get('role'))}, profile {e(who.get('profile'))})</p>"
            f'<form method="post" action="/console/logout" class="logout">'
            f'<input type="hidden" name="csrf" value="{e(csrf)}">'
            f'<button type="submit">Sign out</button></form></nav>'
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · regard review console</title>"
        '<link rel="stylesheet" href="/console/static/console.css"></head><body>'
        f'<header><p class="brand"><a href="/console">regard · review console</a></p>{nav}</header>'
        f'<main id="main">{body}</main></body></html>'
    )


def alert(message: str | None, kind: str = "error") -> str:
    if not message:
        return ""
    return f'<div class="{e(kind)}" role="alert"><p>{e(message)}</p></div>'


def login(region: str, message: str | None = None) -> str:
    body = (
        "<h1>Sign in</h1>"
        "<p>Sign in with your regard access key. The secret stays in this page: it signs the "
        "sign-in request (AWS Signature Version 4) and is never sent.</p>"
        f'<div id="login-error" class="error" role="alert" tabindex="-1"{"" if message else " hidden"}>'
        f"<p>{e(message)}</p></div>"
        f'<form id="login" class="login" data-region="{e(region)}" method="post" action="/console/session">'
        '<p><label for="akid">Access key id</label>'
        '<input id="akid" name="akid" autocomplete="username" required spellcheck="false"></p>'
        '<p><label for="secret">Secret access key</label>'
        '<input id="secret" name="secret" type="password" autocomplete="current-password" required></p>'
        '<p><button type="submit">Sign in</button></p></form>'
        '<p class="hint">The console needs HTTPS, or a loopback address (127.0.0.1, localhost).</p>'
        '<script src="/console/static/sigv4.js"></script><script src="/console/static/login.js"></script>'
    )
    return page("Sign in", body)


def lead_rows(leads: Sequence[Mapping[str, Any]]) -> str:
    if not leads:
        return '<p class="empty">No leads here.</p>'
    rows = []
    for lead in leads:
        confirms = sum(1 for d in lead["Decisions"] if d["Decision"] == "confirm")
        rows.append(
            "<tr>"
            f'<td><a href="/console/leads/{e(lead["LeadId"])}">{e(lead["CreatedAt"])}</a></td>'
            f"<td>{e(lead['Status'])}</td><td>{e(lead['CollectionId'])}</td>"
            f"<td>{lead['Similarity']:.1f}</td><td>{e(fmr_text(lead['EstimatedFalseMatchRate']))}</td>"
            f"<td>{e(lead['Purpose'])}</td><td>{e(lead['CaseReference'])}</td>"
            f"<td>{e(lead['Requester']['Principal'])}</td>"
            f"<td>{confirms} of {CONFIRMATIONS_NEEDED}</td>"
            f'<td><a class="button" href="/console/leads/{e(lead["LeadId"])}">Review</a></td>'
            "</tr>"
        )
    return (
        '<table class="leads"><caption class="visually-hidden">Leads</caption><thead><tr>'
        '<th scope="col">Raised</th><th scope="col">Status</th><th scope="col">Collection</th>'
        '<th scope="col">Similarity</th><th scope="col">False-match rate</th><th scope="col">Purpose</th>'
        '<th scope="col">Case</th><th scope="col">Requester</th><th scope="col">Confirmations</th>'
        f'<th scope="col"><span class="visually-hidden">Open</span></th></tr></thead><tbody>{"".join(rows)}'
        "</tbody></table>"
    )


def _current(yes: bool) -> str:
    return ' aria-current="page"' if yes else ""


def lead_list(leads: Sequence[Mapping[str, Any]] | None, status: str, error: str | None) -> str:
    filters = "".join(
        f'<li><a href="/console?status={e(code)}"{_current(code == status)}>{e(name)}</a></li>'
        for code, name in STATUS_FILTERS
    )
    title = "Pending leads" if status == PENDING else f"Leads: {status.replace('_', ' ').lower()}"
    return (
        f"<h1>{e(title)}</h1>"
        f'<nav aria-label="Lead status"><ul class="filters">{filters}</ul></nav>'
        f"{alert(error)}{lead_rows(leads) if leads is not None else ''}"
    )


def _crop(lead_id: str, which: str, present: bool, label: str) -> str:
    if not present:
        return (
            '<figure class="crop"><div class="nocrop">no crop kept</div>'
            f"<figcaption>{e(label)}</figcaption></figure>"
        )
    return (
        f'<figure class="crop"><img id="{e(which)}-crop" src="/console/crops/{e(lead_id)}/{e(which)}" '
        f'width="300" height="300" alt="{e(label)}"><figcaption>{e(label)}</figcaption></figure>'
    )


def lead_page(
    lead: Mapping[str, Any],
    *,
    probe: bool,
    candidate: bool,
    floor: Mapping[str, Any],
    viewer: Mapping[str, str],
    csrf: str,
    error: str | None = None,
    done: str | None = None,
    note: str = "",
) -> str:
    lead_id = str(lead["LeadId"])
    decisions = lead["Decisions"]
    confirms = sum(1 for d in decisions if d["Decision"] == "confirm")
    requester = lead["Requester"]
    facts: list[tuple[str, str]] = [
        ("Status", str(lead["Status"])),
        ("Similarity", f"{lead['Similarity']:.2f}"),
        ("False-match rate it stands for", fmr_text(lead["EstimatedFalseMatchRate"])),
        ("Policy floor in force", _floor_text(floor)),
        ("Purpose", lead["Purpose"] or "(none given)"),
        ("Case reference", lead["CaseReference"] or "(none given)"),
        (
            "Requester",
            f"{requester['Principal'] or '(unknown)'} (key {requester['AccessKeyId'] or '-'})",
        ),
        ("Raised", str(lead["CreatedAt"])),
        ("Collection", str(lead["CollectionId"])),
        (
            "Candidate",
            f"FaceId {lead['FaceId'] or '(withdrawn)'}"
            + (f", UserId {lead['UserId']}" if lead["UserId"] else ""),
        ),
        ("Search", f"{lead['Operation']}, request {lead['RequestId']}"),
    ]
    dl = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in facts)
    if decisions:
        items = "".join(
            f"<li><strong>{e(d['Principal'])}</strong> {e(d['Decision'])}ed at {e(d['At'])}"
            + (f": <q>{e(d['Note'])}</q>" if d["Note"] else "")
            + "</li>"
            for d in decisions
        )
        so_far = f"<ul>{items}</ul>"
    else:
        so_far = "<p>No reviewer has decided yet.</p>"
    notices = []
    me = (viewer.get("principal") or "").strip().casefold()
    if (lead["Requester"]["Principal"] or "").strip().casefold() == me:
        notices.append("You requested this search: the two-person rule does not let you decide on its leads.")
    if any((d["Principal"] or "").strip().casefold() == me for d in decisions):
        notices.append("You have already decided on this lead: the second decision must be someone else's.")
    if viewer.get("role") != "verifier":
        notices.append("Only keys with the verifier role decide on leads.")
    if lead["Status"] == PENDING:
        action = (
            f'<form method="post" action="/console/leads/{e(lead_id)}/decide" class="decide">'
            f'<input type="hidden" name="csrf" value="{e(csrf)}">'
            '<p><label for="note">Note (required): what you compared and why you decide so</label>'
            f'<textarea id="note" name="note" rows="4" required maxlength="1000">{e(note)}</textarea></p>'
            '<p class="buttons"><button type="submit" name="decision" value="confirm" class="confirm">'
            "Confirm: same person</button> "
            '<button type="submit" name="decision" value="reject" class="reject">'
            "Reject: not the same person</button></p></form>"
        )
    else:
        action = (
            f'<p class="readonly">This lead is {e(lead["Status"])} (decided at {e(lead["DecidedAt"])}): '
            "read-only.</p>"
        )
    return (
        f"<h1>Lead {e(lead_id)}</h1>"
        f"{alert(done, 'done')}{alert(error)}"
        '<div class="lead-top"><div class="faces">'
        f"{_crop(lead_id, 'probe', probe, 'Probe: the searched face')}"
        f"{_crop(lead_id, 'candidate', candidate, 'Candidate: the enrolled face')}</div>"
        '<section aria-labelledby="facts"><h2 id="facts">The match</h2>'
        f'<dl class="facts">{dl}</dl></section></div>'
        f'<section aria-labelledby="sofar"><h2 id="sofar">Decisions so far ({confirms} of '
        f"{CONFIRMATIONS_NEEDED} confirmations)</h2>{so_far}</section>"
        + "".join(f'<p class="notice">{e(n)}</p>' for n in notices)
        + f'<section aria-labelledby="decide"><h2 id="decide">Your decision</h2>{action}</section>'
        '<p><a href="/console">Back to the pending leads</a></p>'
    )


def _floor_text(floor: Mapping[str, Any]) -> str:
    parts = [f"max FMR {fmr_text(floor.get('max_fmr'))}"]
    fpir = floor.get("max_fpir")
    if fpir:
        parts.append(f"max FPIR {fpir:g} per search")
    return f"profile {floor.get('profile')}: " + ", ".join(parts)


def audit_page(
    verify: Mapping[str, Any],
    head: tuple[int, str],
    transparency: Mapping[str, Any] | None,
    assessments: Iterable[Mapping[str, Any]],
) -> str:
    ok = bool(verify.get("ok"))
    status = (
        f'<p class="{"ok" if ok else "error"}" role="status">'
        f"<strong>{'Verified' if ok else 'BROKEN'}</strong>: "
        f"{e(verify.get('describe'))}</p>"
    )
    head_dl = (
        f"<dl class='facts'><dt>Head seq</dt><dd>{head[0]}</dd>"
        f"<dt>Head hash</dt><dd><code>{e(head[1])}</code></dd></dl>"
    )
    if transparency:
        link = (
            '<a href="/console/reports/transparency">transparency.json</a>'
            if transparency.get("available")
            else "(its files are no longer where it was written)"
        )
        trans = (
            f"<p>Last published {e(transparency.get('time'))} by {e(transparency.get('principal'))}, "
            f"from audit head seq {e(transparency.get('head_seq'))}, "
            f"into <code>{e(transparency.get('out'))}</code>: "
            f"{link}</p>"
        )
    else:
        trans = (
            "<p>No transparency report has been published (<code>regard transparency --out DIR</code>).</p>"
        )
    rows = []
    for a in assessments:
        reports = "; ".join(
            f"{r.get('file')} (sha256 {str(r.get('sha256'))[:16]}…, "
            f"gates {'passed' if r.get('gates_passed') else 'FAILED'})"
            for r in a.get("reports", [])
        )
        rows.append(
            f"<tr><td>{e(a.get('id'))}</td><td>{e(a.get('status'))}</td><td>{e(a.get('profile'))}</td>"
            f"<td>{e(', '.join(a.get('collections', [])))}</td><td>{e(reports)}</td></tr>"
        )
    table = (
        '<table><thead><tr><th scope="col">Assessment</th><th scope="col">Status</th>'
        '<th scope="col">Profile</th>'
        '<th scope="col">Collections</th><th scope="col">Evaluation reports</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
        if rows
        else "<p>No human-rights impact assessment is recorded.</p>"
    )
    return (
        "<h1>Audit log</h1>"
        f'<section aria-labelledby="chain"><h2 id="chain">Hash chain</h2>{status}{head_dl}</section>'
        f'<section aria-labelledby="tr"><h2 id="tr">Transparency report</h2>{trans}</section>'
        '<section aria-labelledby="ev"><h2 id="ev">Assessments and their evaluation reports</h2>'
        f"{table}</section>"
    )


def admin_page(keys: Iterable[Mapping[str, Any]], profiles: Iterable[Mapping[str, Any]]) -> str:
    key_rows = "".join(
        f"<tr><td><code>{e(k['id'])}</code></td><td>{e(k['name'])}</td><td>{e(k['role'])}</td>"
        f"<td>{e(k['profile'])}</td><td>{e(k['created'])}</td><td>{e(k['revoked'] or '')}</td></tr>"
        for k in keys
    )
    prof_rows = "".join(
        f"<tr><td>{e(p['name'])}</td><td>{e(', '.join(p['roles']))}</td>"
        f"<td>{e(', '.join(p['collections']))}</td>"
        f"<td>{e(fmr_text(p['max_fmr']))}</td><td>{e(p['max_fpir'] or '-')}</td>"
        f"<td>{'yes' if p['two_person_review'] else 'no'}</td>"
        f"<td>{'yes' if p['require_assessment'] else 'no'}</td>"
        f"<td>{e(p['description'])}</td></tr>"
        for p in profiles
    )
    return (
        "<h1>Keys and profiles</h1><p>Read-only. Change them with <code>regard keys</code> and "
        "<code>regard policy</code>.</p>"
        '<section aria-labelledby="keys"><h2 id="keys">Access keys</h2><table><thead><tr>'
        '<th scope="col">Access key id</th><th scope="col">Name</th><th scope="col">Role</th>'
        '<th scope="col">Profile</th><th scope="col">Created</th><th scope="col">Revoked</th></tr></thead>'
        f"<tbody>{key_rows}</tbody></table></section>"
        '<section aria-labelledby="profiles"><h2 id="profiles">Policy profiles</h2><table><thead><tr>'
        '<th scope="col">Profile</th><th scope="col">Roles</th><th scope="col">Collections</th>'
        '<th scope="col">Max FMR</th><th scope="col">Max FPIR</th><th scope="col">Two-person review</th>'
        '<th scope="col">Assessment required</th><th scope="col">Description</th></tr></thead>'
        f"<tbody>{prof_rows}</tbody></table></section>"
    )


def message_page(title: str, message: str, *, link: tuple[str, str] | None = None, **chrome: Any) -> str:
    more = f'<p><a href="{e(link[0])}">{e(link[1])}</a></p>' if link else ""
    return page(title, f"<h1>{e(title)}</h1>{alert(message)}{more}", **chrome)
