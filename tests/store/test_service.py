"""The behavioural suite of collections, faces, users and tags, run on SQLite and on PostgreSQL."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable

import pytest

from regard.errors import (
    IdempotentParameterMismatch,
    InvalidPaginationToken,
    InvalidParameter,
    ResourceAlreadyExists,
    ResourceNotFound,
    ServiceQuotaExceeded,
)
from regard.service import Service
from store.synthetic import new_faces, people


def test_collection_lifecycle(service: Service) -> None:
    created = service.create_collection("alpha", {"team": "a"})
    assert created.collection_arn.endswith(":collection/alpha")
    assert created.status_code == 200
    with pytest.raises(ResourceAlreadyExists):
        service.create_collection("alpha")
    for bad in ("", "has space", "x" * 256, "slash/no"):
        with pytest.raises(InvalidParameter):
            service.create_collection(bad)
    d = service.describe_collection("alpha")
    assert (d.face_count, d.user_count, d.content_version) == (0, 0, 0)
    assert d.face_model_version == created.face_model_version
    for name in ("beta", "gamma", "delta"):
        service.create_collection(name)
    first = service.list_collections(max_results=2)
    assert first.collection_ids == ["alpha", "beta"]
    assert first.next_token is not None
    rest = service.list_collections(max_results=2, next_token=first.next_token)
    assert rest.collection_ids == ["delta", "gamma"]
    assert rest.next_token is None
    assert len(rest.face_model_versions) == 2
    assert service.delete_collection("beta") == 200
    with pytest.raises(ResourceNotFound):
        service.describe_collection("beta")
    with pytest.raises(ResourceNotFound):
        service.delete_collection("beta")
    with pytest.raises(InvalidPaginationToken):
        service.list_collections(next_token="not-a-token")


def test_search_finds_the_same_person_with_calibrated_scores(service: Service) -> None:
    service.create_collection("c")
    vectors = people(20, 3, seed=1)
    records = service.add_templates("c", new_faces(vectors, external="img"))
    assert service.describe_collection("c").face_count == 60
    probe = records[4]  # person 1
    result = service.search_faces("c", probe.face_id)
    ids = {m.face.face_id for m in result.face_matches}
    assert ids == {records[3].face_id, records[5].face_id}  # the two others of person 1, not itself
    for m in result.face_matches:
        assert m.similarity >= 80
        assert math.isclose(m.similarity, min(100.0, -20 * math.log10(m.fmr)), abs_tol=1e-6)
        assert m.face.external_image_id == "img"
        assert m.face.embedding.shape == (128,)
    assert [m.distance for m in result.face_matches] == sorted(m.distance for m in result.face_matches)
    # Threshold 0 returns everyone else, MaxFaces caps, nearest first.
    wide = service.search_faces("c", probe.face_id, face_match_threshold=0, max_faces=10)
    assert len(wide.face_matches) == 10
    assert {m.face.face_id for m in wide.face_matches[:2]} == ids
    # A template near person 7 finds all three of person 7.
    near = service.search_faces_by_vector("c", vectors[21] + 0.01)
    assert {m.face.face_id for m in near} == {r.face_id for r in records[21:24]}
    with pytest.raises(InvalidParameter):
        service.search_faces("c", probe.face_id, max_faces=0)
    with pytest.raises(InvalidParameter):
        service.search_faces("c", probe.face_id, max_faces=4097)
    with pytest.raises(InvalidParameter):
        service.search_faces("c", probe.face_id, face_match_threshold=101)
    with pytest.raises(ResourceNotFound):
        service.search_faces("c", str(uuid.uuid4()))
    with pytest.raises(ResourceNotFound):
        service.search_faces("nope", probe.face_id)


def test_list_faces_pagination_and_filters(service: Service) -> None:
    service.create_collection("c")
    records = service.add_templates("c", new_faces(people(25, 1, seed=2)))
    seen: list[str] = []
    token = None
    while True:
        page = service.list_faces("c", max_results=7, next_token=token)
        seen.extend(f.face_id for f in page.faces)
        token = page.next_token
        if token is None:
            break
    assert seen == sorted(r.face_id for r in records)
    picked = [records[0].face_id, records[3].face_id, str(uuid.uuid4())]
    assert {f.face_id for f in service.list_faces("c", face_ids=picked).faces} == set(picked[:2])
    service.create_user("c", "u")
    service.associate_faces("c", "u", [records[0].face_id])
    assert [f.face_id for f in service.list_faces("c", user_id="u").faces] == [records[0].face_id]
    with pytest.raises(InvalidPaginationToken):
        service.list_faces("c", next_token="garbage!")
    service.create_collection("other")
    other_token = service.list_faces("c", max_results=1).next_token
    with pytest.raises(InvalidPaginationToken):
        service.list_faces("other", next_token=other_token)
    with pytest.raises(InvalidParameter):
        service.list_faces("c", face_ids=["not-a-uuid"])


def test_delete_faces_reports_what_it_could_not_delete(service: Service) -> None:
    service.create_collection("c")
    records = service.add_templates("c", new_faces(people(2, 2, seed=3)))
    service.create_user("c", "owner")
    service.associate_faces("c", "owner", [records[0].face_id])
    missing = str(uuid.uuid4())
    before = service.describe_collection("c")
    out = service.delete_faces("c", [records[0].face_id, records[2].face_id, missing])
    assert out.deleted_faces == [records[2].face_id]
    reasons = {u.face_id: (u.user_id, u.reasons) for u in out.unsuccessful}
    assert reasons[records[0].face_id] == ("owner", ["ASSOCIATED_TO_AN_EXISTING_USER"])
    assert reasons[missing] == (None, ["FACE_NOT_FOUND"])
    after = service.describe_collection("c")
    assert after.face_count == 3
    assert after.content_version == before.content_version + 1
    assert after.content_hash != before.content_hash
    hits = service.search_faces_by_vector("c", records[2].embedding, face_match_threshold=0, max_faces=10)
    assert records[2].face_id not in {m.face.face_id for m in hits}


def test_users_associate_search_and_delete(service: Service) -> None:
    service.create_collection("c")
    vectors = people(3, 4, seed=4)
    r = service.add_templates("c", new_faces(vectors))
    service.create_user("c", "ann")
    with pytest.raises(ResourceAlreadyExists):
        service.create_user("c", "ann")
    with pytest.raises(InvalidParameter):
        service.create_user("c", "bad user")
    assert service.list_users("c").users[0].status == "CREATED"
    # Person 0's faces join; person 1's face does not match them (LOW_MATCH_CONFIDENCE).
    out = service.associate_faces("c", "ann", [r[0].face_id, r[1].face_id, r[4].face_id])
    assert out.associated_faces == [r[0].face_id, r[1].face_id]
    assert out.user_status == "ACTIVE"
    (low,) = out.unsuccessful
    assert low.face_id == r[4].face_id and low.reasons == ["LOW_MATCH_CONFIDENCE"]
    assert low.confidence is not None and low.confidence < 75
    service.create_user("c", "bob")
    service.associate_faces("c", "bob", [r[4].face_id, r[5].face_id])
    taken = service.associate_faces("c", "ann", [r[4].face_id, str(uuid.uuid4())])
    assert taken.associated_faces == []
    assert sorted(u.reasons[0] for u in taken.unsuccessful) == [
        "ASSOCIATED_TO_A_DIFFERENT_USER",
        "FACE_NOT_FOUND",
    ]
    # SearchUsers by face: an unassociated face of person 0 finds ann; by user: bob finds nobody else.
    found = service.search_users("c", face_id=r[2].face_id)
    assert [m.user.user_id for m in found.user_matches] == ["ann"]
    assert found.user_matches[0].similarity >= 80 and found.user_matches[0].fmr <= 1e-4
    assert service.search_users("c", user_id="bob").user_matches == []
    assert (
        service.search_users("c", user_id="bob", user_match_threshold=0).user_matches[0].user.user_id == "ann"
    )
    with pytest.raises(InvalidParameter):
        service.search_users("c")
    with pytest.raises(InvalidParameter):
        service.search_users("c", user_id="ann", face_id=r[0].face_id)
    # Disassociate: foreign and missing faces are reported.
    dis = service.disassociate_faces("c", "ann", [r[1].face_id, r[4].face_id])
    assert dis.disassociated_faces == [r[1].face_id]
    assert dis.unsuccessful[0].reasons == ["ASSOCIATED_TO_A_DIFFERENT_USER"]
    # DeleteUser keeps the faces, unassociated.
    service.delete_user("c", "bob")
    assert [u.user_id for u in service.list_users("c").users] == ["ann"]
    assert service.list_faces("c", face_ids=[r[4].face_id]).faces[0].user_id is None
    with pytest.raises(ResourceNotFound):
        service.delete_user("c", "bob")
    assert service.describe_collection("c").user_count == 1


def test_user_pagination_and_quota(service: Service) -> None:
    service.create_collection("c")
    for i in range(5):
        service.create_user("c", f"user{i}")
    page = service.list_users("c", max_results=2)
    rest = service.list_users("c", max_results=10, next_token=page.next_token)
    assert [u.user_id for u in page.users + rest.users] == [f"user{i}" for i in range(5)]
    with pytest.raises(InvalidParameter):
        service.list_users("c", max_results=501)
    # 101 near-identical faces of one person: the 101st exceeds the quota.
    records = service.add_templates("c", new_faces(people(1, 101, seed=5, spread=0.05)))
    service.associate_faces("c", "user0", [f.face_id for f in records[:100]])
    assert service.list_users("c", max_results=1).users[0].face_count == 100
    with pytest.raises(ServiceQuotaExceeded):
        service.associate_faces("c", "user0", [records[100].face_id])
    with pytest.raises(InvalidParameter):
        service.associate_faces("c", "user1", [f.face_id for f in records[:101]])


def test_client_request_tokens_are_idempotent(service: Service) -> None:
    service.create_collection("c")
    r = service.add_templates("c", new_faces(people(1, 3, seed=6)))
    service.create_user("c", "u", client_request_token="create-1")
    service.create_user("c", "u", client_request_token="create-1")  # a retry: same answer, no error
    with pytest.raises(IdempotentParameterMismatch):
        service.create_user("c", "v", client_request_token="create-1")
    first = service.associate_faces("c", "u", [r[0].face_id], client_request_token="assoc-1")
    again = service.associate_faces("c", "u", [r[0].face_id], client_request_token="assoc-1")
    assert first == again
    with pytest.raises(IdempotentParameterMismatch):
        service.associate_faces("c", "u", [r[1].face_id], client_request_token="assoc-1")
    d1 = service.disassociate_faces("c", "u", [r[0].face_id], client_request_token="dis-1")
    assert d1 == service.disassociate_faces("c", "u", [r[0].face_id], client_request_token="dis-1")
    service.delete_user("c", "u", client_request_token="del-1")
    service.delete_user("c", "u", client_request_token="del-1")
    with pytest.raises(ResourceNotFound):
        service.delete_user("c", "u", client_request_token="del-2")
    with pytest.raises(InvalidParameter):
        service.create_user("c", "w", client_request_token="bad token!")


def test_tags(service: Service) -> None:
    arn = service.create_collection("c", {"a": "1"}).collection_arn
    service.tag_resource(arn, {"b": "2", "a": "3"})
    assert service.list_tags_for_resource(arn) == {"a": "3", "b": "2"}
    service.untag_resource(arn, ["a", "missing"])
    assert service.list_tags_for_resource(arn) == {"b": "2"}
    with pytest.raises(InvalidParameter):
        service.tag_resource(arn, {"aws:reserved": "x"})
    with pytest.raises(InvalidParameter):
        service.tag_resource("arn:aws:s3:::bucket", {"a": "b"})
    with pytest.raises(ResourceNotFound):
        service.list_tags_for_resource(arn.replace("/c", "/zzz"))
    with pytest.raises(ServiceQuotaExceeded):
        service.tag_resource(arn, {f"k{i}": "v" for i in range(200)})


def test_content_version_and_hash_track_every_change(service: Service) -> None:
    service.create_collection("c")
    seen = {service.describe_collection("c").content_hash}
    records = service.add_templates("c", new_faces(people(1, 2, seed=7)))
    seen.add(service.describe_collection("c").content_hash)
    service.create_user("c", "u")
    seen.add(service.describe_collection("c").content_hash)
    service.associate_faces("c", "u", [records[0].face_id])
    seen.add(service.describe_collection("c").content_hash)
    service.delete_faces("c", [records[1].face_id])
    d = service.describe_collection("c")
    seen.add(d.content_hash)
    assert len(seen) == 5
    assert d.content_version == 4


def test_provenance_is_kept(service: Service) -> None:
    service.create_collection("c")
    faces = new_faces(people(1, 1, seed=8))
    from dataclasses import replace

    faces = [replace(faces[0], source_note="front desk camera", legal_basis="consent")]
    service.add_templates("c", faces)
    stored = service.list_faces("c").faces[0]
    assert (stored.source_note, stored.legal_basis) == ("front desk camera", "consent")


def test_two_services_share_one_store(open_service: Callable[[], Service]) -> None:
    a, b = open_service(), open_service()
    a.create_collection("c")
    vectors = people(5, 2, seed=9)
    assert b.search_faces_by_vector("c", vectors[0]) == []
    records = a.add_templates("c", new_faces(vectors))
    hits = b.search_faces_by_vector("c", vectors[0])
    assert {m.face.face_id for m in hits} == {records[0].face_id, records[1].face_id}
    b.delete_faces("c", [records[0].face_id])
    assert {m.face.face_id for m in a.search_faces_by_vector("c", vectors[0])} == {records[1].face_id}
