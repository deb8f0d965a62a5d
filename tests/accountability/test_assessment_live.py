"""No identification without an approved, current human-rights impact assessment: the gate of a
live ``regard serve`` with boto3, the assessor's sign-off over SigV4 and from the CLI, staleness
(floor, scoring identity, expiry) and the audit records."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from live_server import KeyedServer, spawn_serve, start_keyed
from regard.accountability.assessment import AssessmentStore, system_clock
from regard.accountability.audit import AuditLog
from regard.accountability.policy import PolicyStore
from regard.cli.main import main
from regard.keys import KeyStore

from .helpers import approved_assessment, evaluation_report, write_form, write_gates

CASE = {"x-regard-purpose": "locate a missing person", "x-regard-case-reference": "CASE-17"}
PROVENANCE = {"x-regard-source": "photo handed in by the family", "x-regard-legal-basis": "consent"}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[KeyedServer]:
    data = tmp_path / "data"
    data.mkdir()
    # an assessor key under the name of the operator who will create the assessment
    twin, twin_secret = KeyStore(data).create("olga", role="assessor", profile="assessment")
    s = start_keyed(
        data,
        {
            "admin": ("admin", "admin"),
            "olga": ("operator", "identification"),
            "investigator": ("operator", "identification"),
            "asha": ("assessor", "assessment"),
        },
    )
    s.keys["olga-as-assessor"] = (twin.access_key_id, twin_secret)
    yield s
    s.stop()


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def _refused(client: Any, call: str, **params: Any) -> str:
    with pytest.raises(client.exceptions.AccessDeniedException) as refused:
        getattr(client, call)(**params)
    return str(refused.value.response["Error"]["Message"])


@pytest.mark.slow
def test_identification_needs_an_approved_current_assessment(
    server: KeyedServer,
    photos: dict[str, bytes],
    fr_images: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    d = ["--data-dir", str(server.data_dir)]
    report = evaluation_report(fr_images)
    form = write_form(tmp_path / "form.toml")
    admin = server.client("admin", {**CASE, **PROVENANCE})
    admin.create_collection(CollectionId="watch")
    # admin keys keep working for setup: never gated, their records marked
    face_id = admin.index_faces(CollectionId="watch", Image={"Bytes": photos["obama"]})["FaceRecords"][0][
        "Face"
    ]["FaceId"]
    admin.create_user(CollectionId="watch", UserId="obama")
    admin.associate_faces(CollectionId="watch", UserId="obama", FaceIds=[face_id])
    inv = server.client("investigator", {**CASE, **PROVENANCE})
    probe = {"Bytes": photos["obama2"]}

    # 1. before any assessment: every 1:N search and IndexFaces refused, naming the step
    for call, params in (
        ("search_faces_by_image", {"CollectionId": "watch", "Image": probe}),
        ("search_faces", {"CollectionId": "watch", "FaceId": face_id}),
        ("search_users", {"CollectionId": "watch", "UserId": "obama"}),
        ("search_users_by_image", {"CollectionId": "watch", "Image": probe}),
        ("index_faces", {"CollectionId": "watch", "Image": {"Bytes": photos["obama3"]}}),
    ):
        message = _refused(inv, call, **params)
        assert "regard assess create" in message and "watch" in message, (call, message)
    # DetectFaces is no identification: not gated
    assert inv.detect_faces(Image=probe)["FaceDetails"]

    # 2. the operator creates an assessment: pending until an assessor approves
    rc, out, _ = _cli(
        capsys, "assess", "create", "--collection", "watch*", "--form", str(form),
        "--report", str(report), "--actor", "olga", *d,
    )  # fmt: skip
    assert rc == 0
    created = json.loads(out)
    asm = created["AssessmentId"]
    assert created["Status"] == "PENDING_APPROVAL" and created["GatesPassed"] is True
    assert created["Reports"][0]["Sha256"] and created["FormSha256"]
    assert created["Collections"] == ["watch*"] and created["Floor"] == {"max_fmr": 1e-4, "max_fpir": 1e-3}
    message = _refused(inv, "search_faces_by_image", CollectionId="watch", Image=probe)
    assert f"regard assess approve {asm}" in message

    # 3. nobody but an assessor other than the creator approves it
    path = f"/regard/assessments/{asm}/approve"
    status, body = server.signed("olga", "POST", path, {"Note": "looks fine to me"})
    assert status == 400 and body["__type"] == "AccessDeniedException" and "assessor role" in body["message"]
    status, body = server.signed("olga-as-assessor", "POST", path, {"Note": "mine, approved"})
    assert status == 400 and "olga created assessment" in body["message"]
    rc, _, err = _cli(
        capsys, "assess", "approve", asm, "--assessor-key", server.keys["olga-as-assessor"][0],
        "--note", "mine", *d,
    )  # fmt: skip
    assert rc == 2 and "may not approve" in err
    status, body = server.signed("asha", "POST", path, {})
    assert status == 400 and "needs a note" in body["message"]

    # 4. a failed gate in an attached report blocks approval
    failing = write_gates(tmp_path / "failing.toml", passing=False)
    rc, out, _ = _cli(
        capsys, "assess", "create", "--collection", "blocked", "--form", str(form), "--report", str(report),
        "--gates", str(failing), "--actor", "olga", *d,
    )  # fmt: skip
    assert rc == 0
    blocked = json.loads(out)
    assert blocked["GatesPassed"] is False and blocked["Reports"][0]["Gates"][0]["passed"] is False
    status, body = server.signed("asha", "POST", f"/regard/assessments/{blocked['AssessmentId']}/approve", {
        "Note": "checked"
    })  # fmt: skip
    assert status == 400 and "gates failed" in body["message"] and "faceless" in body["message"]

    # 5. the assessor approves over HTTP: identification is allowed
    status, body = server.signed("asha", "POST", path, {"Note": "form complete; own-data evaluation passes"})
    assert status == 200 and body["Status"] == "APPROVED" and body["StaleBecause"] is None
    assert body["Events"][0]["Principal"] == "asha"
    status, listed = server.signed("asha", "GET", "/regard/assessments")
    assert status == 200
    assert {a["AssessmentId"]: a["Status"] for a in listed["Assessments"]} == {
        asm: "APPROVED",
        blocked["AssessmentId"]: "PENDING_APPROVAL",
    }
    status, one = server.signed("olga", "GET", f"/regard/assessments/{asm}")
    assert status == 200 and one["RecordSha256"] == created["RecordSha256"]
    status, body = server.signed("investigator", "POST", f"/regard/assessments/{asm}/reject", {"Note": "x"})
    assert status == 400 and body["__type"] == "AccessDeniedException"

    found = inv.search_faces_by_image(CollectionId="watch", Image=probe)
    assert [m["Face"]["FaceId"] for m in found["FaceMatches"]] == [face_id]
    assert inv.search_faces(CollectionId="watch", FaceId=face_id)["FaceMatches"] == []
    assert [m["User"]["UserId"] for m in inv.search_users_by_image(CollectionId="watch", Image=probe)[
        "UserMatches"
    ]] == ["obama"]  # fmt: skip
    inv.index_faces(CollectionId="watch", Image={"Bytes": photos["biden"]})

    # 6. the floor is lowered: the gate closes; restored, it opens again
    assert _cli(capsys, "policy", "set", "identification", "max_fpir", "0.01", *d)[0] == 0
    message = _refused(inv, "search_faces_by_image", CollectionId="watch", Image=probe)
    assert "floor was lowered" in message and "regard assess create" in message
    assert _cli(capsys, "policy", "set", "identification", "max_fpir", "0.001", *d)[0] == 0
    inv.search_faces_by_image(CollectionId="watch", Image=probe)

    # 7. an assessment that expired (made and approved 366 days ago) does not open the gate
    admin.create_collection(CollectionId="old")
    then = system_clock() - timedelta(days=366)
    old = approved_assessment(
        AssessmentStore(server.data_dir, clock=lambda: then), PolicyStore(server.data_dir), ["old"], report
    )
    message = _refused(inv, "search_faces_by_image", CollectionId="old", Image=probe)
    assert f"assessment {old} no longer holds, it expired" in message and "regard assess create" in message
    rc, out, _ = _cli(capsys, "assess", "list", "--json", *d)
    stale = {a["AssessmentId"]: a["StaleBecause"] for a in json.loads(out)}
    assert stale[asm] is None and stale[old].startswith("it expired")

    # every identification search names the assessment in force; admin calls are marked
    records = server.audit()
    searches = [
        r for r in records if r["principal"] == "investigator" and r["operation"].startswith("Search")
    ]
    allowed = [r["assessment"] for r in searches if r["outcome"] == "success"]
    refused = [r["assessment"] for r in searches if r["outcome"] == "error"]
    assert allowed == [{"id": asm, "status": "current"}] * 4
    assert refused == [{"id": None, "status": "missing"}] * 7
    admin_index = [
        r
        for r in records
        if r["kind"] == "biometric" and r["principal"] == "admin" and r["operation"] == "IndexFaces"
    ]
    assert admin_index[0]["assessment"] == {"id": None, "status": "admin", "admin_call": True}
    detect = next(r for r in records if r["operation"] == "DetectFaces")
    assert detect["assessment"] == {"id": None, "status": "not_required"}
    decisions = [r for r in records if r["operation"] == "AssessmentApprove"]
    assert [(r["principal"], r["outcome"]) for r in decisions] == [
        ("olga", "error"),
        ("olga", "error"),
        ("olga", "error"),
        ("asha", "error"),
        ("asha", "error"),
        ("asha", "success"),
    ]
    assert decisions[-1]["parameters"]["assessment_id"] == asm and decisions[-1]["kind"] == "assessment"
    assert decisions[-1]["results"] == {"status": "APPROVED", "record_sha256": created["RecordSha256"]}
    assert decisions[-1]["access_key_id"] == server.keys["asha"][0] and decisions[-1]["role"] == "assessor"
    creations = [r for r in records if r["operation"] == "AssessmentCreate"]
    assert [r["parameters"]["assessment_id"] for r in creations] == [asm, blocked["AssessmentId"]]
    assert _cli(capsys, "audit", "verify", *d)[0] == 0

    # an admin search after approval is marked and names the assessment that covers it
    admin.search_faces_by_image(CollectionId="watch", Image=probe)
    last = server.audit()[-1]
    assert last["assessment"] == {"id": asm, "status": "admin", "admin_call": True}

    # 8. the scoring in force changes (another normalizer and calibration table): the gate closes
    server.stop()
    raw = tmp_path / "raw-scoring"
    raw.mkdir()
    raw.joinpath("calibration.json").write_bytes(
        Path(__file__).resolve().parents[2].joinpath("src/regard/data/calibration-raw.json").read_bytes()
    )
    env = dict(server_env(server), REGARD_SCORING_DIR=str(raw))
    server.endpoint, server.process, server.log_path = spawn_serve(server.data_dir, env)
    inv = server.client("investigator", {**CASE, **PROVENANCE})
    message = _refused(inv, "search_faces_by_image", CollectionId="watch", Image=probe)
    assert "made for another model or scoring" in message and "regard assess create" in message
    assert "none (raw distances)" in message
    assert AuditLog(server.data_dir).verify().ok


def server_env(server: KeyedServer) -> dict[str, str]:
    import os

    return dict(os.environ, REGARD_DATA_DIR=str(server.data_dir))


def test_assessor_routes_refuse_unsigned_and_unknown(server: KeyedServer) -> None:
    from live_server import post_json

    status, body = post_json(server.endpoint + "/regard/assessments", "GET", {}, None)
    assert status in (400, 403) and "__type" in body
    status, body = server.signed("asha", "GET", "/regard/assessments/asm-nope")
    assert status == 400 and "no assessment asm-nope" in body["message"]
    status, body = server.signed("asha", "POST", "/regard/assessments/asm-nope/approve", {"Note": "x"})
    assert status == 400 and "no assessment asm-nope" in body["message"]
    status, body = server.signed("asha", "GET", "/regard/assessments")
    assert status == 200 and body == {"Assessments": []}
    kinds = [(r["kind"], r["operation"], r["outcome"]) for r in server.audit()]
    assert ("assessment", "AssessmentDescribe", "error") in kinds
    assert ("assessment", "AssessmentApprove", "error") in kinds
    assert ("assessment", "AssessmentList", "success") in kinds
