"""What docs/accountability.md promises of ``regard review reject``, ``regard review list --status
all``, ``regard subject-access`` and ``regard erase --face-id|--user-id``, run as the command line
runs them against a real data directory.

The data directory is made once through the guarded endpoint (as the API would make it: audit
records, provenance, review leads from a real identification search) and copied for each test.
"""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from regard.accountability.audit import AuditLog
from regard.accountability.review import ReviewQueue
from regard.cli.main import main
from regard.face.engine import Engine
from regard.keys import KeyStore
from regard.service import Service

from .helpers import ADMIN, CASE, INVESTIGATOR, PROVENANCE, endpoint, open_gate


@dataclass(frozen=True)
class Held:
    """A data directory holding one data subject and one other person."""

    root: Path
    subject: tuple[str, str]  # FaceIds of "subject-42" (obama, obama2), associated with user u42
    other: str  # FaceId of "other" (biden)
    leads: dict[str, str]  # FaceId -> lead id, from one identification search
    templates: dict[str, bytes]  # FaceId -> the template's raw float32 bytes


@pytest.fixture(scope="module")
def held_template(tmp_path_factory: pytest.TempPathFactory, engine: Engine, fr_images: Path) -> Held:
    root = tmp_path_factory.mktemp("held")
    photo = {p.stem: p.read_bytes() for p in fr_images.glob("*.jpg")}
    ep = endpoint(root, engine)
    open_gate(root, ["*"], fr_images)  # identification needs an approved assessment
    try:
        ep.call("CreateCollection", CollectionId="staff")
        subject = tuple(
            ep.call(
                "IndexFaces",
                INVESTIGATOR,
                CollectionId="staff",
                Image={"Bytes": photo[name]},
                ExternalImageId="subject-42",
                **PROVENANCE,
                **CASE,
            ).result["FaceRecords"][0]["Face"]["FaceId"]
            for name in ("obama", "obama2")
        )
        other = ep.call(
            "IndexFaces",
            ADMIN,
            CollectionId="staff",
            Image={"Bytes": photo["biden"]},
            ExternalImageId="other",
        ).result["FaceRecords"][0]["Face"]["FaceId"]
        ep.call("CreateUser", CollectionId="staff", UserId="u42")
        ep.call("AssociateFaces", CollectionId="staff", UserId="u42", FaceIds=list(subject))
        found = ep.call(
            "SearchFacesByImage", INVESTIGATOR, CollectionId="staff", Image={"Bytes": photo["obama3"]}, **CASE
        ).result["FaceMatches"]
        leads = {m["Face"]["FaceId"]: m["RegardLeadId"] for m in found}
        assert set(leads) == set(subject)
        templates = {f.face_id: f.embedding.tobytes() for f in ep.service.list_faces("staff").faces}
    finally:
        ep.service.close()
    keys = KeyStore(root)
    for name, role in (("vera", "verifier"), ("victor", "verifier"), ("investigator", "operator")):
        keys.create(name, role=role, profile="identification")
    keys.create("boss", role="admin", profile="admin")
    return Held(root, (subject[0], subject[1]), other, leads, templates)


@pytest.fixture
def held(held_template: Held, tmp_path: Path) -> Held:
    root = tmp_path / "data"
    shutil.copytree(held_template.root, root)
    return Held(
        root, held_template.subject, held_template.other, held_template.leads, held_template.templates
    )


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def key_of(held: Held, name: str) -> str:
    (key,) = [k for k in KeyStore(held.root).list() if k.name == name]
    return key.access_key_id


def files_holding(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def long_number_lists(value: Any) -> int:
    """How many lists of 64 or more numbers a JSON value holds (a template would be one)."""
    if isinstance(value, dict):
        return sum(long_number_lists(v) for v in value.values())
    if isinstance(value, list):
        here = int(len(value) >= 64 and all(isinstance(x, int | float) for x in value))
        return here + sum(long_number_lists(v) for v in value)
    return 0


# -- regard review reject / list --status all ----------------------------------------------------


def test_review_reject_and_list_all_from_the_command_line(
    held: Held, capsys: pytest.CaptureFixture[str]
) -> None:
    d = ("--data-dir", str(held.root))
    rejected, pending = (held.leads[f] for f in held.subject)
    vera, victor = key_of(held, "vera"), key_of(held, "victor")

    code, out, _ = run(capsys, "review", "reject", rejected, "--key", vera, "--note", "not him", *d)
    assert code == 0 and out.strip() == f"lead {rejected}: REJECTED"
    # A decided lead takes no further decision.
    code, _, err = run(capsys, "review", "confirm", rejected, "--key", victor, *d)
    assert code == 2 and "ConflictError" in err and "already REJECTED" in err
    # Only a verifier decides, and not on their own search: the requester and an admin are refused.
    for name in ("investigator", "boss"):
        code, _, err = run(capsys, "review", "reject", pending, "--key", key_of(held, name), *d)
        assert code == 2 and "ReviewRefused" in err

    def listed(name: str, *status: str) -> dict[str, str]:
        code, out, err = run(capsys, "review", "list", *status, "--json", "--key", key_of(held, name), *d)
        assert code == 0, err
        return {x["LeadId"]: x["Status"] for x in json.loads(out)}

    both = {rejected: "REJECTED", pending: "PENDING_VERIFICATION"}
    assert listed("victor", "--status", "all") == both
    assert listed("boss", "--status", "all") == both  # an admin may read the queue
    assert listed("victor") == {pending: "PENDING_VERIFICATION"}  # the default: pending only
    assert listed("victor", "--status", "rejected") == {rejected: "REJECTED"}
    assert listed("victor", "--status", "confirmed") == {}
    code, out, _ = run(capsys, "review", "list", "--status", "all", "--key", vera, *d)
    assert code == 0 and rejected in out and pending in out and "REJECTED" in out
    code, _, err = run(capsys, "review", "list", "--status", "all", "--key", key_of(held, "investigator"), *d)
    assert code == 2 and "AccessDenied" in err

    (lead,) = [x for x in ReviewQueue(held.root).list(status=None) if x.lead_id == rejected]
    assert [(x.reviewer_principal, x.decision, x.note) for x in lead.decisions] == [
        ("vera", "reject", "not him")
    ]
    rejects = [r for r in AuditLog(held.root).records() if r["operation"] == "ReviewReject"]
    assert [(r["principal"], r["outcome"]) for r in rejects] == [
        ("vera", "success"),
        ("investigator", "error"),
        ("boss", "error"),
    ]
    assert rejects[0]["results"]["lead_status"] == "REJECTED"
    assert rejects[0]["case_reference"] == CASE["case_reference"]


# -- regard subject-access -----------------------------------------------------------------------


def test_subject_access_lists_metadata_leads_and_records_never_templates(
    held: Held, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    d = ("--data-dir", str(held.root))
    target = tmp_path / "report.json"
    code, out, err = run(
        capsys, "subject-access", "--user-id", "u42", "-o", str(target), "--actor", "dpo", *d
    )
    assert code == 0, err
    assert out == ""  # written to the file, not the terminal
    report = json.loads(target.read_text())
    assert report["Selector"] == {"UserId": "u42"}
    (coll,) = report["Collections"]
    assert coll["CollectionId"] == "staff"
    assert sorted(f["FaceId"] for f in coll["Faces"]) == sorted(held.subject)
    for face in coll["Faces"]:
        assert set(face["BoundingBox"]) == {"Width", "Height", "Left", "Top"}
        assert face["IndexedAt"].startswith("20")
        assert face["SourceNote"] == PROVENANCE["source_note"]
        assert face["LegalBasis"] == PROVENANCE["legal_basis"]
        assert face["UserId"] == "u42" and face["ExternalImageId"] == "subject-42"
    assert coll["User"]["UserId"] == "u42" and coll["User"]["FaceCount"] == 2
    assert {x["LeadId"] for x in report["ReviewLeads"]} == set(held.leads.values())
    ops = {r["operation"] for r in report["AuditRecords"]}
    assert {"IndexFaces", "CreateUser", "AssociateFaces", "SearchFacesByImage"} <= ops
    assert "CreateCollection" not in ops  # only records that mention the subject
    search = next(r for r in report["AuditRecords"] if r["operation"] == "SearchFacesByImage")
    assert (search["purpose"], search["case_reference"]) == (CASE["purpose"], CASE["case_reference"])
    # Never a template: not its bytes, not its numbers.
    raw = target.read_bytes()
    assert long_number_lists(report) == 0
    for fid in held.subject:
        assert held.templates[fid] not in raw
    assert files_holding(held.root, held.templates[held.subject[0]]), "the templates are still held"

    code, out, _ = run(capsys, "subject-access", "--external-image-id", "other", *d)
    assert code == 0
    other = json.loads(out)
    (coll,) = other["Collections"]
    assert [f["FaceId"] for f in coll["Faces"]] == [held.other]
    assert "User" not in coll and other["ReviewLeads"] == []

    code, _, err = run(capsys, "subject-access", "--user-id", "u42", "--collection", "elsewhere", *d)
    assert code == 2 and "ResourceNotFound" in err
    code, _, err = run(capsys, "subject-access", "--user-id", "u42", "--external-image-id", "other", *d)
    assert code == 2 and "InvalidParameter" in err

    # Each access is logged, with ids and counts.
    accesses = [r for r in AuditLog(held.root).records() if r["operation"] == "SubjectAccess"]
    assert [(a["parameters"]["selector"], a["outcome"]) for a in accesses] == [
        ({"UserId": "u42"}, "success"),
        ({"ExternalImageId": "other"}, "success"),
    ]
    assert accesses[0]["principal"] == "dpo"
    assert accesses[0]["results"] == {"faces": 2, "audit_records": len(report["AuditRecords"])}


# -- regard erase --face-id / --user-id ----------------------------------------------------------


def test_erase_by_face_id_from_the_command_line(
    held: Held, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = ("--data-dir", str(held.root))
    erased, kept = held.subject
    assert files_holding(held.root, held.templates[erased]), "the scan must see the template while it is held"

    # Without --yes the command asks, and a "no" erases nothing.
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    code, _, err = run(capsys, "erase", "--face-id", erased, *d)
    assert code == 130 and "aborted" in err
    assert files_holding(held.root, held.templates[erased])

    code, out, err = run(
        capsys, "erase", "--face-id", erased, "--reason", "art. 17 request 9", "--yes", "--actor", "dpo", *d
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["Selector"] == {"FaceId": erased}
    assert (report["Collections"], report["DeletedFaces"], report["DeletedUsers"]) == (
        ["staff"],
        [erased],
        [],
    )
    assert report["DeletedLeads"] == 1

    assert files_holding(held.root, held.templates[erased]) == [], "the erased template is still on disk"
    for fid in (kept, held.other):
        assert files_holding(held.root, held.templates[fid]), "other faces stay"
    with Service.open(held.root) as after:
        assert sorted(f.face_id for f in after.list_faces("staff").faces) == sorted([kept, held.other])
        (user,) = after.list_users("staff").users
        assert (user.user_id, user.face_count) == ("u42", 1)  # the user keeps its other face
    assert [x.face_id for x in ReviewQueue(held.root).list(status=None)] == [kept]

    log = AuditLog(held.root)
    erasures = [r for r in log.records() if r["operation"] == "Erase"]
    assert len(erasures) == 1  # the refused prompt erased nothing and logged nothing
    (rec,) = erasures
    assert rec["seq"] == report["AuditSeq"] and rec["principal"] == "dpo"
    assert rec["parameters"]["reason"] == "art. 17 request 9"
    assert rec["results"]["DeletedFaces"] == [erased]
    assert log.verify().ok


def test_erase_by_user_id_from_the_command_line(held: Held, capsys: pytest.CaptureFixture[str]) -> None:
    d = ("--data-dir", str(held.root))
    code, out, err = run(capsys, "erase", "--user-id", "u42", "--collection", "staff", "--yes", *d)
    assert code == 0, err
    report = json.loads(out)
    assert report["Selector"] == {"UserId": "u42"}
    assert sorted(report["DeletedFaces"]) == sorted(held.subject)
    assert report["DeletedUsers"] == ["u42"] and report["DeletedLeads"] == 2

    for fid in held.subject:
        assert files_holding(held.root, held.templates[fid]) == [], f"template of {fid} still on disk"
    assert files_holding(held.root, held.templates[held.other])
    code, out, _ = run(capsys, "users", "list", "staff", "--json", *d)
    assert code == 0 and json.loads(out) == {"Users": []}
    with Service.open(held.root) as after:
        assert [f.face_id for f in after.list_faces("staff").faces] == [held.other]
    assert ReviewQueue(held.root).list(status=None) == []

    # Exactly one selector.
    code, _, err = run(capsys, "erase", "--user-id", "u42", "--face-id", held.other, "--yes", *d)
    assert code == 2 and "InvalidParameter" in err
    with Service.open(held.root) as after:
        assert after.describe_collection("staff").face_count == 1
