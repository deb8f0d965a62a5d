"""Issue 19, items 11, 15 and 16: the command line names its data directory, labels drawn boxes
with their table rows legibly at any size, and says "file not found" for a missing file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from regard.cli.engine_cmds import draw, label_size
from regard.cli.main import main
from regard.types import Box, Detection


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _face(left: float, top: float, side: float) -> Detection:
    c = (left + side / 2, top + side / 2)
    return Detection(Box(left, top, side, side), 99.0, (c, c, c, c, c), "test")


def _tag(drawn: np.ndarray, box: Box, size: int) -> np.ndarray:
    """The label tag drawn just above ``box`` (or inside it at the image's top edge)."""
    top = max(0, int(box.top) - 2 * size)
    return drawn[top : int(box.top) + 2 * size, int(box.left) : int(box.left) + 2 * size]


@pytest.mark.parametrize("size", [(96, 80), (640, 480), (6000, 4000)])
def test_boxes_carry_their_row_number_legibly_at_any_size(tmp_path: Path, size: tuple[int, int]) -> None:
    width, height = size
    image = np.full((height, width, 3), 128, dtype=np.uint8)
    side = min(width, height) / 4
    faces = [_face(width * 0.1, height * 0.4, side), _face(width * 0.6, 0, side)]
    out = tmp_path / "drawn.png"
    draw(image, faces, out)
    drawn = np.asarray(Image.open(out).convert("RGB"))
    text = label_size(width, height)
    assert text >= 12 and text >= min(width, height) * 0.03
    tags = []
    for face in faces:
        tag = _tag(drawn, face.box, text)
        green = np.all(tag == (0, 255, 0), axis=2)
        black = tag.astype(int).sum(axis=2) < 150  # the digits (anti-aliased into the tag's green)
        rows = np.flatnonzero(green.any(axis=1) | black.any(axis=1))
        assert rows.size and rows[-1] - rows[0] + 1 >= text  # a tag at least one text line high
        assert black.sum() >= text  # with dark digits in it
        tags.append(black)
    assert tags[0].shape != tags[1].shape or not np.array_equal(tags[0], tags[1])  # "1" is not "2"


def test_detect_draw_labels_the_printed_rows(
    capsys: pytest.CaptureFixture[str], fr_images: Path, tmp_path: Path
) -> None:
    out_png = tmp_path / "drawn.png"
    code, out, _ = run(capsys, "detect", str(fr_images / "obama.jpg"), "--draw", str(out_png))
    assert code == 0 and "\n1 " in "\n" + out.splitlines()[-1]
    drawn = np.asarray(Image.open(out_png).convert("RGB"))
    assert (drawn.astype(int).sum(axis=2) < 150).sum() > 0  # the row number, dark on its tag


def test_missing_files_are_file_not_found(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    absent = [str(tmp_path / name) for name in ("a.jpg", "b.jpg")]
    for argv in (["detect", absent[0]], ["embed", absent[0]], ["compare", *absent]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and f"file not found: {absent[0]}" in err and "InvalidImageFormat" not in err, err


def test_commands_name_the_data_directory(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGARD_DATA_DIR", str(tmp_path / "data"))
    for argv in (
        ("keys", "list"),
        ("audit", "verify"),
        ("collections", "list"),
        ("policy", "show", "verification"),
        ("review", "list", "--help"),
    ):
        code, _, err = run(capsys, *argv)
        if "--help" in argv:
            continue
        assert code == 0, (argv, err)
        assert f"regard: using embedded store in {tmp_path / 'data'}" in err, (argv, err)
