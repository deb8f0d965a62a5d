"""The console's defences over raw HTTP: the session cookie's flags, security headers, CSRF and
Origin checks, the required note, crops only for a session whose profile covers the lead, what the
audit log keeps of sign-ins (never a secret or a token), the session store (hashes only, idle
timeout, lifetime) and erasure reaching the crops."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from regard.api.console import SECURITY_HEADERS
from regard.api.console.sessions import SessionStore, csrf_of, digest
from regard.keys import AccessKey

from .conftest import Scenario, audit_text

pytestmark = pytest.mark.slow


def test_session_cookie_flags_and_security_headers(scenario: Scenario) -> None:
    answer = scenario.sign_in("vera")
    assert answer.status == 200
    (cookie,) = answer.cookies()
    flags = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")[1:]}
    assert "httponly" in flags and "secure" in flags
    assert flags["samesite"].lower() == "samesite=strict"
    assert flags["path"] == "Path=/console"
    token = cookie.split(";")[0].split("=", 1)[1]
    assert len(token) >= 43  # 32 random bytes, base64url
    lead_page = f"/console/leads/{scenario.lead_pending}"
    for path in (
        "/console/login",
        "/console",
        lead_page,
        "/console/static/login.js",
        "/console/nothing-here",
    ):
        got = scenario.request("GET", path, cookie=None if path == "/console/login" else token)
        assert got.status in (200, 404), (path, got.status)
        for name, value in SECURITY_HEADERS.items():
            assert got.header(name) == value, (path, name)
    page = scenario.request("GET", "/console", cookie=token).text
    assert (
        "<script>" not in page and "style=" not in page and "http://" not in page and "https://" not in page
    )


def test_state_changing_posts_need_the_sessions_csrf_token(scenario: Scenario) -> None:
    lead = scenario.lead_pending
    path = f"/console/leads/{lead}/decide"
    vera, victor = scenario.session("vera"), scenario.session("victor")
    vera_csrf, victor_csrf = scenario.csrf(vera), scenario.csrf(victor)
    assert vera_csrf != victor_csrf
    form = {"decision": "reject", "note": "not the same person"}
    assert scenario.post_form(path, vera, form).status == 403  # no token
    assert scenario.post_form(path, vera, {**form, "csrf": ""}).status == 403
    assert scenario.post_form(path, vera, {**form, "csrf": victor_csrf}).status == 403  # another session's
    assert scenario.post_form(path, vera, {**form, "csrf": vera_csrf + "x"}).status == 403
    foreign = {"Origin": "https://evil.example"}
    assert scenario.post_form(path, vera, {**form, "csrf": vera_csrf}, foreign).status == 403
    assert scenario.post_form(path, None, {**form, "csrf": vera_csrf}).status == 401  # no session
    # the note is required on the server too
    empty = scenario.post_form(path, vera, {"decision": "reject", "note": "  ", "csrf": vera_csrf})
    assert empty.status == 400 and "A note is required" in empty.text
    # logout needs the token as well: without it the session stays open
    assert scenario.post_form("/console/logout", vera, {}).status == 403
    assert scenario.request("GET", "/console", cookie=vera).status == 200
    assert scenario.lead(lead)["Decisions"] == []  # nothing was decided
    out = scenario.post_form("/console/logout", vera, {"csrf": vera_csrf})
    assert out.status == 303 and out.header("location") == "/console/login"
    assert scenario.request("GET", "/console", cookie=vera).status == 303
    assert scenario.post_form(path, vera, {**form, "csrf": vera_csrf}).status == 401


def test_crops_only_for_a_session_whose_profile_covers_the_lead(scenario: Scenario) -> None:
    lead = scenario.lead_pending
    for which in ("probe", "candidate"):
        path = f"/console/crops/{lead}/{which}"
        assert scenario.request("GET", path).status == 401
        assert scenario.request("GET", path, cookie="not-a-session").status == 401
        assert scenario.request("GET", path, cookie=scenario.session("otto")).status == 403  # other profile
        assert (
            scenario.request("GET", path, cookie=scenario.session("investigator")).status == 403
        )  # operator
        got = scenario.request("GET", path, cookie=scenario.session("vera"))
        assert got.status == 200, got.text
        assert got.header("content-type") == "image/jpeg" and got.body[:3] == b"\xff\xd8\xff"
        views = [
            r
            for r in scenario.audit()
            if r["operation"] == "ReviewEvidenceView"
            and r["parameters"] == {"via": "console", "lead_id": lead, "crop": which}
        ]
        assert [r["outcome"] for r in views][-3:] == ["error", "error", "success"]
        assert views[-1]["results"]["sha256"] == hashlib.sha256(got.body).hexdigest()
        assert got.body.hex() not in audit_text(scenario.server.data_dir)


def test_sign_in_and_refusals_are_audited_without_secrets_or_tokens(scenario: Scenario) -> None:
    akid, secret = scenario.server.keys["victor"]
    wrong = scenario.sign_in("victor", secret="x" * 40)
    assert wrong.status == 403 and wrong.cookies() == []
    unsigned = scenario.request("POST", "/console/session")
    assert unsigned.status == 403
    token = scenario.session("victor")
    records = scenario.audit()
    ins = [r for r in records if r["operation"] == "ConsoleSignIn"]
    refused = [r for r in ins if r["outcome"] == "error"]
    assert any(r.get("claimed_access_key_id") == akid and r["kind"] == "access" for r in refused)
    ok = [r for r in ins if r["outcome"] == "success" and r["access_key_id"] == akid]
    assert ok and ok[-1]["principal"] == "victor" and ok[-1]["kind"] == "access"
    text = audit_text(scenario.server.data_dir)
    assert secret not in text and token not in text and csrf_of(token) not in text
    # the session store keeps hashes only
    raw = (scenario.server.data_dir / "console.sqlite3").read_bytes()
    assert token.encode() not in raw and csrf_of(token).encode() not in raw


def test_session_store_idle_timeout_lifetime_and_hashes(tmp_path: Path) -> None:
    now = [1000.0]
    store = SessionStore(tmp_path, idle_timeout=60, lifetime=300, clock=lambda: now[0])
    key = AccessKey(
        "RGKTEST0000000000001", "vera", "verifier", "identification", "2026-01-01T00:00:00Z", None
    )
    token, session = store.open(key)
    assert session.session_hash == digest(token) and session.csrf_ok(csrf_of(token))
    assert not session.csrf_ok(None) and not session.csrf_ok(csrf_of(token + "x"))
    for _ in range(4):  # active: each request moves last_seen
        now[0] += 59
        assert store.lookup(token) is not None
    now[0] += 61  # idle past the timeout
    assert store.lookup(token) is None and store.lookup(token) is None
    token, _ = store.open(key)
    for _ in range(5):
        now[0] += 59
        assert store.lookup(token) is not None
    now[0] += 59  # 354 s after sign-in: past the lifetime however active
    assert store.lookup(token) is None
    token, session = store.open(key)
    assert store.end(session.session_hash) and store.lookup(token) is None
    with sqlite3.connect(tmp_path / "console.sqlite3") as db:
        rows = db.execute("SELECT session_hash, csrf_hash FROM console_sessions").fetchall()
    assert len(rows) == 3 and all(len(h) == 64 and len(c) == 64 for h, c in rows)


@pytest.mark.postgres
def test_session_store_in_the_shared_database(pg_url: str, tmp_path: Path) -> None:
    """With REGARD_DATABASE_URL the sessions are migration 10's table: every node honours them."""
    from regard.shared_db import PostgresDb

    key = AccessKey(
        "RGKTEST0000000000002", "victor", "verifier", "identification", "2026-01-01T00:00:00Z", None
    )
    db_a, db_b = PostgresDb(pg_url), PostgresDb(pg_url)
    try:
        node_a = SessionStore(tmp_path / "a", db=db_a, idle_timeout=60, lifetime=300)
        node_b = SessionStore(tmp_path / "b", db=db_b, idle_timeout=60, lifetime=300)
        token, session = node_a.open(key)
        seen = node_b.lookup(token)
        assert seen is not None and seen.principal == "victor" and seen.csrf_ok(csrf_of(token))
        assert node_b.end(session.session_hash) and node_a.lookup(token) is None
        with db_a.transaction(readonly=True) as cur:
            rows = cur.execute("SELECT session_hash, csrf_hash FROM console_sessions").fetchall()
        assert [tuple(r) for r in rows] == [(digest(token), digest(csrf_of(token)))]
        assert not (tmp_path / "a" / "console.sqlite3").exists()
    finally:
        db_a.close()
        db_b.close()


def test_erasure_removes_the_crops_of_leads_about_the_face(
    scenario: Scenario, photos: dict[str, bytes]
) -> None:
    """Runs last: it erases a face of its own (biden), enrolled and searched here."""
    from regard.cli.main import main

    from .conftest import CASE, PROVENANCE, _search

    server = scenario.server
    admin = server.client("admin", {**CASE, **PROVENANCE})
    face_id = admin.index_faces(CollectionId="watch", Image={"Bytes": photos["biden"]})["FaceRecords"][0][
        "Face"
    ]["FaceId"]
    _search(server, "rhea", photos["biden"])
    status, body = server.signed("vera", "GET", "/regard/review/leads")
    assert status == 200, body
    (lead,) = [x["LeadId"] for x in body["Leads"] if x["FaceId"] == face_id]
    with sqlite3.connect(server.data_dir / "evidence.sqlite3") as db:
        row = db.execute(
            "SELECT probe_crop, candidate_crop FROM lead_evidence WHERE lead_id = ?", (lead,)
        ).fetchone()
        enrolled = db.execute("SELECT crop FROM enrolled_crops WHERE face_id = ?", (face_id,)).fetchone()
    assert row is not None and row[0] and row[1] and enrolled is not None
    ciphertexts = [bytes(row[0]), bytes(row[1]), bytes(enrolled[0])]
    assert all(_files_holding(server.data_dir, c) for c in ciphertexts), "the scan must see them while kept"
    for c in ciphertexts:  # only the evidence store holds them (not the audit log, not the queue)
        assert all(p.name.startswith("evidence.sqlite3") for p in _files_holding(server.data_dir, c))

    rc = main(
        ["erase", "--face-id", face_id, "--collection", "watch", "--yes", "--data-dir", str(server.data_dir)]
    )
    assert rc in (0, None)
    with sqlite3.connect(server.data_dir / "evidence.sqlite3") as db:
        assert db.execute("SELECT 1 FROM lead_evidence WHERE lead_id = ?", (lead,)).fetchone() is None
        assert db.execute("SELECT 1 FROM enrolled_crops WHERE face_id = ?", (face_id,)).fetchone() is None
    for c in ciphertexts:
        assert _files_holding(server.data_dir, c) == []
    vera = scenario.session("vera")
    assert scenario.request("GET", f"/console/crops/{lead}/probe", cookie=vera).status == 404


def _files_holding(root: Path, ciphertext: bytes) -> list[Path]:
    """The files holding any piece of ``ciphertext``: SQLite splits a value longer than a page over
    overflow pages (each starts with the next page's number), so it is looked for as 64-byte
    pieces taken every 512 bytes, each well inside one page."""
    pieces = [ciphertext[i : i + 64] for i in range(0, max(1, len(ciphertext) - 64), 512)]
    found = []
    for p in root.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            if any(piece in data for piece in pieces):
                found.append(p)
    return found
