"""Every state command opens the shared PostgreSQL database named by ``REGARD_DATABASE_URL`` (or
``--database-url``) and says so; what one shell writes, another shell with its own data
directory reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from regard.cli.main import main
from regard.workspace import Workspace

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_every_state_command_works_on_the_shared_database_and_names_it(
    tmp_path: Path,
    pg_url: str,
    fr_images: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    master = Fernet.generate_key().decode()
    monkeypatch.setenv("REGARD_MASTER_KEY", master)
    monkeypatch.delenv("REGARD_DATABASE_URL", raising=False)
    shell_a = ["--data-dir", str(tmp_path / "a"), "--database-url", pg_url]  # the options, not the env

    rc, out, err = _run(capsys, "keys", "create", "--name", "vera", "--role", "verifier", "--json", *shell_a)
    assert rc == 0 and "using PostgreSQL" in err
    vera = json.loads(out)["AccessKeyId"]
    rc, out, err = _run(capsys, "policy", "set", "identification", "burst", "3", *shell_a)
    assert rc == 0 and "using PostgreSQL" in err
    rc, out, err = _run(capsys, "collections", "create", "watch", *shell_a)
    assert rc == 0 and "using PostgreSQL" in err
    photo = str(fr_images / "obama.jpg")
    rc, out, err = _run(capsys, "index", "watch", photo, "--external-id", "o", *shell_a)
    assert rc == 0 and "using PostgreSQL" in err
    rc, out, err = _run(capsys, "users", "create", "watch", "u1", *shell_a)
    assert rc == 0

    # another shell, its own (empty) data directory, the same database through the environment
    monkeypatch.setenv("REGARD_DATABASE_URL", pg_url)
    shell_b = ["--data-dir", str(tmp_path / "b")]
    rc, out, err = _run(capsys, "keys", "list", "--json", *shell_b)
    assert rc == 0 and [k["AccessKeyId"] for k in json.loads(out)] == [vera] and "using PostgreSQL" in err
    rc, out, _ = _run(capsys, "policy", "show", "identification", "--json", *shell_b)
    assert rc == 0 and json.loads(out)["burst"] == 3
    rc, out, _ = _run(capsys, "collections", "list", "--json", *shell_b)
    assert rc == 0 and "watch" in out
    rc, out, _ = _run(capsys, "users", "list", "watch", "--json", *shell_b)
    assert rc == 0 and "u1" in out
    rc, out, err = _run(capsys, "search", "watch", str(fr_images / "obama2.jpg"), "--json", *shell_b)
    assert rc == 0 and json.loads(out)["FaceMatches"] and "using PostgreSQL" in err
    rc, out, err = _run(capsys, "review", "list", "--key", vera, "--json", *shell_b)
    assert rc == 0 and json.loads(out) == [] and "using PostgreSQL" in err
    rc, out, err = _run(capsys, "keys", "revoke", vera, *shell_b)
    assert rc == 0
    rc, out, err = _run(capsys, "audit", "verify", "--json", *shell_b)
    assert rc == 0 and json.loads(out)["ok"] and "using PostgreSQL" in err

    # one chain holds what both shells did; neither data directory holds a store or a log
    ws = Workspace.open(tmp_path / "c", pg_url)
    try:
        operations = [r["operation"] for r in ws.audit().records()]
        assert ws.keys().get(vera).revoked_at is not None
    finally:
        ws.close()
    for op in ("CreateAccessKey", "PolicySet", "CreateCollection", "IndexFaces", "CreateUser"):
        assert op in operations
    for op in ("SearchFacesByImage", "ReviewList", "RevokeAccessKey"):
        assert op in operations
    for shell in ("a", "b"):
        names = {p.name for p in (tmp_path / shell).rglob("*") if p.is_file()}
        assert not names & {"keys.sqlite3", "review.sqlite3", "policy.toml", "audit.jsonl"}, names
        assert not any(n.endswith(".sqlite3") for n in names), names
