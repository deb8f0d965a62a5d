"""``regard erase`` and ``regard subject-access`` with ``REGARD_DATABASE_URL`` act on PostgreSQL.

The erasure is checked as the store tests check it: after the command, the test database's files
(``base/<its oid>`` of PostgreSQL's data directory, after a CHECKPOINT) hold no byte of the erased
templates, while the other faces' templates are still there, so the scan would have seen them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from cryptography.fernet import Fernet

from regard.cli.main import main
from regard.workspace import Workspace

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _table_files(pg_server: Any, url: str) -> bytes:
    """The files of this test's database (``base/<its oid>``): other tests' databases on the same
    server hold templates of the same portraits, which the engine embeds to the same bytes."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        row = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()").fetchone()
    assert row is not None
    base = Path(pg_server.pgdata) / "base" / str(row[0])
    return b"".join(p.read_bytes() for p in base.rglob("*") if p.is_file())


def test_erase_and_subject_access_act_on_postgresql(
    tmp_path: Path,
    pg_server: Any,
    pg_url: str,
    fr_images: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("REGARD_DATABASE_URL", pg_url)
    monkeypatch.setenv("REGARD_MASTER_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("REGARD_DATA_DIR", str(tmp_path / "shell"))
    assert main(["collections", "create", "watch"]) == 0
    subject_photos = [str(fr_images / "obama.jpg"), str(fr_images / "obama2.jpg")]
    assert main(["index", "watch", *subject_photos, "--external-id", "subject-42"]) == 0
    assert main(["index", "watch", str(fr_images / "biden.jpg"), "--external-id", "other"]) == 0
    capsys.readouterr()

    ws = Workspace.open()
    with ws.service() as service:
        faces = service.list_faces("watch").faces
        templates = {f.face_id: np.asarray(f.embedding, np.float32).tobytes() for f in faces}
        subject = [f.face_id for f in faces if f.external_image_id == "subject-42"]
        (other,) = [f.face_id for f in faces if f.external_image_id == "other"]
    ws.close()
    assert len(subject) == 2
    files = _table_files(pg_server, pg_url)
    assert all(templates[f] in files for f in templates), "the scan must see templates while they are held"

    assert main(["subject-access", "--external-image-id", "subject-42"]) == 0
    out = capsys.readouterr()
    held = json.loads(out.out)
    assert "PostgreSQL" in out.err  # the command says which store it opened
    (coll,) = held["Collections"]
    assert sorted(f["FaceId"] for f in coll["Faces"]) == sorted(subject)

    assert main(["erase", "--external-image-id", "subject-42", "--yes", "--reason", "art. 17"]) == 0
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert "PostgreSQL" in out.err
    assert sorted(report["DeletedFaces"]) == sorted(subject)

    ws = Workspace.open()
    with ws.service() as service:
        assert [f.face_id for f in service.list_faces("watch").faces] == [other]
    records = list(ws.audit().records())
    assert ws.audit().verify().ok
    ws.close()
    assert [r["operation"] for r in records if r["operation"] in {"Erase", "SubjectAccess"}] == [
        "SubjectAccess",
        "Erase",
    ]
    files = _table_files(pg_server, pg_url)
    for fid in subject:
        assert templates[fid] not in files, f"template of {fid} is still in PostgreSQL's table files"
    assert templates[other] in files
    # nothing about the subject landed in the node's own data directory either
    local = b"".join(p.read_bytes() for p in (tmp_path / "shell").rglob("*") if p.is_file())
    assert all(templates[fid] not in local and fid.encode() not in local for fid in subject)

    assert main(["subject-access", "--external-image-id", "subject-42"]) == 0
    assert json.loads(capsys.readouterr().out)["Collections"] == []
