"""Users: CreateUser, DeleteUser, ListUsers, AssociateFaces, DisassociateFaces, SearchUsers(ByImage)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from regard.errors import InvalidParameter, ResourceNotFound, ServiceQuotaExceeded
from regard.face.imaging import image_size
from regard.service.base import Removal, ServiceBase
from regard.service.idempotency import idempotent
from regard.service.images import FaceDetail, ImageInput, decode, probe_face
from regard.service.quality import check_quality_filter, quality_reasons
from regard.service.rules import (
    DEFAULT_USER_MATCH_THRESHOLD_ASSOCIATE,
    FACE_ID_RE,
    USER_ID_RE,
    check,
    check_face_ids,
    check_range,
    page_size,
    user_search_params,
)
from regard.service.search import UserMatch, match_users
from regard.store.base import MAX_FACES_PER_USER, User
from regard.types import Embeddings


@dataclass(frozen=True, slots=True)
class UnsuccessfulFaceAssociation:
    """AssociateFaces' UnsuccessfulFaceAssociations: FaceId, UserId, Confidence, Reasons.

    Reasons: FACE_NOT_FOUND, ASSOCIATED_TO_A_DIFFERENT_USER, LOW_MATCH_CONFIDENCE.
    """

    face_id: str
    user_id: str | None
    confidence: float | None
    reasons: list[str]


@dataclass(frozen=True, slots=True)
class AssociateFacesResult:
    """AssociateFaces: AssociatedFaces, UnsuccessfulFaceAssociations, UserStatus."""

    associated_faces: list[str]
    unsuccessful: list[UnsuccessfulFaceAssociation]
    user_status: str


@dataclass(frozen=True, slots=True)
class UnsuccessfulFaceDisassociation:
    """DisassociateFaces' UnsuccessfulFaceDisassociations. Reasons: FACE_NOT_FOUND,
    ASSOCIATED_TO_A_DIFFERENT_USER."""

    face_id: str
    user_id: str | None
    reasons: list[str]


@dataclass(frozen=True, slots=True)
class DisassociateFacesResult:
    """DisassociateFaces: DisassociatedFaces, UnsuccessfulFaceDisassociations, UserStatus."""

    disassociated_faces: list[str]
    unsuccessful: list[UnsuccessfulFaceDisassociation]
    user_status: str


@dataclass(frozen=True, slots=True)
class ListUsersResult:
    """ListUsers: Users (UserId, UserStatus), NextToken."""

    users: list[User]
    next_token: str | None


@dataclass(frozen=True, slots=True)
class SearchUsersResult:
    """SearchUsers: UserMatches, FaceModelVersion, SearchedFace (FaceId) or SearchedUser (UserId)."""

    user_matches: list[UserMatch]
    face_model_version: str
    searched_face_id: str | None = None
    searched_user_id: str | None = None


@dataclass(frozen=True, slots=True)
class UnsearchedFace:
    """SearchUsersByImage's UnsearchedFaces: Reasons (e.g. FACE_NOT_LARGEST) and the FaceDetail."""

    reasons: list[str]
    face_detail: FaceDetail


@dataclass(frozen=True, slots=True)
class SearchUsersByImageResult:
    """SearchUsersByImage: UserMatches, FaceModelVersion, SearchedFace (FaceDetail), UnsearchedFaces.

    ``searched_face`` is None when the image holds no face that can be searched (none, or its
    largest falls short of QualityFilter): then UserMatches is empty, as in Rekognition.
    """

    user_matches: list[UserMatch]
    face_model_version: str
    searched_face: FaceDetail | None
    unsearched_faces: list[UnsearchedFace]
    #: The searched face as a small JPEG (evidence for review; never rendered).
    searched_face_crop: bytes | None = None


class UserOperations(ServiceBase):
    """Rekognition's user operations: users of a collection, their faces, and search among them."""

    def create_user(
        self, collection_id: str, user_id: str, *, client_request_token: str | None = None
    ) -> None:
        """CreateUser. ResourceAlreadyExists unless a repeat of the same ClientRequestToken."""
        self._collection(collection_id)
        check(USER_ID_RE, user_id, "UserId")

        def run() -> dict[str, Any]:
            self.store.create_user(collection_id, user_id)
            return {}

        idempotent(self.store, collection_id, "CreateUser", client_request_token, {"UserId": user_id}, run)

    def delete_user(
        self, collection_id: str, user_id: str, *, client_request_token: str | None = None
    ) -> None:
        """DeleteUser: the user goes; its faces stay in the collection, unassociated."""
        self._collection(collection_id)
        check(USER_ID_RE, user_id, "UserId")

        def run() -> dict[str, Any]:
            self.store.delete_user(collection_id, user_id)
            self._removed(Removal(collection_id, user_ids=[user_id]))
            return {}

        idempotent(self.store, collection_id, "DeleteUser", client_request_token, {"UserId": user_id}, run)

    def list_users(
        self, collection_id: str, *, max_results: int | None = None, next_token: str | None = None
    ) -> ListUsersResult:
        """ListUsers (MaxResults 1-500, default 500)."""
        self._collection(collection_id)
        limit = page_size(max_results, 500, 500, allow_zero=False)
        page = self.store.list_users(collection_id, limit, next_token)
        return ListUsersResult(users=page.items, next_token=page.next_token)

    def associate_faces(
        self,
        collection_id: str,
        user_id: str,
        face_ids: Sequence[str],
        *,
        user_match_threshold: float | None = None,
        client_request_token: str | None = None,
    ) -> AssociateFacesResult:
        """AssociateFaces (1-100 FaceIds). A face joins the user only if it matches the user's faces
        (those already associated, else the first face accepted in this call) at UserMatchThreshold
        (default 75) or more; ServiceQuotaExceeded past 100 faces per user."""
        self._collection(collection_id)
        check(USER_ID_RE, user_id, "UserId")
        ids = check_face_ids(face_ids, 1, 100)
        threshold = (
            DEFAULT_USER_MATCH_THRESHOLD_ASSOCIATE if user_match_threshold is None else user_match_threshold
        )
        check_range(threshold, 0, 100, "UserMatchThreshold")

        def run() -> dict[str, Any]:
            user = self.store.get_user(collection_id, user_id)
            found = self.store.get_faces(collection_id, ids)
            refs: list[Embeddings] = []
            if user.face_count:
                page = self.store.list_faces(
                    collection_id, user_id=user_id, face_ids=None, max_results=MAX_FACES_PER_USER, token=None
                )
                refs = [f.embedding for f in page.items]
            unsuccessful: list[dict[str, Any]] = []
            accept: list[str] = []
            for fid in ids:
                rec = found.get(fid)
                if rec is None:
                    unsuccessful.append({"FaceId": fid, "Reasons": ["FACE_NOT_FOUND"]})
                    continue
                if rec.user_id is not None and rec.user_id != user_id:
                    unsuccessful.append(
                        {"FaceId": fid, "UserId": rec.user_id, "Reasons": ["ASSOCIATED_TO_A_DIFFERENT_USER"]}
                    )
                    continue
                if rec.user_id == user_id:
                    continue  # already the user's: ignored, not reported (as in Rekognition)
                if refs:
                    sim = max(self.scorer.compare(rec.embedding, r).similarity for r in refs)
                    if sim < threshold:
                        unsuccessful.append(
                            {
                                "FaceId": fid,
                                "UserId": user_id,
                                "Confidence": sim,
                                "Reasons": ["LOW_MATCH_CONFIDENCE"],
                            }
                        )
                        continue
                accept.append(fid)
                refs.append(rec.embedding)
            if user.face_count + len(accept) > MAX_FACES_PER_USER:
                raise ServiceQuotaExceeded(f"a user holds at most {MAX_FACES_PER_USER} faces")
            stored = set(self.store.associate_faces(collection_id, user_id, accept) if accept else [])
            done = [f for f in accept if f in stored]
            for fid in accept:
                if fid not in done:
                    unsuccessful.append({"FaceId": fid, "Reasons": ["ASSOCIATED_TO_A_DIFFERENT_USER"]})
            status = self.store.get_user(collection_id, user_id).status
            return {"Associated": done, "Unsuccessful": unsuccessful, "UserStatus": status}

        out = idempotent(
            self.store,
            collection_id,
            "AssociateFaces",
            client_request_token,
            {"UserId": user_id, "FaceIds": ids, "UserMatchThreshold": threshold},
            run,
        )
        return AssociateFacesResult(
            associated_faces=list(out["Associated"]),
            unsuccessful=[
                UnsuccessfulFaceAssociation(
                    u["FaceId"], u.get("UserId"), u.get("Confidence"), list(u["Reasons"])
                )
                for u in out["Unsuccessful"]
            ],
            user_status=str(out["UserStatus"]),
        )

    def disassociate_faces(
        self,
        collection_id: str,
        user_id: str,
        face_ids: Sequence[str],
        *,
        client_request_token: str | None = None,
    ) -> DisassociateFacesResult:
        """DisassociateFaces (1-100 FaceIds)."""
        self._collection(collection_id)
        check(USER_ID_RE, user_id, "UserId")
        ids = check_face_ids(face_ids, 1, 100)

        def run() -> dict[str, Any]:
            self.store.get_user(collection_id, user_id)
            found = self.store.get_faces(collection_id, ids)
            unsuccessful: list[dict[str, Any]] = []
            mine: list[str] = []
            for fid in ids:
                rec = found.get(fid)
                if rec is None:
                    unsuccessful.append({"FaceId": fid, "Reasons": ["FACE_NOT_FOUND"]})
                elif rec.user_id != user_id:
                    unsuccessful.append(
                        {"FaceId": fid, "UserId": rec.user_id, "Reasons": ["ASSOCIATED_TO_A_DIFFERENT_USER"]}
                    )
                else:
                    mine.append(fid)
            gone = set(self.store.disassociate_faces(collection_id, user_id, mine) if mine else [])
            done = [f for f in mine if f in gone]
            status = self.store.get_user(collection_id, user_id).status
            return {"Disassociated": done, "Unsuccessful": unsuccessful, "UserStatus": status}

        out = idempotent(
            self.store,
            collection_id,
            "DisassociateFaces",
            client_request_token,
            {"UserId": user_id, "FaceIds": ids},
            run,
        )
        return DisassociateFacesResult(
            disassociated_faces=list(out["Disassociated"]),
            unsuccessful=[
                UnsuccessfulFaceDisassociation(u["FaceId"], u.get("UserId"), list(u["Reasons"]))
                for u in out["Unsuccessful"]
            ],
            user_status=str(out["UserStatus"]),
        )

    def search_users(
        self,
        collection_id: str,
        *,
        user_id: str | None = None,
        face_id: str | None = None,
        user_match_threshold: float | None = None,
        max_users: int | None = None,
    ) -> SearchUsersResult:
        """SearchUsers by UserId or FaceId (exactly one). A user's similarity is the best over its faces;
        the searched user itself is left out."""
        c = self._collection(collection_id)
        if (user_id is None) == (face_id is None):
            raise InvalidParameter("give exactly one of UserId and FaceId")
        threshold, limit = user_search_params(user_match_threshold, max_users)
        probes: list[Embeddings]
        if user_id is not None:
            check(USER_ID_RE, user_id, "UserId")
            self.store.get_user(collection_id, user_id)
            page = self.store.list_faces(
                collection_id, user_id=user_id, face_ids=None, max_results=MAX_FACES_PER_USER, token=None
            )
            probes = [f.embedding for f in page.items]
        else:
            assert face_id is not None
            check(FACE_ID_RE, face_id, "FaceId")
            rec = self.store.get_faces(collection_id, [face_id]).get(face_id)
            if rec is None:
                raise ResourceNotFound(f"face {face_id} is not in collection {collection_id}")
            probes = [rec.embedding]
        matches = match_users(
            self.store, self.scorer, c, probes, threshold, limit, exclude_user=user_id, exclude_face=face_id
        )
        return SearchUsersResult(
            user_matches=matches,
            face_model_version=self.model_version(c),
            searched_face_id=face_id,
            searched_user_id=user_id,
        )

    def search_users_by_image(
        self,
        collection_id: str,
        image: ImageInput,
        *,
        user_match_threshold: float | None = None,
        max_users: int | None = None,
        quality_filter: str = "NONE",
    ) -> SearchUsersByImageResult:
        """SearchUsersByImage: the largest face against the collection's users; other faces are
        reported as UnsearchedFaces (FACE_NOT_LARGEST).

        An image without a face, or whose largest face falls short of QualityFilter, is no error
        (Rekognition answers an empty UserMatches and no SearchedFace); a largest face that falls
        short is reported in UnsearchedFaces with the reasons.
        """
        c = self._collection(collection_id)
        threshold, limit = user_search_params(user_match_threshold, max_users)
        self._check_model(c)
        check_quality_filter(quality_filter)
        rgb = decode(self.engine, image)
        largest = self.engine.probe(rgb, others=True)
        width, height = image_size(rgb)
        if largest is None or quality_reasons(largest.face.analysis, quality_filter, width, height):
            unsearched: list[UnsearchedFace] = []
            if largest is not None:
                reasons = quality_reasons(largest.face.analysis, quality_filter, width, height)
                unsearched.append(
                    UnsearchedFace(reasons, FaceDetail.of(largest.face.analysis, width, height))
                )
                unsearched.extend(
                    UnsearchedFace(["FACE_NOT_LARGEST"], FaceDetail.of(a, width, height))
                    for a in largest.others
                )
            return SearchUsersByImageResult(
                user_matches=[],
                face_model_version=self.model_version(c),
                searched_face=None,
                unsearched_faces=unsearched,
            )
        found = probe_face(rgb, largest)
        matches = match_users(
            self.store, self.scorer, c, [found.embedding], threshold, limit, exclude_user=None
        )
        return SearchUsersByImageResult(
            user_matches=matches,
            face_model_version=self.model_version(c),
            searched_face=found.detail,
            unsearched_faces=[UnsearchedFace(["FACE_NOT_LARGEST"], d) for d in found.others],
            searched_face_crop=found.crop,
        )
