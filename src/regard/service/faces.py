"""Faces: IndexFaces, ListFaces, DeleteFaces, SearchFaces and SearchFacesByImage (plus template imports)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from regard.errors import InvalidParameter, ResourceNotFound
from regard.face.engine import Engine
from regard.face.imaging import face_crop_jpeg, image_size
from regard.service.base import Removal, ServiceBase
from regard.service.images import FaceDetail, ImageInput, decode, encoded, probe
from regard.service.quality import check_quality_filter, quality_reasons
from regard.service.rules import (
    EXTERNAL_IMAGE_ID_RE,
    FACE_ID_RE,
    MAX_INDEX_FACES,
    USER_ID_RE,
    check,
    check_face_ids,
    check_search_params,
    page_size,
)
from regard.service.search import FaceMatch, match_faces
from regard.store.base import Collection, FaceRecord, NewFace, as_vector
from regard.types import Box, Embeddings, Face, ModelIdentity


@dataclass(frozen=True, slots=True)
class DetectedImage:
    """What the engine found in one image for IndexFaces: every face (largest first, analysed and
    embedded), the image's size in pixels, the sha256 of its encoded bytes (None when it came
    decoded) and the model that made the templates. Plain data: it crosses process boundaries
    (batch enrolment's workers make it, the process holding the store and the audit log stores it)."""

    width: int
    height: int
    faces: list[Face]
    sha256: str | None
    model: ModelIdentity
    #: Each face as a small JPEG (same order as ``faces``): the enrolled crop a reviewer sees
    #: when the collection requires review. None when not made (``detect_image(crops=False)``).
    crops: list[bytes] | None = None


def detect_image(engine: Engine, image: ImageInput, *, crops: bool = True) -> DetectedImage:
    """Decode ``image`` (the engine's limits apply) and detect, analyse and embed every face in one
    batch: IndexFaces' engine work, which :meth:`FaceOperations.index_detected` then stores."""
    data = encoded(image)
    digest = hashlib.sha256(data).hexdigest() if data is not None else None
    rgb = decode(engine, image)
    width, height = image_size(rgb)
    faces = engine.faces(rgb, max_faces=MAX_INDEX_FACES)
    made = [face_crop_jpeg(rgb, f.detection.box) for f in faces] if crops else None
    return DetectedImage(width, height, faces, digest, engine.model_identity, made)


@dataclass(frozen=True, slots=True)
class IndexedFace:
    """One of IndexFaces' FaceRecords: the stored Face plus its FaceDetail."""

    face: FaceRecord
    face_detail: FaceDetail
    #: The face as a small JPEG (evidence for review; never rendered into a response).
    crop: bytes | None = None


@dataclass(frozen=True, slots=True)
class UnindexedFace:
    """One of IndexFaces' UnindexedFaces: Reasons plus the FaceDetail."""

    reasons: list[str]
    face_detail: FaceDetail


@dataclass(frozen=True, slots=True)
class IndexFacesResult:
    """IndexFaces: FaceRecords, UnindexedFaces, FaceModelVersion (every box in ratios)."""

    face_records: list[IndexedFace]
    unindexed_faces: list[UnindexedFace]
    face_model_version: str


@dataclass(frozen=True, slots=True)
class ListFacesResult:
    """ListFaces: Faces, NextToken, FaceModelVersion."""

    faces: list[FaceRecord]
    next_token: str | None
    face_model_version: str


@dataclass(frozen=True, slots=True)
class UnsuccessfulFaceDeletion:
    """DeleteFaces' UnsuccessfulFaceDeletions: FaceId, UserId, Reasons.

    Reasons: ASSOCIATED_TO_AN_EXISTING_USER, FACE_NOT_FOUND.
    """

    face_id: str
    user_id: str | None
    reasons: list[str]


@dataclass(frozen=True, slots=True)
class DeleteFacesResult:
    """DeleteFaces: DeletedFaces, UnsuccessfulFaceDeletions."""

    deleted_faces: list[str]
    unsuccessful: list[UnsuccessfulFaceDeletion]


@dataclass(frozen=True, slots=True)
class SearchFacesResult:
    """SearchFaces: SearchedFaceId, FaceMatches (most similar first), FaceModelVersion."""

    searched_face_id: str
    face_matches: list[FaceMatch]
    face_model_version: str


@dataclass(frozen=True, slots=True)
class SearchFacesByImageResult:
    """SearchFacesByImage: SearchedFaceBoundingBox (ratios), SearchedFaceConfidence, FaceMatches."""

    searched_face_bounding_box: Box
    searched_face_confidence: float
    face_matches: list[FaceMatch]
    face_model_version: str
    #: The searched face as a small JPEG (evidence for review; never rendered).
    searched_face_crop: bytes | None = None


class FaceOperations(ServiceBase):
    """Rekognition's face operations: index, list, delete and search a collection's faces."""

    def index_faces(
        self,
        collection_id: str,
        image: ImageInput,
        *,
        external_image_id: str | None = None,
        max_faces: int | None = None,
        quality_filter: str = "AUTO",
        source_note: str | None = None,
        legal_basis: str | None = None,
    ) -> IndexFacesResult:
        """IndexFaces: detect faces (largest first), leave out those under the QualityFilter bar or
        beyond MaxFaces (at most 100; reported in UnindexedFaces with reasons), store the rest atomically.

        Indexing the same image bytes (sha256) under the same ExternalImageId into a collection that
        already holds faces of it stores nothing new and returns those faces' records (same FaceIds):
        Rekognition does not save duplicate face metadata. Without an ExternalImageId every call stores.

        ``source_note`` and ``legal_basis`` are optional provenance kept with each face; the sha256
        of encoded ``image`` bytes is kept with each face too (:attr:`NewFace.image_sha256`).
        """
        c = self._index_checks(collection_id, external_image_id, max_faces, quality_filter)
        self._check_model(c)
        detected = detect_image(self.engine, image)
        return self._index_detected(
            c, detected, external_image_id, max_faces, quality_filter, source_note, legal_basis
        )

    def index_detected(
        self,
        collection_id: str,
        detected: DetectedImage,
        *,
        external_image_id: str | None = None,
        max_faces: int | None = None,
        quality_filter: str = "AUTO",
        source_note: str | None = None,
        legal_basis: str | None = None,
    ) -> IndexFacesResult:
        """IndexFaces on an image another engine has already run on (:func:`detect_image`, e.g. on
        a batch-enrolment worker, :mod:`regard.enrol`): the same checks, filters and store as
        :meth:`index_faces`. InvalidParameter unless ``detected`` was made by the collection's model.
        """
        c = self._index_checks(collection_id, external_image_id, max_faces, quality_filter)
        model = detected.model
        if (model.name, model.version, model.weights_sha256) != (
            c.face_model.name,
            c.face_model.version,
            c.face_model.weights_sha256,
        ):
            raise InvalidParameter(
                f"collection {c.collection_id} holds templates of {c.face_model.key}; "
                f"the image was embedded with {model.key}"
            )
        return self._index_detected(
            c, detected, external_image_id, max_faces, quality_filter, source_note, legal_basis
        )

    def _index_checks(
        self, collection_id: str, external_image_id: str | None, max_faces: int | None, quality_filter: str
    ) -> Collection:
        c = self._collection(collection_id)
        if external_image_id is not None:
            check(EXTERNAL_IMAGE_ID_RE, external_image_id, "ExternalImageId")
        if max_faces is not None and max_faces < 1:
            raise InvalidParameter(f"MaxFaces must be at least 1, got {max_faces!r}")
        check_quality_filter(quality_filter)
        return c

    def _index_detected(
        self,
        c: Collection,
        detected: DetectedImage,
        external_image_id: str | None,
        max_faces: int | None,
        quality_filter: str,
        source_note: str | None,
        legal_basis: str | None,
    ) -> IndexFacesResult:
        width, height = detected.width, detected.height
        kept: list[tuple[Face, FaceDetail]] = []
        unindexed: list[UnindexedFace] = []
        crop_of: dict[int, bytes] = {}
        for i, face in enumerate(detected.faces):
            detail = FaceDetail.of(face.analysis, width, height)
            reasons = quality_reasons(face.analysis, quality_filter, width, height)
            if reasons:
                unindexed.append(UnindexedFace(reasons, detail))
            else:
                kept.append((face, detail))
                if detected.crops is not None:
                    crop_of[id(face)] = detected.crops[i]
        limit = MAX_INDEX_FACES if max_faces is None else min(max_faces, MAX_INDEX_FACES)
        if len(kept) > limit:
            kept.sort(key=lambda fd: fd[0].detection.box.area, reverse=True)
            unindexed.extend(UnindexedFace(["EXCEEDS_MAX_FACES"], d) for _, d in kept[limit:])
            kept = kept[:limit]
        records: list[IndexedFace] = []
        if kept:
            image_id = str(uuid.uuid4())
            new = [
                NewFace(
                    face_id=str(uuid.uuid4()),
                    image_id=image_id,
                    external_image_id=external_image_id,
                    bounding_box=detail.bounding_box,
                    confidence=float(face.detection.confidence),
                    embedding=as_vector(face.embedding),
                    brightness=float(face.analysis.quality.brightness),
                    sharpness=float(face.analysis.quality.sharpness),
                    source_note=source_note,
                    legal_basis=legal_basis,
                    image_sha256=detected.sha256,
                )
                for face, detail in kept
            ]
            stored = self.store.add_faces(c.collection_id, new, once_per_image=True)
            if {s.face_id for s in stored} == {n.face_id for n in new}:
                records = [
                    IndexedFace(s, d, crop_of.get(id(f))) for s, (f, d) in zip(stored, kept, strict=True)
                ]
            else:  # this image was indexed under this ExternalImageId before: its faces, not new ones
                records = [self._indexed_again(s, detected, crop_of) for s in stored]
        return IndexFacesResult(
            face_records=records, unindexed_faces=unindexed, face_model_version=self.model_version(c)
        )

    @staticmethod
    def _indexed_again(rec: FaceRecord, detected: DetectedImage, crop_of: dict[int, bytes]) -> IndexedFace:
        """A face stored from an earlier indexing of the same image, with the FaceDetail of the face
        detected now whose box lies closest to the stored one (the same face: same bytes, same engine)."""

        def distance(face: Face) -> float:
            box = face.detection.box.to_ratios(detected.width, detected.height)
            b = rec.bounding_box
            return (
                abs(box.left - b.left)
                + abs(box.top - b.top)
                + abs(box.width - b.width)
                + abs(box.height - b.height)
            )

        nearest = min(detected.faces, key=distance)
        detail = FaceDetail.of(nearest.analysis, detected.width, detected.height)
        return IndexedFace(rec, detail, crop_of.get(id(nearest)))

    def indexed_images(self, collection_id: str, external_image_ids: Sequence[str]) -> dict[str, set[str]]:
        """ExternalImageId -> sha256 of each image indexed under it that still has a face in the
        collection (not a Rekognition operation: batch enrolment's skip rule, :mod:`regard.enrol`)."""
        self._collection(collection_id)
        for e in external_image_ids:
            check(EXTERNAL_IMAGE_ID_RE, e, "ExternalImageId")
        return self.store.indexed_images(collection_id, external_image_ids)

    def add_templates(self, collection_id: str, faces: Sequence[NewFace]) -> list[FaceRecord]:
        """Store ready-made templates (not a Rekognition operation: imports, tests and benchmarks).

        The templates must come from the collection's face model.
        """
        self._collection(collection_id)
        for f in faces:
            check(FACE_ID_RE, f.face_id, "FaceId")
            if f.external_image_id is not None:
                check(EXTERNAL_IMAGE_ID_RE, f.external_image_id, "ExternalImageId")
        return self.store.add_faces(collection_id, list(faces))

    def list_faces(
        self,
        collection_id: str,
        *,
        max_results: int | None = None,
        next_token: str | None = None,
        user_id: str | None = None,
        face_ids: Sequence[str] | None = None,
    ) -> ListFacesResult:
        """ListFaces (MaxResults 0-4096, default 1000), optionally only a user's faces or given FaceIds."""
        c = self._collection(collection_id)
        limit = page_size(max_results, 4096, 1000, allow_zero=True)
        if user_id is not None:
            check(USER_ID_RE, user_id, "UserId")
        ids = check_face_ids(face_ids, 1, 4096) if face_ids is not None else None
        page = self.store.list_faces(
            collection_id, user_id=user_id, face_ids=ids, max_results=limit, token=next_token
        )
        return ListFacesResult(
            faces=page.items, next_token=page.next_token, face_model_version=self.model_version(c)
        )

    def delete_faces(self, collection_id: str, face_ids: Sequence[str]) -> DeleteFacesResult:
        """DeleteFaces (1-4096 ids). Faces associated with a user are not deleted (as in Rekognition)."""
        self._collection(collection_id)
        ids = check_face_ids(face_ids, 1, 4096)
        found = self.store.get_faces(collection_id, ids)
        unsuccessful: list[UnsuccessfulFaceDeletion] = []
        deletable: list[str] = []
        for f in ids:
            rec = found.get(f)
            if rec is None:
                unsuccessful.append(UnsuccessfulFaceDeletion(f, None, ["FACE_NOT_FOUND"]))
            elif rec.user_id is not None:
                unsuccessful.append(
                    UnsuccessfulFaceDeletion(f, rec.user_id, ["ASSOCIATED_TO_AN_EXISTING_USER"])
                )
            else:
                deletable.append(f)
        gone = set(self.store.delete_faces(collection_id, deletable) if deletable else [])
        deleted = [f for f in deletable if f in gone]
        if deleted:
            self._removed(Removal(collection_id, face_ids=deleted))
        for f in deletable:
            if f not in gone:  # deleted or associated concurrently
                unsuccessful.append(UnsuccessfulFaceDeletion(f, None, ["FACE_NOT_FOUND"]))
        return DeleteFacesResult(deleted_faces=deleted, unsuccessful=unsuccessful)

    def search_faces(
        self,
        collection_id: str,
        face_id: str,
        *,
        max_faces: int | None = None,
        face_match_threshold: float | None = None,
    ) -> SearchFacesResult:
        """SearchFaces: faces like a stored face (the face itself is left out)."""
        c = self._collection(collection_id)
        check(FACE_ID_RE, face_id, "FaceId")
        rec = self.store.get_faces(collection_id, [face_id]).get(face_id)
        if rec is None:
            raise ResourceNotFound(f"face {face_id} is not in collection {collection_id}")
        matches = match_faces(
            self.store, self.scorer, c, rec.embedding, max_faces, face_match_threshold, exclude={face_id}
        )
        return SearchFacesResult(
            searched_face_id=face_id, face_matches=matches, face_model_version=self.model_version(c)
        )

    def search_faces_by_image(
        self,
        collection_id: str,
        image: ImageInput,
        *,
        max_faces: int | None = None,
        face_match_threshold: float | None = None,
        quality_filter: str = "NONE",
    ) -> SearchFacesByImageResult:
        """SearchFacesByImage: the image's largest face against the collection.

        InvalidParameter when the image holds no face (or its largest falls short of QualityFilter).
        """
        c = self._collection(collection_id)
        check_search_params(max_faces, face_match_threshold)
        self._check_model(c)
        found = probe(self.engine, decode(self.engine, image), quality_filter)
        matches = match_faces(self.store, self.scorer, c, found.embedding, max_faces, face_match_threshold)
        return SearchFacesByImageResult(
            searched_face_bounding_box=found.detail.bounding_box,
            searched_face_confidence=found.detail.confidence,
            face_matches=matches,
            face_model_version=self.model_version(c),
            searched_face_crop=found.crop,
        )

    def search_faces_by_vector(
        self,
        collection_id: str,
        vector: Embeddings,
        *,
        max_faces: int | None = None,
        face_match_threshold: float | None = None,
    ) -> list[FaceMatch]:
        """Faces like a template (not a Rekognition operation: tests, benchmarks, tooling)."""
        c = self._collection(collection_id)
        return match_faces(self.store, self.scorer, c, as_vector(vector), max_faces, face_match_threshold)
