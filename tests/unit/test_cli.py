"""The command line, in-process: JSON and table output, drawing, and one clear line on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from regard.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_detect_json(capsys: pytest.CaptureFixture[str], fr_images: Path) -> None:
    code, out, _ = run(capsys, "detect", str(fr_images / "obama.jpg"), "--json")
    assert code == 0
    data = json.loads(out)
    assert len(data["faces"]) == 1
    face = data["faces"][0]
    assert set(face) >= {"box", "bounding_box", "confidence", "landmarks", "pose", "quality"}
    assert 0 < face["bounding_box"]["Width"] < 1
    assert "eyeLeft" in face["landmarks"] and "chinBottom" in face["landmarks"]


def test_detect_table_and_draw(capsys: pytest.CaptureFixture[str], fr_images: Path, tmp_path: Path) -> None:
    out_png = tmp_path / "drawn.png"
    code, out, _ = run(capsys, "detect", str(fr_images / "obama.jpg"), "--draw", str(out_png))
    assert code == 0
    assert "1 face(s)" in out and "conf" in out
    with Image.open(out_png) as drawn, Image.open(fr_images / "obama.jpg") as src:
        assert drawn.size == src.size
        assert drawn.format == "PNG"
        # The box outline is pure green somewhere in the drawing.
        assert (0, 255, 0) in {c for _, c in drawn.convert("RGB").getcolors(1 << 24) or []}


def test_compare_same_and_different(capsys: pytest.CaptureFixture[str], fr_images: Path) -> None:
    code, out, _ = run(
        capsys, "compare", str(fr_images / "obama.jpg"), str(fr_images / "obama2.jpg"), "--json"
    )
    assert code == 0
    same = json.loads(out)
    code, out, _ = run(
        capsys, "compare", str(fr_images / "obama.jpg"), str(fr_images / "biden.jpg"), "--json"
    )
    assert code == 0
    other = json.loads(out)
    assert same["similarity"] > 80 > other["similarity"]
    assert same["estimated_fmr"] < other["estimated_fmr"]
    code, out, _ = run(capsys, "compare", str(fr_images / "obama.jpg"), str(fr_images / "obama3.jpg"))
    assert code == 0 and out.startswith("similarity ")


def test_embed_json(capsys: pytest.CaptureFixture[str], fr_images: Path) -> None:
    code, out, _ = run(capsys, "embed", str(fr_images / "biden.jpg"), "--json")
    assert code == 0
    data = json.loads(out)
    assert len(data["faces"]) == 1 and len(data["faces"][0]["embedding"]) == 128
    assert data["model"].startswith("dlib_face_recognition_resnet_model_v1:")


@pytest.mark.parametrize("command", ["detect", "embed"])
def test_bad_input_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    code, out, err = run(capsys, command, str(bad))
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and "InvalidImageFormat" in err


def test_compare_without_a_face(capsys: pytest.CaptureFixture[str], fr_images: Path, tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), (255, 255, 255)).save(blank)
    code, _, err = run(capsys, "compare", str(fr_images / "obama.jpg"), str(blank))
    assert code == 2
    assert "no face found" in err and err.count("\n") == 1


def test_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "detect", str(tmp_path / "absent.jpg"))
    assert code == 2 and "file not found" in err and "InvalidImageFormat" not in err
    assert f"FileNotFound: file not found: {tmp_path / 'absent.jpg'}" in err
    code, _, err = run(capsys, "compare", str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg"))
    assert code == 2 and "file not found" in err


def test_usage_error_exits_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "detect")
    assert code == 2 and "Missing argument" in err
