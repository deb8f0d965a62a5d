"""``regard audit``, ``regard policy``, ``regard review`` from the command line (real files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from regard.accountability.audit import AuditLog
from regard.accountability.review import Candidate, ReviewQueue
from regard.cli.main import main
from regard.keys import KeyStore


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_policy_change_is_audited_and_verify_names_a_tampered_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(tmp_path)
    code, out, _ = run(capsys, "policy", "show", "--data-dir", d)
    assert code == 0 and "[profiles.verification]" in out
    code, out, _ = run(
        capsys, "policy", "set", "identification", "max_fpir", "1e-4", "--actor", "dpo", "--data-dir", d
    )
    assert code == 0 and "0.001 -> 0.0001" in out
    code, _, err = run(
        capsys, "policy", "set", "identification", "on_low_threshold", "maybe", "--data-dir", d
    )
    assert code == 2 and "deny or raise" in err
    code, out, _ = run(capsys, "policy", "show", "identification", "--json", "--data-dir", d)
    assert json.loads(out)["max_fpir"] == 1e-4
    records = list(AuditLog(tmp_path).records())
    assert [(r["operation"], r["outcome"], r["principal"]) for r in records] == [
        ("PolicySet", "success", "dpo"),
        ("PolicySet", "error", records[1]["principal"]),
    ]
    assert records[0]["results"] == {"old": 0.001, "new": 0.0001}

    code, out, _ = run(capsys, "audit", "verify", "--data-dir", d)
    assert code == 0 and "2 records" in out
    log = AuditLog(tmp_path)
    data = bytearray(log.path.read_bytes())
    second = data.index(b"\n") + 1
    data[second + 40] ^= 0x04  # one bit of one byte inside record 2
    log.path.write_bytes(bytes(data))
    code, _, err = run(capsys, "audit", "verify", "--data-dir", d)
    assert code == 1 and "seq 2" in err
    code, out, _ = run(capsys, "audit", "verify", "--json", "--data-dir", d)
    assert code == 1 and json.loads(out)["broken_seq"] == 2


def test_export_and_head(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = AuditLog(tmp_path)
    for i in range(3):
        log.append({"operation": "DetectFaces", "request_id": f"r{i}", "outcome": "success"})
    code, out, _ = run(capsys, "audit", "head", "--data-dir", str(tmp_path))
    assert code == 0 and out.split() == [str(3), log.head()[1]]
    target = tmp_path / "out.csv"
    code, _, err = run(
        capsys,
        "audit",
        "export",
        "--format",
        "csv",
        "--since",
        "2000-01-01",
        "-o",
        str(target),
        "--data-dir",
        str(tmp_path),
    )
    assert code == 0 and "3 records" in err
    assert len(target.read_text().splitlines()) == 4
    exported = list(log.records())[-1]
    assert exported["operation"] == "AuditExport" and exported["results"] == {"records": 3}
    code, _, err = run(capsys, "audit", "prune", "--before", "2000-01-01", "--data-dir", str(tmp_path))
    assert code == 0
    code, _, err = run(capsys, "audit", "prune", "--before", "2999-01-01", "--data-dir", str(tmp_path))
    assert code == 2 and "retention floor" in err


def test_review_from_the_command_line_needs_two_verifiers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = KeyStore(tmp_path)
    requester, _ = keys.create("investigator", role="operator", profile="identification")
    v1, _ = keys.create("vera", role="verifier", profile="identification")
    v2, _ = keys.create("victor", role="verifier", profile="identification")
    (lead,) = ReviewQueue(tmp_path).add(
        request_id="r1",
        requester_key=requester.access_key_id,
        requester_principal=requester.name,
        collection_id="watch",
        operation="SearchFacesByImage",
        candidates=[Candidate("f1", None, None, 95.0, 1e-5)],
        purpose="p",
        case_reference="C-1",
    )
    d = str(tmp_path)
    code, out, _ = run(capsys, "review", "list", "--key", v1.access_key_id, "--data-dir", d)
    assert code == 0 and lead in out
    code, _, err = run(capsys, "review", "confirm", lead, "--key", requester.access_key_id, "--data-dir", d)
    assert code == 2 and "ReviewRefused" in err
    code, out, _ = run(capsys, "review", "confirm", lead, "--key", v1.access_key_id, "--data-dir", d)
    assert code == 0 and "PENDING_VERIFICATION" in out
    code, _, err = run(capsys, "review", "confirm", lead, "--key", v1.access_key_id, "--data-dir", d)
    assert code == 2 and "already reviewed" in err
    code, out, _ = run(
        capsys, "review", "confirm", lead, "--key", v2.access_key_id, "--note", "same scar", "--data-dir", d
    )
    assert code == 0 and "CONFIRMED" in out
    code, out, _ = run(
        capsys,
        "review",
        "list",
        "--status",
        "confirmed",
        "--json",
        "--key",
        v2.access_key_id,
        "--data-dir",
        d,
    )
    (row,) = json.loads(out)
    assert [x["Principal"] for x in row["Decisions"]] == ["vera", "victor"]
    ops = [(r["operation"], r["outcome"]) for r in AuditLog(tmp_path).records()]
    assert ops == [
        ("ReviewList", "success"),
        ("ReviewConfirm", "error"),
        ("ReviewConfirm", "success"),
        ("ReviewConfirm", "error"),
        ("ReviewConfirm", "success"),
        ("ReviewList", "success"),
    ]


def test_key_changes_are_audited_without_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = str(tmp_path)
    code, out, _ = run(
        capsys,
        "keys",
        "create",
        "--name",
        "vera",
        "--role",
        "verifier",
        "--profile",
        "identification",
        "--json",
        "--data-dir",
        d,
    )
    assert code == 0
    created = json.loads(out)
    code, _, _ = run(capsys, "keys", "revoke", created["AccessKeyId"], "--data-dir", d)
    assert code == 0
    records = list(AuditLog(tmp_path).records())
    assert [r["operation"] for r in records] == ["CreateAccessKey", "RevokeAccessKey"]
    assert records[0]["parameters"] == {"Name": "vera", "Role": "verifier", "Profile": "identification"}
    assert records[0]["results"]["AccessKeyId"] == created["AccessKeyId"]
    assert created["SecretAccessKey"] not in AuditLog(tmp_path).path.read_text()
