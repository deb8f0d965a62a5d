"""Issue 15, finding 9: a forged anchor must not hide records deleted from the start of the log.

The attack: delete the first 100 records (younger than the retention floor, so prune refuses it)
and hand-write ``anchor.json`` naming the last deleted record. The anchor carries an HMAC under
the writer's key, so that fails ``audit verify`` naming the anchor; heads published outside regard
(``audit head --append-to``) and checked with ``audit verify --expect`` catch even an attacker
who holds the key.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from regard.accountability.audit import ANCHOR_NAME, AuditLog, canonical, now_iso, record_hash
from regard.cli.main import main
from regard.errors import AccessDenied


def _fill(log: AuditLog, n: int) -> list[dict[str, object]]:
    return [log.append({"kind": "admin", "operation": "Test", "results": {"i": i}}) for i in range(n)]


def _delete_first(log: AuditLog, n: int) -> dict[str, object]:
    """Cut the first ``n`` lines off the log by hand; returns the last deleted record."""
    lines = log.path.read_bytes().splitlines(keepends=True)
    log.path.write_bytes(b"".join(lines[n:]))
    return dict(json.loads(lines[n - 1]))


def _forge_anchor(log: AuditLog, last: dict[str, object], mac: str | None = "0" * 64) -> None:
    anchor: dict[str, object] = {"seq": last["seq"], "hash": last["hash"], "pruned_at": now_iso()}
    if mac is not None:
        anchor["mac"] = mac
    log.anchor_path.write_text(json.dumps(anchor))


def _verify_cli(
    data_dir: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, dict[str, object]]:
    code = main(["audit", "verify", "--json", *extra, "--data-dir", str(data_dir)])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("mac", ["0" * 64, None], ids=["made-up-mac", "no-mac"])
def test_deleting_the_first_records_and_forging_the_anchor_fails_naming_the_anchor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mac: str | None
) -> None:
    log = AuditLog(tmp_path)
    _fill(log, 150)
    head_before = log.head()
    with pytest.raises(AccessDenied, match="retention floor"):  # the floor forbids this deletion
        log.prune(datetime.now(UTC) + timedelta(seconds=1), actor="attacker")

    last = _delete_first(log, 100)
    _forge_anchor(log, last, mac)

    assert log.head() == head_before  # the head does not show the deletion
    result = log.verify()
    assert not result.ok and ANCHOR_NAME in (result.reason or ""), result.describe()
    code, out = _verify_cli(tmp_path, capsys)
    assert code == 1 and out["ok"] is False and ANCHOR_NAME in str(out["reason"])


def test_a_real_prune_writes_an_anchor_that_verifies(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    _fill(log, 20)
    later = datetime.now(UTC) + timedelta(days=400)  # every record is past the floor by then
    assert log.prune(later, actor="ops", now=later + timedelta(days=200)) == 20
    assert log.key_path.stat().st_mode & 0o777 == 0o600
    assert log.verify().ok
    # Moving the genuine anchor (its MAC covers seq and hash) is caught too.
    anchor = json.loads(log.anchor_path.read_text())
    log.anchor_path.write_text(json.dumps({**anchor, "seq": anchor["seq"] - 1}))
    assert ANCHOR_NAME in (log.verify().reason or "")


def test_a_head_recorded_before_the_attack_catches_an_attacker_who_holds_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = AuditLog(tmp_path)
    published = tmp_path.parent / f"{tmp_path.name}-heads.txt"  # outside the data directory
    head_cmd = ["audit", "head", "--append-to", str(published), "--data-dir", str(tmp_path)]
    # Heads published while the log was whole: one among the records the attacker will delete.
    records = _fill(log, 50)
    assert main(head_cmd) == 0
    records += _fill(log, 100)
    assert main(head_cmd) == 0
    assert [line.split()[1:] for line in published.read_text().splitlines()] == [
        ["50", str(records[49]["hash"])],
        ["150", str(records[149]["hash"])],
    ]
    capsys.readouterr()
    code, _ = _verify_cli(tmp_path, capsys, "--expect-from", str(published))
    assert code == 0

    # The attacker can read the key: the forged anchor carries a valid MAC.
    last = _delete_first(log, 100)
    key = log._key(create=True)  # the writer's key (made on first prune); the attacker reads it
    assert key is not None
    pruned_at = now_iso()
    mac = AuditLog._anchor_mac(key, int(str(last["seq"])), str(last["hash"]), pruned_at)
    log.anchor_path.write_text(
        json.dumps({"seq": last["seq"], "hash": last["hash"], "pruned_at": pruned_at, "mac": mac})
    )
    assert log.verify().ok  # the limit the docs state: with the key, the anchor can be forged
    code, out = _verify_cli(tmp_path, capsys, "--expect", f"50:{records[49]['hash']}")
    assert code == 1 and out["broken_seq"] == 50 and "pruned" in str(out["reason"])
    code, out = _verify_cli(tmp_path, capsys, "--expect-from", str(published))
    assert code == 1 and out["broken_seq"] == 50


def test_a_head_recorded_earlier_catches_a_rewritten_chain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = AuditLog(tmp_path)
    _fill(log, 10)
    assert (
        main(["audit", "head", "--append-to", str(tmp_path / "heads.txt"), "--data-dir", str(tmp_path)]) == 0
    )
    seq, digest = (int(f) if f.isdigit() else f for f in capsys.readouterr().out.split())
    line = (tmp_path / "heads.txt").read_text().split()
    assert line[1:] == [str(seq), digest] and datetime.fromisoformat(line[0].replace("Z", "+00:00"))
    _fill(log, 5)

    # Record 10 is edited and the whole chain from it recomputed: verify alone cannot tell.
    rows = [json.loads(raw) for raw in log.path.read_bytes().splitlines()]
    rows[9]["results"] = {"i": "edited"}
    prev = rows[8]["hash"]
    for row in rows[9:]:
        row["prev_hash"] = prev
        row["hash"] = record_hash(row)
        prev = row["hash"]
    log.path.write_text("".join(canonical(r) + "\n" for r in rows))
    assert log.verify().ok

    code, out = _verify_cli(tmp_path, capsys, "--expect", f"{seq}:{digest}")
    assert code == 1 and out["broken_seq"] == 10 and "does not match" in str(out["reason"])
    code, out = _verify_cli(tmp_path, capsys, "--expect", f"99:{digest}")
    assert code == 1 and "not in the log" in str(out["reason"])
