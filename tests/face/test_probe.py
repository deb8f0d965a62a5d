"""One rule for the face a probe image stands for: Engine.probe, behind CompareFaces and regard compare."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pictures import face_crop, two_faces
from regard.cli.main import main
from regard.errors import InvalidParameter
from regard.face.engine import Engine
from regard.face.imaging import image_size, to_png_bytes
from regard.service import NO_FACES, FaceDetail, compare_faces, detect_faces
from regard.types import RGBImage


@pytest.fixture(scope="module")
def pair(engine: Engine, fr_images: Path) -> RGBImage:
    """Obama (larger) beside Biden (smaller), one picture."""
    return two_faces(engine, fr_images)


def test_probe_is_the_largest_face_embedded_on_its_own(engine: Engine, pair: RGBImage) -> None:
    detections = engine.detect(pair)
    assert len(detections) == 2
    found = engine.probe(pair)
    assert found is not None and found.others == []
    assert found.face.detection == detections[0]
    assert found.face.detection.box.area == max(d.box.area for d in detections)
    np.testing.assert_array_equal(found.face.embedding, engine.embed(pair, detections[:1])[0])
    with_others = engine.probe(pair, others=True)
    assert with_others is not None
    assert [a.detection for a in with_others.others] == detections[1:]
    assert engine.probe(np.full((200, 200, 3), 128, dtype=np.uint8)) is None


def test_regard_compare_agrees_with_compare_faces(
    capsys: pytest.CaptureFixture[str], engine: Engine, pair: RGBImage, fr_images: Path, tmp_path: Path
) -> None:
    source = tmp_path / "pair.png"
    source.write_bytes(to_png_bytes(pair))
    target = fr_images / "obama2.jpg"
    code = main(["compare", str(source), str(target), "--json"])
    cli = json.loads(capsys.readouterr().out)
    assert code == 0
    api = compare_faces(engine, source.read_bytes(), target.read_bytes(), similarity_threshold=0)
    assert len(api.face_matches) == 1 and api.unmatched_faces == []
    assert cli["similarity"] == round(api.face_matches[0].similarity, 3)
    assert cli["estimated_fmr"] == pytest.approx(api.face_matches[0].fmr)


def test_the_largest_face_is_held_to_the_quality_bar(engine: Engine, fr_images: Path, pair: RGBImage) -> None:
    small = face_crop(engine, fr_images / "obama.jpg", 130)
    target = (fr_images / "obama2.jpg").read_bytes()
    assert compare_faces(engine, small, target, quality_filter="LOW").face_matches
    with pytest.raises(InvalidParameter) as info:
        compare_faces(engine, small, target, quality_filter="HIGH")
    assert info.value.message == NO_FACES
    with pytest.raises(InvalidParameter):
        compare_faces(engine, small, target, quality_filter="BEST")


def test_face_details_are_ratios_of_the_image(engine: Engine, pair: RGBImage) -> None:
    details = detect_faces(engine, pair).face_details
    width, height = image_size(pair)
    for detection, detail in zip(engine.detect(pair), details, strict=True):
        analysis = engine.analyze(pair, detection)
        assert detail == FaceDetail.of(analysis, width, height)
        assert detail.bounding_box == detection.box.to_ratios(width, height)
        x, y = analysis.landmarks["nose"]
        assert detail.landmarks["nose"] == (x / width, y / height)
