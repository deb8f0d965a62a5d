"""The live server with boto3: collections, faces, search, users, tags, pagination, idempotency."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from live_server import LiveServer

pytestmark = pytest.mark.slow


def code(exc: ClientError) -> str:
    value: str = exc.response["Error"]["Code"]
    return value


@pytest.fixture()
def collection(rek: Any) -> Any:
    cid = f"col-{uuid.uuid4().hex[:10]}"
    created = rek.create_collection(CollectionId=cid, Tags={"team": "tests"})
    assert created["StatusCode"] == 200
    assert created["CollectionArn"].endswith(f":collection/{cid}")
    assert created["FaceModelVersion"]
    yield cid
    try:
        rek.delete_collection(CollectionId=cid)
    except ClientError as exc:
        assert code(exc) == "ResourceNotFoundException"


def index(rek: Any, cid: str, photo: bytes, external: str) -> dict[str, Any]:
    out: dict[str, Any] = rek.index_faces(CollectionId=cid, Image={"Bytes": photo}, ExternalImageId=external)
    return out


def test_collection_lifecycle(rek: Any, collection: str) -> None:
    with pytest.raises(rek.exceptions.ResourceAlreadyExistsException):
        rek.create_collection(CollectionId=collection)
    described = rek.describe_collection(CollectionId=collection)
    assert described["FaceCount"] == 0 and described["UserCount"] == 0
    assert described["CollectionARN"].endswith(collection)
    assert described["CreationTimestamp"].year >= 2024
    assert collection in rek.list_collections()["CollectionIds"]
    assert rek.delete_collection(CollectionId=collection)["StatusCode"] == 200
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.describe_collection(CollectionId=collection)
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.delete_collection(CollectionId=collection)


def test_list_collections_pagination(rek: Any) -> None:
    ids = [f"page-{uuid.uuid4().hex[:8]}-{i}" for i in range(5)]
    for cid in ids:
        rek.create_collection(CollectionId=cid)
    try:
        seen: list[str] = []
        token: str | None = None
        pages = 0
        while True:
            kwargs: dict[str, Any] = {"MaxResults": 2}
            if token:
                kwargs["NextToken"] = token
            page = rek.list_collections(**kwargs)
            assert len(page["CollectionIds"]) <= 2
            assert len(page["FaceModelVersions"]) == len(page["CollectionIds"])
            seen += page["CollectionIds"]
            pages += 1
            token = page.get("NextToken")
            if not token:
                break
        assert set(ids) <= set(seen) and len(seen) == len(set(seen)) and pages >= 3
        # boto3's own paginator follows NextToken the same way.
        paged = [
            c
            for p in rek.get_paginator("list_collections").paginate(PaginationConfig={"PageSize": 2})
            for c in p["CollectionIds"]
        ]
        assert paged == seen
        with pytest.raises(ClientError) as info:
            rek.list_collections(NextToken="not-a-token-regard-issued")
        assert code(info.value) == "InvalidPaginationTokenException"  # the one AWS defines for this
    finally:
        for cid in ids:
            rek.delete_collection(CollectionId=cid)


def test_index_list_search_delete_faces(rek: Any, collection: str, photos: dict[str, bytes]) -> None:
    indexed = index(rek, collection, photos["obama"], "obama-1")
    (record,) = indexed["FaceRecords"]
    face = record["Face"]
    assert face["ExternalImageId"] == "obama-1" and face["ImageId"] and face["FaceId"]
    assert 0 < face["BoundingBox"]["Width"] < 1
    assert set(record["FaceDetail"]) >= {"BoundingBox", "Landmarks", "Pose", "Quality", "Confidence"}
    assert indexed["UnindexedFaces"] == [] and indexed["FaceModelVersion"]
    obama2 = index(rek, collection, photos["obama2"], "obama-2")["FaceRecords"][0]["Face"]["FaceId"]
    biden = index(rek, collection, photos["biden"], "biden")["FaceRecords"][0]["Face"]["FaceId"]
    assert rek.describe_collection(CollectionId=collection)["FaceCount"] == 3

    listed = rek.list_faces(CollectionId=collection)
    assert {f["FaceId"] for f in listed["Faces"]} == {face["FaceId"], obama2, biden}
    page1 = rek.list_faces(CollectionId=collection, MaxResults=2)
    assert len(page1["Faces"]) == 2 and page1["NextToken"]
    page2 = rek.list_faces(CollectionId=collection, MaxResults=2, NextToken=page1["NextToken"])
    assert len(page2["Faces"]) == 1 and not page2.get("NextToken")
    assert {f["FaceId"] for f in page1["Faces"] + page2["Faces"]} == {face["FaceId"], obama2, biden}
    only = rek.list_faces(CollectionId=collection, FaceIds=[biden])
    assert [f["FaceId"] for f in only["Faces"]] == [biden]

    by_image = rek.search_faces_by_image(CollectionId=collection, Image={"Bytes": photos["obama3"]})
    assert {m["Face"]["FaceId"] for m in by_image["FaceMatches"]} == {face["FaceId"], obama2}
    assert all(m["Similarity"] >= 80 for m in by_image["FaceMatches"])
    sims = [m["Similarity"] for m in by_image["FaceMatches"]]
    assert sims == sorted(sims, reverse=True)
    assert 0 < by_image["SearchedFaceBoundingBox"]["Width"] < 1 and by_image["SearchedFaceConfidence"] > 0
    one = rek.search_faces_by_image(CollectionId=collection, Image={"Bytes": photos["obama3"]}, MaxFaces=1)
    assert len(one["FaceMatches"]) == 1

    by_id = rek.search_faces(CollectionId=collection, FaceId=face["FaceId"])
    assert by_id["SearchedFaceId"] == face["FaceId"]
    assert [m["Face"]["FaceId"] for m in by_id["FaceMatches"]] == [obama2]
    everyone = rek.search_faces(CollectionId=collection, FaceId=face["FaceId"], FaceMatchThreshold=0)
    assert {m["Face"]["FaceId"] for m in everyone["FaceMatches"]} == {obama2, biden}

    deleted = rek.delete_faces(CollectionId=collection, FaceIds=[biden, str(uuid.uuid4())])
    assert deleted["DeletedFaces"] == [biden]
    assert deleted["UnsuccessfulFaceDeletions"][0]["Reasons"] == ["FACE_NOT_FOUND"]
    assert rek.describe_collection(CollectionId=collection)["FaceCount"] == 2

    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.search_faces(CollectionId=collection, FaceId=biden)
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.index_faces(CollectionId="no-such-collection", Image={"Bytes": photos["obama"]})
    with pytest.raises(rek.exceptions.InvalidImageFormatException):
        rek.index_faces(CollectionId=collection, Image={"Bytes": b"GIF89a broken"})
    with pytest.raises(rek.exceptions.InvalidParameterException):
        rek.search_faces_by_image(
            CollectionId=collection, Image={"Bytes": photos["obama"]}, FaceMatchThreshold=101
        )


def _two_faces(photos: dict[str, bytes]) -> bytes:
    """obama.jpg with biden.jpg pasted small in a corner: a large face and one 55 px wide."""
    import io

    from PIL import Image

    canvas = Image.open(io.BytesIO(photos["obama"])).convert("RGB")
    small = Image.open(io.BytesIO(photos["biden"])).convert("RGB")
    canvas.paste(small.resize((small.width // 5, small.height // 5)), (0, 0))
    out = io.BytesIO()
    canvas.save(out, format="JPEG", quality=95)
    return out.getvalue()


def test_index_faces_quality_filter_and_max_faces(
    rek: Any, collection: str, photos: dict[str, bytes]
) -> None:
    image = {"Bytes": _two_faces(photos)}
    everyone = rek.index_faces(CollectionId=collection, Image=image, QualityFilter="NONE", MaxFaces=2)
    assert len(everyone["FaceRecords"]) == 2 and everyone["UnindexedFaces"] == []
    # MaxFaces keeps the largest face; the other is reported, not dropped silently.
    largest = rek.index_faces(
        CollectionId=collection, Image=image, QualityFilter="NONE", MaxFaces=1, DetectionAttributes=["ALL"]
    )
    assert len(largest["FaceRecords"]) == 1
    assert len(largest["FaceRecords"][0]["FaceDetail"]["Landmarks"]) == 30
    kept = largest["FaceRecords"][0]["Face"]["BoundingBox"]
    assert kept["Width"] > 0.2  # obama's face, not the 55 px one
    assert [u["Reasons"] for u in largest["UnindexedFaces"]] == [["EXCEEDS_MAX_FACES"]]
    # QualityFilter HIGH turns the small face away with its reason, and keeps the large one.
    strict = rek.index_faces(CollectionId=collection, Image=image, QualityFilter="HIGH", MaxFaces=2)
    assert len(strict["FaceRecords"]) == 1
    assert len(strict["UnindexedFaces"]) == 1
    assert "SMALL_BOUNDING_BOX" in strict["UnindexedFaces"][0]["Reasons"]


def test_users(rek: Any, collection: str, photos: dict[str, bytes]) -> None:
    a = index(rek, collection, photos["obama"], "o1")["FaceRecords"][0]["Face"]["FaceId"]
    b = index(rek, collection, photos["obama2"], "o2")["FaceRecords"][0]["Face"]["FaceId"]
    c = index(rek, collection, photos["biden"], "b1")["FaceRecords"][0]["Face"]["FaceId"]
    d = index(rek, collection, photos["obama3"], "o3")["FaceRecords"][0]["Face"][
        "FaceId"
    ]  # stays unassociated

    token = str(uuid.uuid4())
    rek.create_user(CollectionId=collection, UserId="barack", ClientRequestToken=token)
    rek.create_user(CollectionId=collection, UserId="barack", ClientRequestToken=token)  # idempotent repeat
    with pytest.raises(ClientError) as info:
        rek.create_user(CollectionId=collection, UserId="barack")
    assert code(info.value) == "ConflictException"  # as Rekognition's model lists for CreateUser
    rek.create_user(CollectionId=collection, UserId="joe")
    users = rek.list_users(CollectionId=collection)["Users"]
    assert {u["UserId"]: u["UserStatus"] for u in users} == {"barack": "CREATED", "joe": "CREATED"}
    first = rek.list_users(CollectionId=collection, MaxResults=1)
    assert len(first["Users"]) == 1 and first["NextToken"]
    second = rek.list_users(CollectionId=collection, MaxResults=1, NextToken=first["NextToken"])
    assert {first["Users"][0]["UserId"], second["Users"][0]["UserId"]} == {"barack", "joe"}

    assoc_token = str(uuid.uuid4())
    assoc = rek.associate_faces(
        CollectionId=collection, UserId="barack", FaceIds=[a, b, c], ClientRequestToken=assoc_token
    )
    assert {f["FaceId"] for f in assoc["AssociatedFaces"]} == {a, b}
    (refused,) = assoc["UnsuccessfulFaceAssociations"]
    assert refused["FaceId"] == c and refused["Reasons"] == ["LOW_MATCH_CONFIDENCE"]
    assert assoc["UserStatus"] == "ACTIVE"
    again = rek.associate_faces(
        CollectionId=collection, UserId="barack", FaceIds=[a, b, c], ClientRequestToken=assoc_token
    )
    assert again["AssociatedFaces"] == assoc["AssociatedFaces"]
    with pytest.raises(ClientError) as info:
        rek.associate_faces(
            CollectionId=collection, UserId="barack", FaceIds=[a], ClientRequestToken=assoc_token
        )
    assert code(info.value) == "IdempotentParameterMismatchException"
    rek.associate_faces(CollectionId=collection, UserId="joe", FaceIds=[c])

    assert {f["FaceId"] for f in rek.list_faces(CollectionId=collection, UserId="barack")["Faces"]} == {a, b}

    by_image = rek.search_users_by_image(CollectionId=collection, Image={"Bytes": photos["obama3"]})
    assert [m["User"]["UserId"] for m in by_image["UserMatches"]] == ["barack"]
    assert by_image["UserMatches"][0]["Similarity"] >= 80
    assert "BoundingBox" in by_image["SearchedFace"]["FaceDetail"]
    by_face = rek.search_users(CollectionId=collection, FaceId=d)
    assert [m["User"]["UserId"] for m in by_face["UserMatches"]] == ["barack"]
    assert by_face["SearchedFace"]["FaceId"] == d
    by_user = rek.search_users(CollectionId=collection, UserId="barack", UserMatchThreshold=0)
    assert by_user["SearchedUser"]["UserId"] == "barack"
    assert [m["User"]["UserId"] for m in by_user["UserMatches"]] == ["joe"]

    with pytest.raises(rek.exceptions.InvalidParameterException):
        rek.search_users(CollectionId=collection)  # neither UserId nor FaceId
    undeletable = rek.delete_faces(CollectionId=collection, FaceIds=[a])
    assert undeletable["DeletedFaces"] == []
    assert undeletable["UnsuccessfulFaceDeletions"][0]["Reasons"] == ["ASSOCIATED_TO_AN_EXISTING_USER"]

    dis = rek.disassociate_faces(CollectionId=collection, UserId="barack", FaceIds=[b, c])
    assert [f["FaceId"] for f in dis["DisassociatedFaces"]] == [b]
    assert dis["UnsuccessfulFaceDisassociations"][0]["Reasons"] == ["ASSOCIATED_TO_A_DIFFERENT_USER"]
    rek.delete_user(CollectionId=collection, UserId="barack")
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.delete_user(CollectionId=collection, UserId="barack")
    assert [u["UserId"] for u in rek.list_users(CollectionId=collection)["Users"]] == ["joe"]
    assert rek.describe_collection(CollectionId=collection)["UserCount"] == 1


def test_tags(rek: Any, collection: str) -> None:
    arn = rek.describe_collection(CollectionId=collection)["CollectionARN"]
    assert rek.list_tags_for_resource(ResourceArn=arn)["Tags"] == {"team": "tests"}
    rek.tag_resource(ResourceArn=arn, Tags={"owner": "qa", "team": "api"})
    assert rek.list_tags_for_resource(ResourceArn=arn)["Tags"] == {"team": "api", "owner": "qa"}
    rek.untag_resource(ResourceArn=arn, TagKeys=["team"])
    assert rek.list_tags_for_resource(ResourceArn=arn)["Tags"] == {"owner": "qa"}
    with pytest.raises(ClientError) as info:
        rek.list_tags_for_resource(ResourceArn=arn.replace(collection, "missing-collection"))
    assert code(info.value) == "ResourceNotFoundException"


def test_two_workers_share_one_data_dir(
    tmp_path_factory: pytest.TempPathFactory, photos: dict[str, bytes]
) -> None:
    """Faces indexed through one worker process are listed through the other: the request log's
    ``pid`` shows which worker served each call, and the test only ends once a listing served by
    a worker other than the one that indexed a face has returned every face."""
    from live_server import start_server, stop_server

    server: LiveServer = start_server(tmp_path_factory.mktemp("two-workers"), workers=2)
    try:

        def served_by(response: dict[str, Any]) -> int:
            request_id = response["ResponseMetadata"]["RequestId"]
            lines = [r for r in server.log_lines() if r.get("request_id") == request_id]
            assert len(lines) == 1 and lines[0]["status"] == 200, lines
            return int(lines[0]["pid"])

        # A new client opens a new connection, which either worker may accept.
        server.client().create_collection(CollectionId="shared")
        indexed_by: dict[str, int] = {}
        for i in range(4):
            r = server.client().index_faces(
                CollectionId="shared", Image={"Bytes": photos["obama"]}, ExternalImageId=f"o{i}"
            )
            indexed_by[r["FaceRecords"][0]["Face"]["FaceId"]] = served_by(r)
        crossed = False  # a listing served by one worker returned a face indexed by the other
        workers: set[int] = set(indexed_by.values())
        for _ in range(200):  # until it happens (a new connection usually finds the other worker)
            listed = server.client().list_faces(CollectionId="shared")
            assert {f["FaceId"] for f in listed["Faces"]} == set(indexed_by)
            lister = served_by(listed)
            workers.add(lister)
            crossed = any(lister != indexer for indexer in indexed_by.values())
            if crossed:
                break
        assert crossed, f"every request went to one worker: {workers}"
        assert len(workers) == 2 and server.process.pid not in workers, workers
    finally:
        assert stop_server(server) in (0, -15)
        assert "Application shutdown complete" in server.log_path.read_text()


def test_search_without_a_face_and_bad_page_tokens(rek: Any, collection: str) -> None:
    import io

    from PIL import Image

    blank = io.BytesIO()
    Image.new("RGB", (160, 120), (200, 200, 200)).save(blank, format="JPEG")
    with pytest.raises(rek.exceptions.InvalidParameterException, match="no faces"):
        rek.search_faces_by_image(CollectionId=collection, Image={"Bytes": blank.getvalue()})
    # SearchUsersByImage answers an image without a face with no match and no SearchedFace (as AWS).
    nobody = rek.search_users_by_image(CollectionId=collection, Image={"Bytes": blank.getvalue()})
    assert nobody["UserMatches"] == [] and "SearchedFace" not in nobody
    empty = rek.index_faces(CollectionId=collection, Image={"Bytes": blank.getvalue()})
    assert empty["FaceRecords"] == [] and empty["UnindexedFaces"] == []
    for call in (
        lambda: rek.list_faces(CollectionId=collection, NextToken="forged-token"),
        lambda: rek.list_users(CollectionId=collection, NextToken="forged-token"),
    ):
        with pytest.raises(ClientError) as info:
            call()
        assert code(info.value) == "InvalidPaginationTokenException"
