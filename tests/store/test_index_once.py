"""Issue 19, item 4: IndexFaces stores one image (same bytes, same ExternalImageId) once per
collection, on both backends and across services sharing one store."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from regard.service import Service


def test_the_same_image_under_the_same_external_image_id_is_stored_once(
    open_service: Callable[[], Service], fr_images: Path
) -> None:
    first, second = open_service(), open_service()
    first.create_collection("people")
    obama = (fr_images / "obama.jpg").read_bytes()
    indexed = first.index_faces("people", obama, external_image_id="obama")
    ids = [r.face.face_id for r in indexed.face_records]
    assert len(ids) == 1
    again = second.index_faces("people", obama, external_image_id="obama")
    assert [r.face.face_id for r in again.face_records] == ids
    assert again.face_records[0].face_detail.bounding_box == indexed.face_records[0].face_detail.bounding_box
    assert first.describe_collection("people").face_count == 1
    # the rule holds per collection, per ExternalImageId and per image bytes
    first.create_collection("others")
    assert (
        first.index_faces("others", obama, external_image_id="obama").face_records[0].face.face_id not in ids
    )
    assert first.index_faces("people", obama, external_image_id="obama-b").face_records
    assert (
        first.index_faces("people", obama + b"\0", external_image_id="obama").face_records[0].face.face_id
        not in ids
    )
    assert first.describe_collection("people").face_count == 3


def test_concurrent_identical_requests_store_one_face(
    open_service: Callable[[], Service], fr_images: Path
) -> None:
    services = [open_service() for _ in range(2)]
    services[0].create_collection("people")
    biden = (fr_images / "biden.jpg").read_bytes()
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(lambda i: services[i % 2].index_faces("people", biden, external_image_id="b"), range(4))
        )
    assert len({r.face_records[0].face.face_id for r in results}) == 1
    assert services[0].describe_collection("people").face_count == 1
