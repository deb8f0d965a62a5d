"""The collections CLI on a real data directory and real photos."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from regard.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code = main(list(argv))
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out) if "--json" in argv else out.out


def test_collections_index_search_and_users(
    tmp_path: Path, fr_images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = ("--data-dir", str(tmp_path / "data"))
    created = run(capsys, "collections", "create", "people", "--tag", "team=a", *d, "--json")
    assert created["CollectionArn"].endswith("collection/people")
    assert run(capsys, "collections", "list", *d, "--json")["CollectionIds"] == ["people"]
    photos = [str(fr_images / n) for n in ("obama.jpg", "obama2.jpg", "biden.jpg")]
    indexed = run(capsys, "index", "people", *photos, *d, "--json")["Results"]
    assert [len(r["FaceRecords"]) for r in indexed] == [1, 1, 1]
    assert indexed[0]["FaceRecords"][0]["ExternalImageId"] == "obama.jpg"
    assert run(capsys, "collections", "describe", "people", *d, "--json")["FaceCount"] == 3
    found = run(capsys, "search", "people", str(fr_images / "obama3.jpg"), *d, "--json")
    assert {m["Face"]["ExternalImageId"] for m in found["FaceMatches"]} == {"obama.jpg", "obama2.jpg"}
    assert all(0 < m["EstimatedFalseMatchRate"] <= 1e-4 for m in found["FaceMatches"])
    table = run(capsys, "search", "people", str(fr_images / "biden.jpg"), *d)
    assert "biden.jpg" in table and "obama" not in table

    run(capsys, "users", "create", "people", "barack", *d)
    obama_faces = [indexed[0]["FaceRecords"][0]["FaceId"], indexed[1]["FaceRecords"][0]["FaceId"]]
    assoc = run(capsys, "users", "associate", "people", "barack", *obama_faces, *d, "--json")
    assert assoc["UserStatus"] == "ACTIVE" and len(assoc["AssociatedFaces"]) == 2
    users = run(capsys, "users", "search", "people", "--image", str(fr_images / "obama3.jpg"), *d, "--json")
    assert [m["User"]["UserId"] for m in users["UserMatches"]] == ["barack"]
    assert run(capsys, "users", "list", "people", *d, "--json")["Users"] == [
        {"UserId": "barack", "UserStatus": "ACTIVE"}
    ]
    run(capsys, "users", "disassociate", "people", "barack", obama_faces[0], *d)
    run(capsys, "users", "delete", "people", "barack", *d)
    assert run(capsys, "collections", "delete", "people", *d, "--json") == {"StatusCode": 200}
    assert main(["collections", "describe", "people", *d]) == 2
    assert "ResourceNotFound" in capsys.readouterr().err


def test_index_many_images_at_once_keeps_order_and_reports_bad_files(
    tmp_path: Path, fr_images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = ("--data-dir", str(tmp_path / "data"))
    run(capsys, "collections", "create", "people", *d)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    names = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"]
    photos = [str(fr_images / n) for n in names[:2]] + [str(broken)] + [str(fr_images / n) for n in names[2:]]
    code = main(["index", "people", *photos, "--jobs", "3", *d, "--json"])
    out = capsys.readouterr()
    assert code == 1 and "1 of 5 images failed" in out.err
    results = json.loads(out.out)["Results"]
    assert [r["Image"] for r in results] == photos
    assert results[2]["Error"] == "InvalidImageFormatException"
    indexed = [r["FaceRecords"][0]["ExternalImageId"] for r in results if "FaceRecords" in r]
    assert indexed == names
    assert run(capsys, "collections", "describe", "people", *d, "--json")["FaceCount"] == 4
