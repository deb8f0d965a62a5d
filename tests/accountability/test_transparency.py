"""``regard transparency`` over a data directory populated by a scripted scenario through a live
``regard serve``: enrolment, identification searches with boto3 under the identification profile
(leads raised), two-person review (a confirmation, a rejection), an erasure and a subject-access
request from the command line. Every number of transparency.json is checked against counts made
here from the audit records; no FaceId, ExternalImageId, case reference or lead id is in either
file; the page renders in headless Chromium with every section."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from chromium import CHROMIUM, dump_dom
from live_server import KeyedServer, start_keyed
from regard.accountability.audit import AuditLog, parse_time
from regard.accountability.transparency import SECTIONS, Period
from regard.cli.main import main
from regard.face.engine import Engine

from .test_drift import FORM, SCORING, _decide_leads, approved_assessment, binomial_tail, evaluation

CASE_REFERENCE = "CASE-TR-4711"
PURPOSE = "locate a missing person"
OTHER_PURPOSE = "identify an unknown victim"
IDENTIFICATION = {"SearchFaces", "SearchFacesByImage", "SearchUsers", "SearchUsersByImage"}
PREDICTED = 0.05


@pytest.fixture(scope="module")
def scenario(
    tmp_path_factory: pytest.TempPathFactory, engine: Engine, photos: dict[str, bytes]
) -> Iterator[dict[str, Any]]:
    """The data directory after the scenario, the report's folder and what the scenario made."""
    root = tmp_path_factory.mktemp("transparency")
    data = root / "data"
    data.mkdir()
    server: KeyedServer = start_keyed(
        data,
        {
            "admin": ("admin", "admin"),
            "investigator": ("operator", "identification"),
            "vera": ("verifier", "identification"),
            "victor": ("verifier", "identification"),
        },
    )
    secrets: dict[str, Any] = {"external_image_ids": ["tr-person-1", "tr-person-2"]}
    try:
        scoring = {"model": engine.model_identity.key, **engine.scorer.identity()}
        assessment = approved_assessment(data, ["watch"], scoring, PREDICTED)
        admin = server.client("admin")
        admin.create_collection(CollectionId="watch")
        face_ids = [
            admin.index_faces(CollectionId="watch", Image={"Bytes": photos[name]}, ExternalImageId=ext)[
                "FaceRecords"
            ][0]["Face"]["FaceId"]
            for name, ext in (("obama", "tr-person-1"), ("biden", "tr-person-2"))
        ]
        bare = server.client("investigator")
        with pytest.raises(bare.exceptions.AccessDeniedException):  # no purpose: refused
            bare.search_faces_by_image(CollectionId="watch", Image={"Bytes": photos["obama2"]})
        inv = server.client(
            "investigator", {"x-regard-purpose": PURPOSE, "x-regard-case-reference": CASE_REFERENCE}
        )
        other = server.client(
            "investigator", {"x-regard-purpose": OTHER_PURPOSE, "x-regard-case-reference": CASE_REFERENCE}
        )
        for client, name in ((inv, "obama2"), (inv, "obama3"), (other, "biden")):
            found = client.search_faces_by_image(CollectionId="watch", Image={"Bytes": photos[name]})
            assert found["FaceMatches"], name
        inv.detect_faces(Image={"Bytes": photos["obama"]})  # another biometric operation
        status, body = server.signed("vera", "GET", "/regard/review/leads")
        assert status == 200
        leads = body["Leads"]
        assert len(leads) == 3
        by_face: dict[str, list[str]] = {}
        for lead in leads:
            by_face.setdefault(lead["FaceId"], []).append(lead["LeadId"])
        obama_leads = by_face[face_ids[0]]
        assert len(obama_leads) == 2
        for who in ("vera", "victor"):  # the first obama lead: confirmed by two verifiers
            status, _ = server.signed(who, "POST", f"/regard/review/leads/{obama_leads[0]}/confirm", {})
            assert status == 200
        status, _ = server.signed("vera", "POST", f"/regard/review/leads/{obama_leads[1]}/reject", {})
        assert status == 200
        # erasure of the second person (its pending lead goes with it) and a subject-access request
        assert main(["erase", "--external-image-id", "tr-person-2", "--yes", "--data-dir", str(data)]) == 0
        assert main(["subject-access", "--external-image-id", "tr-person-1", "--data-dir", str(data)]) == 0
        secrets.update(face_ids=face_ids, lead_ids=[x["LeadId"] for x in leads])
    finally:
        server.stop()
    out = root / "report"
    today = datetime.now(UTC).date()
    since, until = today - timedelta(days=40), today + timedelta(days=1)
    assert main(["transparency", "--since", str(since), "--until", str(until), "--out", str(out),
                 "--data-dir", str(data)]) == 0  # fmt: skip
    yield {
        "data": data,
        "out": out,
        "assessment": assessment,
        "period": Period(parse_time(str(since)), parse_time(str(until))),
        **secrets,
    }


def _report(scenario: dict[str, Any]) -> dict[str, Any]:
    report: dict[str, Any] = json.loads((scenario["out"] / "transparency.json").read_text())
    return report


def _records(scenario: dict[str, Any], report: dict[str, Any]) -> list[dict[str, Any]]:
    """The audit records the report covers: up to its head, in its period."""
    head = report["audit"]["head"]["seq"]
    period: Period = scenario["period"]
    return [
        r
        for r in AuditLog(scenario["data"]).records()
        if r["seq"] <= head and period.since <= parse_time(r["time"]) < period.until
    ]


def _month(rec: dict[str, Any]) -> str:
    return str(rec["time"])[:7]


def test_searches_leads_and_requests_match_the_audit_log(scenario: dict[str, Any]) -> None:
    report = _report(scenario)
    records = _records(scenario, report)
    assert report["audit"]["records_in_period"] == len(records)

    # searches per month, kind, profile, purpose and operation, with outcomes
    expected: dict[tuple[str, str, str, str | None, str], Counter[str]] = {}
    for r in records:
        if r["kind"] != "biometric":
            continue
        kind = "identification" if r["operation"] in IDENTIFICATION else "other"
        if r["outcome"] == "success":
            outcome = "success"
        elif r["error"]["code"] == "AccessDeniedException":
            outcome = "refused"
        else:
            outcome = "failed"
        key = (_month(r), kind, r["profile"], r.get("purpose") or None, r["operation"])
        expected.setdefault(key, Counter())[outcome] += 1
    got = {
        (x["month"], x["category"], x["profile"], x["purpose"], x["operation"]): x
        for x in report["searches"]["rows"]
    }
    assert set(got) == set(expected)
    for key, c in expected.items():
        row = got[key]
        assert (row["success"], row["refused"], row["failed"]) == (c["success"], c["refused"], c["failed"])
        assert row["total"] == sum(c.values())
    ident = report["searches"]["totals"]["identification"]
    assert ident == {
        "total": sum(sum(c.values()) for k, c in expected.items() if k[1] == "identification"),
        "success": sum(c["success"] for k, c in expected.items() if k[1] == "identification"),
        "refused": sum(c["refused"] for k, c in expected.items() if k[1] == "identification"),
        "failed": sum(c["failed"] for k, c in expected.items() if k[1] == "identification"),
    }
    assert (ident["success"], ident["refused"]) == (3, 1)  # the scenario's three searches, one refused
    purposes = {x["purpose"] for x in report["searches"]["rows"] if x["category"] == "identification"}
    assert {PURPOSE, OTHER_PURPOSE} <= purposes

    # leads per month: raised by searches, made final by reviewers
    raised: Counter[str] = Counter()
    final: dict[str, Counter[str]] = {}
    for r in records:
        if r["kind"] == "biometric" and r["outcome"] == "success":
            raised[_month(r)] += sum(1 for m in r["results"].get("matches", []) if m.get("lead_id"))
        if (
            r["kind"] == "review"
            and r["outcome"] == "success"
            and r["operation"] in ("ReviewConfirm", "ReviewReject")
        ):
            status = r["results"]["lead_status"]
            if status in ("CONFIRMED", "REJECTED"):
                final.setdefault(_month(r), Counter())[status] += 1
    months = {m["month"]: m for m in report["leads"]["months"]}
    assert list(months) == report["period"]["months"]
    for month, row in months.items():
        confirmed, rejected = (
            final.get(month, Counter())["CONFIRMED"],
            final.get(month, Counter())["REJECTED"],
        )
        assert (row["raised"], row["confirmed"], row["rejected"]) == (raised[month], confirmed, rejected)
        assert row["decided"] == confirmed + rejected
        assert row["rejected_share"] == (rejected / (confirmed + rejected) if confirmed + rejected else None)
    assert report["leads"]["totals"] == {
        "raised": 3,
        "confirmed": 1,
        "rejected": 1,
        "decided": 2,
        "rejected_share": 0.5,
    }
    assert sum(raised.values()) == 3

    # erasure and subject-access requests per month
    requests: dict[str, Counter[str]] = {}
    for r in records:
        if r["kind"] == "admin" and r["operation"] in ("Erase", "SubjectAccess"):
            c = requests.setdefault(_month(r), Counter())
            name = "erasures" if r["operation"] == "Erase" else "subject_access"
            c[name if r["outcome"] == "success" else name + "_failed"] += 1
            if r["operation"] == "Erase" and r["outcome"] == "success":
                c["faces_erased"] += len(r["results"]["DeletedFaces"])
    for row in report["requests"]["months"]:
        c = requests.get(row["month"], Counter())
        assert {k: v for k, v in row.items() if k != "month"} == {
            k: c[k]
            for k in (
                "erasures",
                "erasures_failed",
                "faces_erased",
                "subject_access",
                "subject_access_failed",
            )
        }
    assert report["requests"]["totals"]["erasures"] == 1
    assert report["requests"]["totals"]["faces_erased"] == 1
    assert report["requests"]["totals"]["subject_access"] == 1


def test_assessments_drift_and_audit_head(scenario: dict[str, Any]) -> None:
    report = _report(scenario)
    assessment = scenario["assessment"]
    part = report["assessments"]
    assert part["in_force_during_period"] == [assessment.assessment_id]
    assert part["in_force_now"] == [assessment.assessment_id]
    assert part["created"] == 1
    (item,) = part["items"]
    assert item["status"] == "APPROVED" and item["stale_because"] is None
    assert item["collections"] == ["watch"] and item["predicted_rejection_share"] == PREDICTED
    assert item["decided_at"] == assessment.decision.at
    (cited,) = item["reports"]
    assert [(g["name"], g["passed"]) for g in cited["gates"]] == [("fpir_at_floor", True)]
    assert set(cited["gates"][0]) == {"name", "where", "value", "limit", "passed"}

    # the drift test over the leads decided since the approval: 1 rejected of 2
    (test,) = report["drift"]["tests"]
    assert test["assessment_id"] == assessment.assessment_id and test["tested"] is True
    assert (test["leads"], test["rejected"], test["flagged"]) == (2, 1, False)
    assert test["p_value"] == pytest.approx(binomial_tail(1, 2, PREDICTED), rel=1e-9)
    drift_records = [r for r in _records(scenario, report) if r.get("operation") == "DriftDetected"]
    assert report["drift"]["records"] == [] == drift_records

    # the head of the chain the report was made from, and the chain verifies
    records = list(AuditLog(scenario["data"]).records())
    head = report["audit"]["head"]
    (at_head,) = [r for r in records if r["seq"] == head["seq"]]
    assert at_head["hash"] == head["hash"]
    assert report["audit"]["verify"]["ok"] is True and report["audit"]["verify"]["head_hash"] == head["hash"]
    # the report itself is recorded after its head
    (made,) = [r for r in records if r["operation"] == "TransparencyReport"]
    assert made["seq"] == head["seq"] + 1 and made["results"]["head_seq"] == head["seq"]
    assert main(["audit", "verify", "--data-dir", str(scenario["data"])]) == 0


def test_no_identifier_of_anyone_searched_in_either_file(scenario: dict[str, Any]) -> None:
    texts = [(scenario["out"] / name).read_text() for name in ("transparency.json", "transparency.html")]
    secrets = [CASE_REFERENCE, *scenario["face_ids"], *scenario["external_image_ids"], *scenario["lead_ids"]]
    assert len(secrets) == 8
    for text in texts:
        for secret in secrets:
            assert secret not in text
    # the records do hold them: the check above is not vacuous
    log = "\n".join(json.dumps(r) for r in AuditLog(scenario["data"]).records())
    assert CASE_REFERENCE in log and scenario["lead_ids"][0] in log


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_the_page_renders_in_headless_chromium_with_every_section(
    scenario: dict[str, Any], tmp_path: Path
) -> None:
    page = scenario["out"] / "transparency.html"
    text = page.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text
    assert text.count("data:image/png;base64,") == 1
    assert CHROMIUM is not None
    dom = dump_dom(page, tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "chrome-error://" not in dom.stdout
    assert "Uncaught" not in dom.stderr and ":CONSOLE(" not in dom.stderr
    for sid, _ in SECTIONS:
        assert f'id="{sid}"' in dom.stdout
    assert "regard transparency report" in dom.stdout


@pytest.mark.postgres
def test_the_report_from_the_shared_database(pg_url: str, tmp_path: Path) -> None:
    """``regard transparency --database-url``: the chain, assessments and policy in PostgreSQL."""
    from regard.accountability.assessment import new_record, validate_form
    from regard.accountability.reviewing import ReviewDesk
    from regard.workspace import Workspace

    data = tmp_path / "data"
    ws = Workspace.open(data_dir=data, database_url=pg_url)
    try:
        store = ws.assessments()
        policies = ws.policies()
        made = store.create(
            new_record(
                profile=policies.load().profile("identification"),
                collections=["watch*"],
                scoring=SCORING,
                form=validate_form(FORM),
                form_sha256="cd" * 32,
                reports=[evaluation(PREDICTED)],
                created_by="operator",
                created_by_key=None,
                now=datetime.now(UTC),
            )
        )
        store.decide(made.assessment_id, "approve", principal="assessor", role="assessor",
                     access_key_id=None, note="checked")  # fmt: skip
        _decide_leads(ReviewDesk(ws.audit(), ws.review(), policies, store), [False, True, False])
    finally:
        ws.close()
    out = tmp_path / "report"
    argv = ["transparency", "--out", str(out), "--data-dir", str(data), "--database-url", pg_url]
    assert main(argv) == 0
    report = json.loads((out / "transparency.json").read_text())
    assert report["leads"]["totals"] == {
        "raised": 0,  # leads added to the queue directly: no search record raised them
        "confirmed": 2,
        "rejected": 1,
        "decided": 3,
        "rejected_share": 1 / 3,
    }
    (test,) = report["drift"]["tests"]
    assert (test["assessment_id"], test["leads"], test["rejected"]) == (made.assessment_id, 3, 1)
    assert report["audit"]["verify"]["ok"] is True
    assert "CASE-1" not in (out / "transparency.json").read_text() + (out / "transparency.html").read_text()
    assert not (data / "assessments.sqlite3").exists() and not (data / "audit").exists()
