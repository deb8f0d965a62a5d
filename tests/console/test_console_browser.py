"""The reviewers' console in headless Chromium (Playwright driving Debian's chromium): two verifiers
confirm a lead after seeing both face crops, the requester and non-verifiers cannot decide, a
session ends at logout. Every wait is Playwright's auto-waiting on a condition, never a sleep."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Scenario

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "build" / "test-artifacts"
LAPTOP = {"width": 1366, "height": 768}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (scripts/install installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def signed_in(browser: Any, scenario: Scenario, who: str) -> Any:
    """A new browser context (its own cookies) signed in as ``who`` through the login page; its page."""
    from playwright.sync_api import expect

    context = browser.new_context(base_url=scenario.endpoint, viewport=LAPTOP)
    page = context.new_page()
    page.goto("/console")
    expect(page).to_have_url(re.compile(r"/console/login$"))  # no session yet
    akid, secret = scenario.server.keys[who]
    page.get_by_label("Access key id").fill(akid)
    page.get_by_label("Secret access key").fill(secret)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/console$"))
    expect(page.locator(".who")).to_contain_text(who)
    return page


def crop_width(page: Any, which: str) -> int:
    """The natural width of a crop once the browser has finished loading it (0: it failed)."""
    img = f"document.getElementById('{which}-crop')"
    # either the image is there and done loading, or the page says no crop is kept
    page.wait_for_function(f"() => ({img} !== null && {img}.complete) || document.querySelector('.nocrop')")
    return int(page.evaluate(f"() => {img} === null ? 0 : {img}.naturalWidth"))


def test_two_verifiers_confirm_a_lead_after_seeing_both_crops(browser: Any, scenario: Scenario) -> None:
    from playwright.sync_api import expect

    lead = scenario.lead_to_confirm
    vera = signed_in(browser, scenario, "vera")
    victor = signed_in(browser, scenario, "victor")
    for page in (vera, victor):
        row = page.locator(f'a[href="/console/leads/{lead}"]').first
        expect(row).to_be_visible()  # both see the same pending lead in their list
        row.click()
        expect(page.get_by_role("heading", name=f"Lead {lead}")).to_be_visible()
        assert crop_width(page, "probe") > 0, "the probe crop did not render"
        assert crop_width(page, "candidate") > 0, "the candidate crop did not render"
        expect(page.locator(".facts")).to_contain_text("CASE-18")
        expect(page.locator(".facts")).to_contain_text("rhea")
        expect(page.locator(".facts")).to_contain_text("max FMR 1 in 10,000")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    vera.screenshot(path=str(ARTIFACTS / "console-review.png"), full_page=True)

    # the note and both buttons are reachable from the keyboard, in order
    note = vera.get_by_label(re.compile(r"^Note \(required\)"))
    note.focus()
    note.fill("same ear shape, same scar above the left eyebrow")
    vera.keyboard.press("Tab")
    expect(vera.get_by_role("button", name="Confirm: same person")).to_be_focused()
    vera.keyboard.press("Enter")
    expect(vera.locator(".done")).to_contain_text("Your confirmation is recorded")
    expect(vera.get_by_role("heading", name=re.compile(r"1 of 2 confirmations"))).to_be_visible()
    assert scenario.lead(lead)["Status"] == "PENDING_VERIFICATION"

    # the same person cannot decide twice: the refusal is on the page
    vera.get_by_label(re.compile(r"^Note")).fill("confirming again")
    vera.get_by_role("button", name="Confirm: same person").click()
    expect(vera.get_by_role("alert")).to_contain_text("already")

    victor.reload()
    expect(victor.locator("#sofar + ul")).to_contain_text("vera")  # what the other reviewer decided
    victor.get_by_label(re.compile(r"^Note")).fill("agree: same person")
    victor.get_by_role("button", name="Confirm: same person").click()
    expect(victor.locator(".readonly")).to_contain_text("CONFIRMED")
    expect(victor.get_by_role("button", name="Confirm: same person")).to_have_count(0)  # read-only now
    assert scenario.lead(lead)["Status"] == "CONFIRMED"  # as the signed HTTP endpoint reports it
    # a decision posted on the decided lead anyway (the page has no form now) is refused on the page
    csrf = victor.locator('input[name="csrf"]').first.get_attribute("value")
    late = victor.request.post(
        f"/console/leads/{lead}/decide", form={"csrf": csrf, "decision": "reject", "note": "x"}
    )
    assert late.status == 409 and f"lead {lead} is already CONFIRMED" in late.text()

    confirms = [
        r
        for r in scenario.audit()
        if r["operation"] == "ReviewConfirm" and r["parameters"]["lead_id"] == lead
    ]
    assert [(r["principal"], r["outcome"]) for r in confirms] == [
        ("vera", "success"),
        ("vera", "error"),
        ("victor", "success"),
    ]
    views = [r for r in scenario.audit() if r["operation"] == "ReviewEvidenceView"]
    assert {(r["principal"], r["parameters"]["crop"]) for r in views} >= {
        ("vera", "probe"),
        ("vera", "candidate"),
        ("victor", "probe"),
        ("victor", "candidate"),
    }
    for page in (vera, victor):
        page.context.close()


def test_the_requester_and_non_verifiers_cannot_decide(browser: Any, scenario: Scenario) -> None:
    from playwright.sync_api import expect

    lead = scenario.lead_pending
    for who, refusal in (
        ("rhea", "requester of a search cannot review its own leads"),
        ("sam", "only keys with the verifier role may review leads"),
    ):
        page = signed_in(browser, scenario, who)
        page.goto(f"/console/leads/{lead}")
        page.get_by_label(re.compile(r"^Note")).fill(f"{who} tries to confirm")
        page.get_by_role("button", name="Confirm: same person").click()
        expect(page.get_by_role("alert")).to_contain_text(refusal)
        expect(page.get_by_role("heading", name=re.compile(r"0 of 2 confirmations"))).to_be_visible()
        page.context.close()
    # an operator does not even read the queue
    page = signed_in(browser, scenario, "investigator")
    expect(page.get_by_role("alert")).to_contain_text(
        "only verifier and admin keys may read the review queue"
    )
    page.goto(f"/console/leads/{lead}")
    expect(page.get_by_role("alert")).to_contain_text("only verifier and admin keys")
    expect(page.get_by_role("button", name="Confirm: same person")).to_have_count(0)
    page.context.close()
    # a verifier of another profile sees no lead and cannot open this one
    page = signed_in(browser, scenario, "otto")
    expect(page.locator(".empty")).to_contain_text("No leads")
    page.goto(f"/console/leads/{lead}")
    expect(page.get_by_role("alert")).to_contain_text("outside profile verification")
    page.context.close()
    found = scenario.lead(lead)
    assert found["Status"] == "PENDING_VERIFICATION" and found["Decisions"] == []


def test_a_session_is_refused_after_logout(browser: Any, scenario: Scenario) -> None:
    from playwright.sync_api import expect

    page = signed_in(browser, scenario, "victor")
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "regard_console"]
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert page.evaluate("() => document.cookie") == ""  # HttpOnly: no script reads it
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/console/login$"))
    page.context.close()

    # a third context replaying the old cookie is sent back to the login page
    again = browser.new_context(base_url=scenario.endpoint, viewport=LAPTOP)
    again.add_cookies([{**cookie}])
    page = again.new_page()
    page.goto(f"/console/leads/{scenario.lead_pending}")
    expect(page).to_have_url(re.compile(r"/console/login$"))
    again.close()
    assert scenario.request("GET", "/console", cookie=cookie["value"]).status == 303
    assert (
        scenario.request(
            "GET", f"/console/crops/{scenario.lead_pending}/probe", cookie=cookie["value"]
        ).status
        == 401
    )
    outs = [r for r in scenario.audit() if r["operation"] == "ConsoleSignOut" and r["principal"] == "victor"]
    assert [(r["kind"], r["outcome"], r["access_key_id"]) for r in outs] == [
        ("access", "success", scenario.server.keys["victor"][0])
    ]


def test_admin_pages_show_keys_and_the_audit_chain_without_secrets(browser: Any, scenario: Scenario) -> None:
    from playwright.sync_api import expect

    page = signed_in(browser, scenario, "admin")
    page.get_by_role("link", name="Keys and profiles").click()
    table = page.locator("#keys + table")
    for who in ("vera", "otto", "investigator"):
        expect(table).to_contain_text(scenario.server.keys[who][0])
    html = page.content()
    assert not any(secret in html for _, secret in scenario.server.keys.values())
    page.get_by_role("link", name="Audit log").click()
    expect(page.get_by_role("status")).to_contain_text("Verified")
    expect(page.locator("#chain + p + dl")).to_contain_text("Head seq")
    page.context.close()
    vera = signed_in(browser, scenario, "vera")
    vera.goto("/console/admin")
    expect(vera.get_by_role("alert")).to_contain_text("admin keys only")
    vera.context.close()
