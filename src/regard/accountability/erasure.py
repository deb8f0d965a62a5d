"""Erasure (GDPR art. 17) and subject access (art. 15) for faces held in collections.

:func:`erase` removes every face of a FaceId, ExternalImageId or UserId from one collection or
all of them: faces associated with a user are disassociated first, the user (when erasing by
UserId) is deleted, the faces are deleted through the store, then the store is compacted
(checkpoint + VACUUM of the database, vector index files rebuilt without the removed vectors)
so that the template bytes are gone from every file of the data directory. Review leads about
the erased faces are deleted first (a plain DeleteFaces only withdraws them). Deleting through the
service already wipes the templates from every file before it returns (secure_delete, WAL
truncated, index files dropped); erasure adds the VACUUM and the index rebuild. The erasure is
logged with FaceIds and counts only.

:func:`subject_access` lists what is held about an ExternalImageId or UserId: face metadata
(ids, bounding box, index time, provenance), user records, review leads and the audit records
that mention those faces, never the templates.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from regard.accountability.audit import AuditChain
from regard.accountability.evidence import EvidenceStore
from regard.accountability.guard import admin_record
from regard.accountability.review import ReviewQueue
from regard.errors import InvalidParameter, ResourceNotFound
from regard.service import Service, render
from regard.store.base import FaceRecord

_CHUNK_ASSOCIATE = 100
_CHUNK_DELETE = 4096


@dataclass
class ErasureReport:
    """What an erasure removed."""

    selector: dict[str, str]
    collections: list[str] = field(default_factory=list)
    face_ids: list[str] = field(default_factory=list)
    users_deleted: list[str] = field(default_factory=list)
    leads_deleted: int = 0
    #: Rows of review evidence deleted (enrolled crops and leads' crops).
    crops_deleted: int = 0
    audit_seq: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "Selector": self.selector,
            "Collections": self.collections,
            "DeletedFaces": self.face_ids,
            "DeletedUsers": self.users_deleted,
            "DeletedLeads": self.leads_deleted,
            "DeletedEvidenceCrops": self.crops_deleted,
            "AuditSeq": self.audit_seq,
        }


def _selector(face_id: str | None, external_image_id: str | None, user_id: str | None) -> dict[str, str]:
    given = {
        k: v
        for k, v in (("FaceId", face_id), ("ExternalImageId", external_image_id), ("UserId", user_id))
        if v is not None
    }
    if len(given) != 1:
        raise InvalidParameter("give exactly one of FaceId, ExternalImageId or UserId")
    return given


def _collections(service: Service, collection_id: str | None) -> list[str]:
    if collection_id is not None:
        service.describe_collection(collection_id)  # ResourceNotFound if absent
        return [collection_id]
    out: list[str] = []
    token: str | None = None
    while True:
        page = service.list_collections(max_results=1000, next_token=token)
        out.extend(page.collection_ids)
        token = page.next_token
        if not token:
            return out


def _all_faces(service: Service, collection_id: str, user_id: str | None = None) -> Iterator[FaceRecord]:
    token: str | None = None
    while True:
        page = service.list_faces(collection_id, max_results=4096, next_token=token, user_id=user_id)
        yield from page.faces
        token = page.next_token
        if not token:
            return


def matching_faces(
    service: Service,
    collection_id: str,
    *,
    face_id: str | None = None,
    external_image_id: str | None = None,
    user_id: str | None = None,
) -> list[FaceRecord]:
    """The faces of one collection that a selector designates."""
    if face_id is not None:
        return list(service.list_faces(collection_id, face_ids=[face_id]).faces)
    if user_id is not None:
        return list(_all_faces(service, collection_id, user_id=user_id))
    return [f for f in _all_faces(service, collection_id) if f.external_image_id == external_image_id]


def _user_exists(service: Service, collection_id: str, user_id: str) -> bool:
    try:
        service.store.get_user(collection_id, user_id)
    except ResourceNotFound:
        return False
    return True


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def erase(
    service: Service,
    audit: AuditChain,
    *,
    actor: str,
    collection_id: str | None = None,
    face_id: str | None = None,
    external_image_id: str | None = None,
    user_id: str | None = None,
    review: ReviewQueue | None = None,
    evidence: EvidenceStore | None = None,
    reason: str | None = None,
) -> ErasureReport:
    """Erase a data subject's faces (and user) physically; the erasure is audited."""
    selector = _selector(face_id, external_image_id, user_id)
    report = ErasureReport(selector=selector)
    params: dict[str, Any] = {"selector": selector, "reason": reason, "collection": collection_id}
    try:
        for cid in _collections(service, collection_id):
            faces = matching_faces(
                service, cid, face_id=face_id, external_image_id=external_image_id, user_id=user_id
            )
            if review is not None:
                # Before the deletion, which would only withdraw them (CLOSED, ids wiped): erasure
                # deletes the leads about the subject outright.
                report.leads_deleted += review.forget_faces([f.face_id for f in faces])
                if user_id is not None:
                    report.leads_deleted += review.forget_users(cid, [user_id])
            by_user: dict[str, list[str]] = {}
            for f in faces:
                if f.user_id is not None:
                    by_user.setdefault(f.user_id, []).append(f.face_id)
            for uid, ids in by_user.items():
                for chunk in _chunks(ids, _CHUNK_ASSOCIATE):
                    service.disassociate_faces(cid, uid, chunk)
            if user_id is not None and _user_exists(service, cid, user_id):
                service.delete_user(cid, user_id)
                report.users_deleted.append(user_id)
            ids = [f.face_id for f in faces]
            deleted: list[str] = []
            for chunk in _chunks(ids, _CHUNK_DELETE):
                deleted.extend(service.delete_faces(cid, chunk).deleted_faces)
            if deleted or report.users_deleted:
                report.collections.append(cid)
            report.face_ids.extend(deleted)
            if evidence is not None:
                report.crops_deleted += evidence.forget_faces(cid, ids)
        service.compact()
    except Exception as exc:
        code = getattr(exc, "code", "InternalServerError")
        message = getattr(exc, "message", type(exc).__name__)
        admin_record(
            audit,
            "Erase",
            principal=actor,
            parameters=params,
            results=report.to_json(),
            collection=collection_id,
            outcome="error",
            error={"code": code, "message": message},
        )
        raise
    rec = admin_record(
        audit, "Erase", principal=actor, parameters=params, results=report.to_json(), collection=collection_id
    )
    report.audit_seq = int(rec["seq"])
    return report


def _face_json(f: FaceRecord) -> dict[str, Any]:
    """Rekognition's Face, plus what subject access adds: when, from what source, on what basis."""
    return {
        **render.face(f),
        "IndexedAt": datetime.fromtimestamp(f.indexed_at, UTC).isoformat(),
        "SourceNote": f.source_note,
        "LegalBasis": f.legal_basis,
    }


def subject_access(
    service: Service,
    audit: AuditChain,
    *,
    actor: str,
    collection_id: str | None = None,
    external_image_id: str | None = None,
    user_id: str | None = None,
    review: ReviewQueue | None = None,
    evidence: EvidenceStore | None = None,
) -> dict[str, Any]:
    """Everything held about an ExternalImageId or UserId except the templates; the access is audited."""
    if (external_image_id is None) == (user_id is None):
        raise InvalidParameter("give exactly one of ExternalImageId or UserId")
    selector = _selector(None, external_image_id, user_id)
    out: dict[str, Any] = {
        "Selector": selector,
        "GeneratedAt": datetime.now(UTC).isoformat(),
        "Collections": [],
        "Note": (
            "Biometric templates are held for each face listed but are never exported. Where "
            "ReviewCropKept is true, a small encrypted crop of the face is also kept, because the "
            "collection's policy requires two-person review of search results; it is shown only to "
            "reviewers and deleted with the face."
        ),
    }
    all_ids: set[str] = set()
    for cid in _collections(service, collection_id):
        faces = matching_faces(service, cid, external_image_id=external_image_id, user_id=user_id)
        entry: dict[str, Any] = {"CollectionId": cid, "Faces": [_face_json(f) for f in faces]}
        if evidence is not None:
            # a face crop kept for two-person review (the collection is under review): say so
            for face, shown in zip(faces, entry["Faces"], strict=True):
                shown["ReviewCropKept"] = evidence.has_enrolled(cid, face.face_id)
        if user_id is not None and _user_exists(service, cid, user_id):
            u = service.store.get_user(cid, user_id)
            entry["User"] = {
                "UserId": u.user_id,
                "UserStatus": u.status,
                "FaceCount": u.face_count,
                "CreatedAt": datetime.fromtimestamp(u.created_at, UTC).isoformat(),
            }
        if faces or "User" in entry:
            out["Collections"].append(entry)
        all_ids.update(f.face_id for f in faces)
    if review is not None and all_ids:
        out["ReviewLeads"] = [lead.to_json() for lead in review.list(status=None, face_ids=sorted(all_ids))]
    mentions = []
    for rec in audit.records():
        text = str(rec.get("results", "")) + str(rec.get("parameters", ""))
        if any(fid in text for fid in all_ids) or (user_id is not None and user_id in text):
            mentions.append(
                {
                    "seq": rec.get("seq"),
                    "time": rec.get("time"),
                    "operation": rec.get("operation"),
                    "principal": rec.get("principal"),
                    "purpose": rec.get("purpose"),
                    "case_reference": rec.get("case_reference"),
                }
            )
    out["AuditRecords"] = mentions
    admin_record(
        audit,
        "SubjectAccess",
        principal=actor,
        parameters={"selector": selector, "collection": collection_id},
        results={"faces": len(all_ids), "audit_records": len(mentions)},
        collection=collection_id,
    )
    return out
