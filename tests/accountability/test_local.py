"""Collection work from the shell (``regard collections|index|search|users``) is audited too."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from regard.accountability.audit import AuditLog
from regard.cli.main import main


def test_cli_changes_and_searches_are_recorded(
    tmp_path: Path, fr_images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = ("--data-dir", str(tmp_path))

    def run(*argv: str) -> dict[str, object]:
        code = main([*argv, *d, "--json"])
        out = capsys.readouterr()
        assert code == 0, out.err
        parsed: dict[str, object] = json.loads(out.out)
        return parsed

    run("collections", "create", "people")
    photos = [fr_images / n for n in ("obama.jpg", "biden.jpg")]
    indexed = run(
        "index", "people", *map(str, photos), "--legal-basis", "consent", "--source-note", "staff photo"
    )
    found = run("search", "people", str(fr_images / "obama2.jpg"))
    run("collections", "delete", "people")

    log = AuditLog(tmp_path)
    assert log.verify().ok
    records = [r for r in log.records() if r["kind"] != "intent"]  # intents: test_audit_intent.py
    assert [r["operation"] for r in records] == [
        "CreateCollection",
        "IndexFaces",
        "IndexFaces",
        "SearchFacesByImage",
        "DeleteCollection",
    ]
    assert all(r["principal"].startswith("local:") and r["outcome"] == "success" for r in records)
    # The two photos may be indexed concurrently (regard index --jobs): match records by face id.
    faces = {r["FaceRecords"][0]["FaceId"] for r in indexed["Results"]}  # type: ignore[index,union-attr]
    assert {f for r in records[1:3] for f in r["results"]["indexed_face_ids"]} == faces
    assert all(len(r["results"]["indexed_face_ids"]) == 1 for r in records[1:3])
    assert records[1]["parameters"]["legal_basis"] == "consent"
    assert max(r["collection_state"]["after"]["face_count"] for r in records[1:3]) == 2
    search = records[3]
    assert [m["face_id"] for m in search["results"]["matches"]] == [
        m["Face"]["FaceId"]  # type: ignore[index]
        for m in found["FaceMatches"]  # type: ignore[attr-defined]
    ]
    probe = json.dumps(search["parameters"])
    assert "sha256" in probe
    if '"bytes"' in probe:  # the CLI passed the file's bytes: the log names them by hash
        assert hashlib.sha256((fr_images / "obama2.jpg").read_bytes()).hexdigest() in probe
