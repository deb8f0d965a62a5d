"""Access keys: encrypted at rest, listed without secrets, revocable; the `regard keys` CLI."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from regard.cli.main import cli
from regard.errors import InvalidParameter, ResourceNotFound
from regard.keys import KEY_PREFIX, KeyStore


def test_create_returns_secret_once_and_stores_it_encrypted(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    key, secret = store.create("ci", role="admin", profile="reader")
    assert key.access_key_id.startswith(KEY_PREFIX) and len(key.access_key_id) == 20
    assert len(secret) == 40
    assert (key.role, key.profile, key.active) == ("admin", "reader", True)
    raw = (tmp_path / "keys.sqlite3").read_bytes()
    assert secret.encode() not in raw
    with sqlite3.connect(tmp_path / "keys.sqlite3") as db:
        blob = db.execute("SELECT secret_encrypted FROM access_keys").fetchone()[0]
    assert secret.encode() not in blob
    assert stat.S_IMODE((tmp_path / "master.key").stat().st_mode) == 0o600
    # A second store on the same directory (another worker) decrypts it.
    found = KeyStore(tmp_path).secret_for(key.access_key_id)
    assert found is not None and found[1] == secret and found[0] == key


def test_list_and_revoke(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    a, _ = store.create("a")
    b, _ = store.create("b")
    assert [k.access_key_id for k in store.list()] == [a.access_key_id, b.access_key_id]
    revoked = store.revoke(a.access_key_id)
    assert revoked.revoked_at is not None and not revoked.active
    assert store.secret_for(a.access_key_id) is None
    assert store.secret_for(b.access_key_id) is not None
    assert [k.access_key_id for k in store.list(include_revoked=False)] == [b.access_key_id]
    with pytest.raises(ResourceNotFound):
        store.revoke("RGRDNOSUCHKEY0000000")
    with pytest.raises(InvalidParameter):
        store.create("  ")


def test_revocation_reaches_other_processes_cache(tmp_path: Path) -> None:
    server_side = KeyStore(tmp_path)
    admin_side = KeyStore(tmp_path)
    key, _ = admin_side.create("x")
    assert server_side.secret_for(key.access_key_id) is not None
    admin_side.revoke(key.access_key_id)
    server_side.CACHE_SECONDS = 0.0
    assert server_side.secret_for(key.access_key_id) is None


def test_cli_create_list_revoke(tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(
        cli, ["keys", "create", "--name", "bot", "--profile", "ops", "--data-dir", str(tmp_path)]
    )
    assert out.exit_code == 0, out.output
    lines = dict(line.split(" = ") for line in out.stdout.splitlines() if " = " in line)
    akid, secret = lines["aws_access_key_id"], lines["aws_secret_access_key"]
    listed = runner.invoke(cli, ["keys", "list", "--json", "--data-dir", str(tmp_path)])
    rows = json.loads(listed.stdout)
    assert rows[0]["AccessKeyId"] == akid and rows[0]["Profile"] == "ops" and rows[0]["RevokedAt"] is None
    assert secret not in listed.stdout
    gone = runner.invoke(cli, ["keys", "revoke", akid, "--data-dir", str(tmp_path)])
    assert gone.exit_code == 0 and "revoked" in gone.stdout
    assert KeyStore(tmp_path).secret_for(akid) is None


def test_cli_keys_are_safe_by_default(tmp_path: Path) -> None:
    """Without --profile a key gets the verification profile (FMR floor), not admin."""
    runner = CliRunner()
    out = runner.invoke(cli, ["keys", "create", "--name", "app", "--json", "--data-dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    created = json.loads(out.stdout)
    (row,) = json.loads(runner.invoke(cli, ["keys", "list", "--json", "--data-dir", str(tmp_path)]).stdout)
    assert row["AccessKeyId"] == created["AccessKeyId"]
    assert row["Profile"] == "verification" and row["Role"] == "operator"
