"""Assessments without a server: the form's validation names every problem, the SQLite tables are
append-only, the desk's rules for readers, and the marks the guard puts on biometric records."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from regard.accountability.assessing import AssessmentDesk
from regard.accountability.assessment import FILE_NAME, AssessmentStore, read_form, validate_form
from regard.accountability.audit import AuditLog
from regard.accountability.guard import Caller, RequestInfo
from regard.accountability.policy import PolicyStore
from regard.errors import AccessDenied, InvalidParameter
from regard.face.engine import Engine

from .helpers import CASE, FORM, INVESTIGATOR, approved_assessment, endpoint, evaluation_report, write_form


def test_a_complete_form_reads_from_toml_and_json(tmp_path: Path) -> None:
    toml_form, toml_sha = read_form(write_form(tmp_path / "form.toml"))
    json_form, json_sha = read_form(write_form(tmp_path / "form.json"))
    assert toml_form == json_form == FORM
    assert len(toml_sha) == len(json_sha) == 64 and toml_sha != json_sha


def test_form_validation_names_every_problem(tmp_path: Path) -> None:
    bad = dict(FORM)
    del bad["organisation"], bad["complaints"]
    bad.update(
        purpose="  ",
        affected_people=[],
        children_affected="yes",
        expected_volume={"searches_per_month": -1, "gallery_size": 10},
        risks=["ok", ""],
        expected_mated_share=1.5,
        colour="blue",
    )
    with pytest.raises(InvalidParameter) as refused:
        validate_form(bad)
    message = refused.value.message
    for problem in (
        "unknown fields colour",
        "organisation is missing",
        "complaints is missing",
        "purpose must be a non-empty string",
        "affected_people must be a non-empty list",
        "children_affected must be true or false",
        "expected_volume must be a table of two non-negative integers",
        "risks must be a non-empty list",
        "expected_mated_share must be a number in (0, 1]",
    ):
        assert problem in message, problem
    for name in ("legal_basis", "mitigations", "human_oversight", "retention"):
        assert f"{name} must" not in message and f"{name} is missing" not in message
    (tmp_path / "broken.toml").write_text("organisation = \n", encoding="utf-8")
    with pytest.raises(InvalidParameter, match="not valid TOML or JSON"):
        read_form(tmp_path / "broken.toml")
    (tmp_path / "list.json").write_text(json.dumps([1, 2]), encoding="utf-8")
    with pytest.raises(InvalidParameter, match="must be a table of fields"):
        read_form(tmp_path / "list.json")


def test_the_sqlite_tables_are_append_only(tmp_path: Path, fr_images: Path) -> None:
    asm = approved_assessment(
        AssessmentStore(tmp_path), PolicyStore(tmp_path), ["watch"], evaluation_report(fr_images)
    )
    with sqlite3.connect(tmp_path / FILE_NAME) as conn:
        for sql in (
            "UPDATE assessments SET profile = 'verification'",
            "DELETE FROM assessments",
            "UPDATE assessment_events SET kind = 'reject'",
            "DELETE FROM assessment_events",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(sql)
    assert AssessmentStore(tmp_path).get(asm).status == "APPROVED"


def test_the_desk_lets_only_readers_read_and_records_each_call(tmp_path: Path, fr_images: Path) -> None:
    store = AssessmentStore(tmp_path)
    asm = approved_assessment(store, PolicyStore(tmp_path), ["watch"], evaluation_report(fr_images))
    audit = AuditLog(tmp_path)
    desk = AssessmentDesk(audit, store, PolicyStore(tmp_path))
    verifier = Caller("RGKVER00000000000001", "vera", "verifier", "identification")
    with pytest.raises(AccessDenied, match="may read assessments"):
        desk.list(verifier, RequestInfo("r1"))
    operator = Caller("RGKOPS00000000000001", "olga", "operator", "identification")
    (listed,) = desk.list(operator, RequestInfo("r2"), "identification")
    assert listed["AssessmentId"] == asm and listed["StaleBecause"] is None
    assert desk.list(operator, RequestInfo("r3"), "verification") == []
    assert desk.describe(asm, operator, RequestInfo("r4"))["Status"] == "APPROVED"
    with pytest.raises(AccessDenied, match="already APPROVED"):
        desk.decide(
            asm,
            "reject",
            Caller("RGKASS00000000000002", "ali", "assessor", "assessment"),
            RequestInfo("r5"),
            "no",
        )
    records = [r for r in audit.records() if r["kind"] == "assessment"]
    assert [(r["operation"], r["principal"], r["outcome"]) for r in records] == [
        ("AssessmentList", "vera", "error"),
        ("AssessmentList", "olga", "success"),
        ("AssessmentList", "olga", "success"),
        ("AssessmentDescribe", "olga", "success"),
        ("AssessmentReject", "ali", "error"),
    ]
    assert records[3]["results"]["record_sha256"] == store.get(asm).record_sha256


def test_the_guard_marks_local_and_non_gated_calls(tmp_path: Path, engine: Engine, fr_images: Path) -> None:
    image = {"Bytes": (fr_images / "obama.jpg").read_bytes()}
    ep = endpoint(tmp_path, engine)
    local = Caller(None, "local:tester", "admin", "local")
    ep.call("CreateCollection", local, CollectionId="watch")
    indexed = ep.call("IndexFaces", local, CollectionId="watch", Image=image)
    assert indexed.record["assessment"] == {"id": None, "status": "admin", "admin_call": True}
    assert ep.call("DetectFaces", INVESTIGATOR, Image=image, **CASE).record["assessment"] == {
        "id": None,
        "status": "not_required",
    }
    with pytest.raises(AccessDenied, match="regard assess create"):
        ep.call("SearchFacesByImage", INVESTIGATOR, CollectionId="watch", Image=image, **CASE)
    asm = approved_assessment(
        ep.guard.assessments, ep.guard.policies, ["watch"], evaluation_report(fr_images)
    )
    searched = ep.call("SearchFacesByImage", INVESTIGATOR, CollectionId="watch", Image=image, **CASE)
    assert searched.record["assessment"] == {"id": asm, "status": "current"}
    marked = ep.call("SearchFacesByImage", local, CollectionId="watch", Image=image)
    assert marked.record["assessment"] == {"id": asm, "status": "admin", "admin_call": True}
    records = [r for r in AuditLog(tmp_path).records() if r.get("operation") == "SearchFacesByImage"]
    assert records[0]["assessment"] == {"id": None, "status": "missing"}


def test_the_assess_commands(tmp_path: Path, fr_images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from regard.cli.main import main
    from regard.keys import KeyStore

    d = ["--data-dir", str(tmp_path)]
    report = str(evaluation_report(fr_images))
    asha, _ = KeyStore(tmp_path).create("asha", role="assessor", profile="assessment")
    capsys.readouterr()
    bad = write_form(tmp_path / "bad.json", retention=None, risks=[])
    args = ["--collection", "watch", "--report", report, "--actor", "olga", *d]
    assert main(["assess", "create", "--form", str(bad), *args]) == 2
    err = capsys.readouterr().err
    assert "retention is missing" in err and "risks must be a non-empty list" in err
    assert main(["assess", "create", "--form", str(write_form(tmp_path / "form.json")), *args]) == 0
    created = json.loads(capsys.readouterr().out)
    asm = created["AssessmentId"]
    assert created["Status"] == "PENDING_APPROVAL" and created["Scoring"]["model"].startswith("dlib")
    assert main(["assess", "list", *d]) == 0
    table = capsys.readouterr().out
    assert asm in table and "PENDING_APPROVAL" in table and "watch" in table
    assert main(["assess", "approve", asm, "--assessor-key", "RGKNOSUCHKEY00000000", "--note", "x", *d]) == 2
    assert (
        main(["assess", "approve", asm, "--assessor-key", asha.access_key_id, "--note", "checked", *d]) == 0
    )
    assert json.loads(capsys.readouterr().out)["Status"] == "APPROVED"
    assert main(["assess", "reject", asm, "--assessor-key", asha.access_key_id, "--note", "no", *d]) == 2
    assert "already APPROVED" in capsys.readouterr().err
    assert main(["assess", "show", asm, *d]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["Status"] == "APPROVED" and shown["StaleBecause"] is None
    assert shown["Record"]["form"] == FORM and shown["Events"][0]["Principal"] == "asha"
    records = [r for r in AuditLog(tmp_path).records() if r["kind"] == "assessment"]
    assert [(r["operation"], r["outcome"]) for r in records] == [
        ("AssessmentCreate", "error"),
        ("AssessmentCreate", "success"),
        ("AssessmentList", "success"),
        ("AssessmentApprove", "error"),
        ("AssessmentApprove", "success"),
        ("AssessmentReject", "error"),
        ("AssessmentDescribe", "success"),
    ]
    assert records[1]["parameters"]["assessment_id"] == asm
    assert records[1]["results"]["record_sha256"] == created["RecordSha256"]
    assert records[4]["principal"] == "asha" and records[4]["access_key_id"] == asha.access_key_id
