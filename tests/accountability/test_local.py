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
    records = list(log.records())
    assert [r["operation"] for r in records] == [
        "CreateCollection",
        "IndexFaces",
        "IndexFaces",
        "SearchFacesByImage",
        "DeleteCollection",
    ]
    assert all(r["principal"].startswith("local:") and r["outcome"] == "success" for r in records)
    first_face = indexed["Results"][0]["FaceRecords"][0]["FaceId"]  # type: ignore[index]
    assert records[1]["results"]["indexed_face_ids"] == [first_face]
    assert records[1]["parameters"]["legal_basis"] == "consent"
    assert records[1]["collection_state"]["after"]["face_count"] == 1
    search = records[3]
    assert [m["face_id"] for m in search["results"]["matches"]] == [
        m["Face"]["FaceId"]  # type: ignore[index]
        for m in found["FaceMatches"]  # type: ignore[attr-defined]
    ]
    probe = json.dumps(search["parameters"])
    assert "sha256" in probe
    if '"bytes"' in probe:  # the CLI passed the file's bytes: the log names them by hash
        assert hashlib.sha256((fr_images / "obama2.jpg").read_bytes()).hexdigest() in probe
