"""End to end on real photos: IndexFaces, SearchFacesByImage and SearchUsersByImage (embedded backend)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pictures import face_crop, two_faces
from regard.errors import InvalidParameter
from regard.face.engine import Engine
from regard.scoring.calibrate import Scorer
from regard.service import Service
from regard.types import ModelIdentity


@pytest.fixture
def svc(tmp_path: Path, engine: Engine, scorer: Scorer) -> Iterator[Service]:
    s = Service.open(tmp_path / "data", engine=engine, scorer=scorer)
    yield s
    s.close()


def test_index_and_search_by_image(svc: Service, fr_images: Path, engine: Engine) -> None:
    svc.create_collection("people")
    ids: dict[str, str] = {}
    for name in ("obama", "obama2", "biden"):
        data = (fr_images / f"{name}.jpg").read_bytes()
        out = svc.index_faces("people", data, external_image_id=name, source_note="test photo")
        assert len(out.face_records) == 1 and out.unindexed_faces == []
        rec = out.face_records[0]
        assert rec.face.external_image_id == name and rec.face.source_note == "test photo"
        assert 0 < rec.face.bounding_box.left < 1 and 0 < rec.face.bounding_box.width < 1
        assert rec.face_detail.bounding_box == rec.face.bounding_box  # ratios, converted once
        ids[name] = rec.face.face_id
    found = svc.search_faces_by_image("people", (fr_images / "obama3.jpg").read_bytes())
    assert {m.face.external_image_id for m in found.face_matches} == {"obama", "obama2"}
    assert all(m.similarity >= 80 for m in found.face_matches)
    assert 0 < found.searched_face_bounding_box.width < 1 and found.searched_face_confidence > 50
    biden = svc.search_faces_by_image("people", engine.load_image(fr_images / "biden.jpg"), max_faces=5)
    assert [m.face.face_id for m in biden.face_matches] == [ids["biden"]]
    by_id = svc.search_faces("people", ids["obama"])
    assert [m.face.face_id for m in by_id.face_matches] == [ids["obama2"]]

    # Users: obama's two faces make one user, found from a third photo.
    svc.create_user("people", "barack")
    assoc = svc.associate_faces("people", "barack", [ids["obama"], ids["obama2"], ids["biden"]])
    assert assoc.associated_faces == [ids["obama"], ids["obama2"]]
    assert assoc.unsuccessful[0].reasons == ["LOW_MATCH_CONFIDENCE"]
    users = svc.search_users_by_image("people", (fr_images / "obama3.jpg").read_bytes())
    assert [m.user.user_id for m in users.user_matches] == ["barack"]
    assert users.unsearched_faces == []

    blank = np.full((200, 200, 3), 128, dtype=np.uint8)
    with pytest.raises(InvalidParameter):
        svc.search_faces_by_image("people", blank)


def test_max_faces_and_quality_filter(svc: Service, fr_images: Path, engine: Engine) -> None:
    svc.create_collection("c")
    pair = two_faces(engine, fr_images)
    out = svc.index_faces("c", pair, max_faces=1, quality_filter="NONE")
    assert len(out.face_records) == 1
    assert [u.reasons for u in out.unindexed_faces] == [["EXCEEDS_MAX_FACES"]]
    kept, left = out.face_records[0].face_detail.bounding_box, out.unindexed_faces[0].face_detail.bounding_box
    assert kept.area > left.area  # the largest face is kept
    users = svc.search_users_by_image("c", pair)
    assert [u.reasons for u in users.unsearched_faces] == [["FACE_NOT_LARGEST"]]

    small = face_crop(engine, fr_images / "obama.jpg", 130)
    strict = svc.index_faces("c", small, quality_filter="HIGH")
    assert strict.face_records == []
    assert "SMALL_BOUNDING_BOX" in strict.unindexed_faces[0].reasons
    assert len(svc.index_faces("c", small, quality_filter="LOW").face_records) == 1
    with pytest.raises(InvalidParameter):
        svc.index_faces("c", small, quality_filter="BEST")
    with pytest.raises(InvalidParameter):
        svc.index_faces("c", small, external_image_id="bad id")


def test_a_collection_never_mixes_models(svc: Service, fr_images: Path) -> None:
    other = ModelIdentity("another-model", "2", "f" * 64, "other")
    svc.store.create_collection("foreign", svc.collection_arn("foreign"), other, {})
    with pytest.raises(InvalidParameter, match="another-model"):
        svc.index_faces("foreign", (fr_images / "biden.jpg").read_bytes())
