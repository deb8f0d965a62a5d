"""The wrapper every API operation runs in: policy before, audit record after, review queue.

:meth:`Guard.run` takes an operation's name, its validated request parameters, who is calling
(:class:`Caller`) and the request's accountability fields (:class:`RequestInfo`: purpose, case
reference, provenance), and a function that performs the operation on the parameters. It

1. checks the caller's policy profile: role, operation, collection, rate limit, purpose and
   case reference, IndexFaces provenance, and the similarity threshold against the profile's
   floor (a false-match rate per comparison, or a false positive identification rate per
   search turned into a per-comparison rate for the collection's current size) - denying the
   request or raising the threshold to the floor, as the profile says;
2. runs the operation, then drops any match whose estimated FMR is above the floor (the
   similarity scale saturates at 100, the per-comparison floor of a large gallery may not);
3. in a profile with two-person review, records a 1:N search's candidates as investigative
   leads pending verification and marks them so in the response;
4. appends one audit record (success or error) and fsyncs it before returning, so nothing is
   acknowledged before it is logged. If the record cannot be written the request fails.

What each operation is (biometric or not, 1:N and over which gallery, its threshold parameter,
the parameters its record keeps) comes from :mod:`regard.catalogue`; an operation it does not
list as served is refused (UnsupportedOperationException) and the refusal recorded. Nothing here
knows HTTP: headers in, headers out, as plain dicts.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regard.accountability.audit import AuditLog
from regard.accountability.policy import PolicyStore, Profile, RateLimiter
from regard.accountability.review import PENDING, Candidate, ReviewQueue
from regard.calibrate import fmr_from_similarity
from regard.catalogue import OPERATIONS_BY_NAME, Operation
from regard.errors import AccessDenied, InvalidParameter, RegardError, UnsupportedOperation
from regard.service import Service

#: Request headers carrying the accountability fields (case-insensitive).
HEADER_PURPOSE = "x-regard-purpose"
HEADER_CASE_REFERENCE = "x-regard-case-reference"
HEADER_SOURCE = "x-regard-source"
HEADER_LEGAL_BASIS = "x-regard-legal-basis"
#: Response headers the guard adds.
HEADER_EFFECTIVE_THRESHOLD = "x-regard-effective-threshold"
HEADER_THRESHOLD_FMR = "x-regard-threshold-fmr"
HEADER_REVIEW = "x-regard-review"
HEADER_AUDIT_SEQ = "x-regard-audit-seq"
MAX_FIELD = 1024
_PRINTABLE = re.compile(r"^[^\x00-\x1f\x7f]*$")
_ARN_COLLECTION = re.compile(r":collection/(?P<id>[a-zA-Z0-9_.\-]{1,255})$")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: an access key (None for local CLI use), its name, role and profile."""

    access_key_id: str | None
    principal: str
    role: str
    profile: str


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """A request's id and its accountability fields."""

    request_id: str
    purpose: str | None = None
    case_reference: str | None = None
    source_note: str | None = None
    legal_basis: str | None = None

    @classmethod
    def from_headers(cls, request_id: str, headers: Mapping[str, str]) -> RequestInfo:
        low = {k.lower(): v for k, v in headers.items()}

        def get(name: str) -> str | None:
            value = low.get(name)
            if value is None or not value.strip():
                return None
            value = value.strip()
            if len(value) > MAX_FIELD or not _PRINTABLE.match(value):
                raise InvalidParameter(f"header {name} must be at most {MAX_FIELD} printable characters")
            return value

        return cls(
            request_id=request_id,
            purpose=get(HEADER_PURPOSE),
            case_reference=get(HEADER_CASE_REFERENCE),
            source_note=get(HEADER_SOURCE),
            legal_basis=get(HEADER_LEGAL_BASIS),
        )


@dataclass
class Guarded:
    """An operation's (possibly amended) result, headers to add, and its audit record."""

    result: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)


def _sha256(data: Any) -> str | None:
    if isinstance(data, bytes | bytearray | memoryview):
        return hashlib.sha256(bytes(data)).hexdigest()
    return None


def image_reference(image: Any) -> dict[str, Any] | None:
    """How the log refers to an Image parameter: the sha256 of its bytes, or its S3 location."""
    if not isinstance(image, Mapping):
        return None
    if "Bytes" in image:
        return {"sha256": _sha256(image["Bytes"]), "bytes": len(image["Bytes"])}
    if "S3Object" in image and isinstance(image["S3Object"], Mapping):
        s3 = image["S3Object"]
        return {"s3": {k: s3[k] for k in ("Bucket", "Name", "Version") if k in s3}}
    return None


def collection_of(params: Mapping[str, Any]) -> str | None:
    if isinstance(params.get("CollectionId"), str):
        return str(params["CollectionId"])
    arn = params.get("ResourceArn")
    if isinstance(arn, str):
        m = _ARN_COLLECTION.search(arn)
        if m:
            return m.group("id")
    return None


def recorded_parameters(operation: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """What an audit record keeps of ``operation``'s request (the catalogue says which parameters)."""
    op = OPERATIONS_BY_NAME.get(operation)
    if op is None:
        return {}
    out: dict[str, Any] = {k: params[k] for k in op.recorded if k in params}
    if op.tag_keys_of_tags and isinstance(params.get("Tags"), Mapping):
        out["TagKeys"] = sorted(params["Tags"])
    for name in op.images:
        ref = image_reference(params.get(name))
        if ref is not None:
            out[name] = ref
    return out


def _match_summary(m: Mapping[str, Any]) -> dict[str, Any]:
    face = m.get("Face") or {}
    user = m.get("User") or {}
    out: dict[str, Any] = {
        "similarity": m.get("Similarity"),
        "fmr": m.get("EstimatedFalseMatchRate"),
    }
    for key, src, name in (
        ("face_id", face, "FaceId"),
        ("external_image_id", face, "ExternalImageId"),
        ("user_id", face, "UserId"),
        ("user_id", user, "UserId"),
    ):
        if isinstance(src, Mapping) and src.get(name) is not None:
            out[key] = src[name]
    if "RegardLeadId" in m:
        out["lead_id"] = m["RegardLeadId"]
    return out


def summarize(operation: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """What the log keeps of a response: ids, similarities, FMRs and counts (never templates)."""
    out: dict[str, Any] = {}
    for key in ("FaceMatches", "UserMatches"):
        if key in result:
            out["matches"] = [_match_summary(m) for m in result[key]]
            out["match_count"] = len(result[key])
    if "FaceRecords" in result:
        out["indexed_face_ids"] = [r["Face"]["FaceId"] for r in result["FaceRecords"]]
    for key, name in (
        ("UnindexedFaces", "unindexed_count"),
        ("UnmatchedFaces", "unmatched_count"),
        ("FaceDetails", "face_count"),
        ("Faces", "listed_faces"),
        ("Users", "listed_users"),
        ("CollectionIds", "listed_collections"),
        ("UnsuccessfulFaceDeletions", "unsuccessful_count"),
        ("UnsuccessfulFaceAssociations", "unsuccessful_count"),
        ("UnsuccessfulFaceDisassociations", "unsuccessful_count"),
        ("UnsearchedFaces", "unsearched_count"),
    ):
        if key in result:
            out[name] = len(result[key])
    for key, name in (
        ("DeletedFaces", "deleted_face_ids"),
        ("AssociatedFaces", "associated_face_ids"),
        ("DisassociatedFaces", "disassociated_face_ids"),
    ):
        if key in result:
            out[name] = [f if isinstance(f, str) else f.get("FaceId") for f in result[key]]
    for key, name in (
        ("SearchedFaceId", "searched_face_id"),
        ("UserStatus", "user_status"),
        ("StatusCode", "status_code"),
        ("SearchedFaceConfidence", "searched_face_confidence"),
    ):
        if key in result:
            out[name] = result[key]
    if isinstance(result.get("SearchedUser"), Mapping):
        out["searched_user_id"] = result["SearchedUser"].get("UserId")
    if isinstance(result.get("SearchedFace"), Mapping) and "FaceId" in result["SearchedFace"]:
        out["searched_face_id"] = result["SearchedFace"]["FaceId"]
    return out


class Guard:
    """Policy, audit and review around operations, for one data directory."""

    def __init__(
        self,
        data_dir: Path,
        *,
        service_factory: Callable[[], Service] | None = None,
        audit: AuditLog | None = None,
        policies: PolicyStore | None = None,
        review: ReviewQueue | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.policies = policies or PolicyStore(self.data_dir)
        config = self.policies.load()
        self.audit = audit or AuditLog(self.data_dir, retention_floor_days=config.retention_floor_days)
        self.review = review or ReviewQueue(self.data_dir)
        self.service_factory = service_factory
        self.rates = RateLimiter()

    # -- the wrapper ------------------------------------------------------------------------
    def run(
        self,
        operation: str,
        params: dict[str, Any],
        caller: Caller,
        info: RequestInfo,
        call: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> Guarded:
        """Check, run, review and log one operation; raises its error after logging it."""
        op = OPERATIONS_BY_NAME.get(operation)
        collection = collection_of(params)
        record: dict[str, Any] = {
            "kind": "biometric" if op is not None and op.biometric else "admin",
            "request_id": info.request_id,
            "access_key_id": caller.access_key_id,
            "principal": caller.principal,
            "role": caller.role,
            "profile": caller.profile,
            "operation": operation,
            "collection": collection,
            "purpose": info.purpose,
            "case_reference": info.case_reference,
            "parameters": recorded_parameters(operation, params),
        }
        probe = record["parameters"].get("Image") or record["parameters"].get("SourceImage")
        if isinstance(probe, Mapping) and probe.get("sha256"):
            record["probe_sha256"] = probe["sha256"]
        headers: dict[str, str] = {}
        try:
            if op is None or not op.served:
                raise UnsupportedOperation(f"regard does not serve {operation}")
            profile = self._check(op, params, collection, caller, info, record)
            if record["kind"] == "biometric" and self.service_factory is not None:
                # Which similarity scale the results are read from: model + normalizer + table.
                svc = self.service_factory()
                record["scoring"] = {"model": svc.face_model.key, **svc.scorer.identity()}
            state = self._state(collection) if collection else None
            if state is not None:
                record["collection_state"] = {"before": state}
            floor_fmr = self._threshold(op, params, profile, state, record, headers)
            if operation == "IndexFaces":
                params = dict(params)
                params["RegardSourceNote"] = info.source_note
                params["RegardLegalBasis"] = info.legal_basis
                record["parameters"]["source_note"] = info.source_note
                record["parameters"]["legal_basis"] = info.legal_basis
            result = call(params)
            if operation == "ListCollections" and profile.collections != ("*",):
                self._hide_collections(result, profile)
            if floor_fmr is not None:
                self._apply_floor(operation, result, floor_fmr, record)
            if profile.two_person_review and op.identification and collection:
                self._queue_leads(operation, result, collection, caller, info, headers)
            if collection and not op.read_only:
                after = self._state(collection)
                record.setdefault("collection_state", {})["after"] = after
            record["results"] = summarize(operation, result)
            record["outcome"] = "success"
        except RegardError as exc:
            self._record_failure(record, exc)
            raise
        except Exception as exc:
            self._record_failure(record, exc)
            raise
        sealed = self.audit.append(record)
        headers[HEADER_AUDIT_SEQ] = str(sealed["seq"])
        return Guarded(result=result, headers=headers, record=sealed)

    def record_refusal(
        self, operation: str | None, info: RequestInfo, access_key_id: str | None, exc: RegardError
    ) -> None:
        """Log a request refused before it had a caller (bad signature, unknown key, too large...)."""
        self.audit.append(
            {
                "kind": "access",
                "request_id": info.request_id,
                "access_key_id": access_key_id,
                "operation": operation,
                "outcome": "error",
                "error": {"code": exc.code, "message": exc.message},
            }
        )

    # -- steps ------------------------------------------------------------------------------
    def _check(
        self,
        op: Operation,
        params: Mapping[str, Any],
        collection: str | None,
        caller: Caller,
        info: RequestInfo,
        record: dict[str, Any],
    ) -> Profile:
        profile = self.policies.load().profile(caller.profile)
        if caller.role not in profile.roles:
            raise AccessDenied(f"role {caller.role!r} may not use the {profile.name} profile")
        if not profile.allows_operation(op.name):
            raise AccessDenied(f"the {profile.name} profile does not allow {op.name}")
        if collection is not None and not profile.allows_collection(collection):
            raise AccessDenied(f"the {profile.name} profile does not allow collection {collection}")
        self.rates.take(caller.access_key_id or caller.principal, profile.rate_per_second, profile.burst)
        if op.biometric:
            if profile.require_purpose and not info.purpose:
                raise AccessDenied(f"the {profile.name} profile requires a purpose (header {HEADER_PURPOSE})")
            if profile.require_case_reference and not info.case_reference:
                raise AccessDenied(
                    f"the {profile.name} profile requires a case reference (header {HEADER_CASE_REFERENCE})"
                )
        if (
            op.name == "IndexFaces"
            and profile.require_provenance
            and not (info.source_note and info.legal_basis)
        ):
            raise AccessDenied(
                f"the {profile.name} profile requires the images' provenance: headers {HEADER_SOURCE} "
                f"(where the image comes from) and {HEADER_LEGAL_BASIS} (the legal basis for processing it)"
            )
        return profile

    def _record_failure(self, record: dict[str, Any], exc: BaseException) -> None:
        """Append ``record`` as a failed operation and mark ``exc`` as already audited."""
        record["outcome"] = "error"
        record["error"] = _failure(exc)
        self.audit.append(record)
        _mark_recorded(exc)

    def _state(self, collection: str) -> dict[str, Any] | None:
        if self.service_factory is None:
            return None
        try:
            d = self.service_factory().describe_collection(collection)
        except RegardError:
            return None
        return {
            "content_version": d.content_version,
            "content_hash": d.content_hash,
            "face_count": d.face_count,
            "user_count": d.user_count,
        }

    def _threshold(
        self,
        op: Operation,
        params: dict[str, Any],
        profile: Profile,
        state: Mapping[str, Any] | None,
        record: dict[str, Any],
        headers: dict[str, str],
    ) -> float | None:
        """Enforce the floor on the request's threshold; returns the floor as an FMR."""
        if op.threshold is None:
            return None
        name, default = op.threshold.parameter, op.threshold.default
        gallery: int | None = None
        if op.gallery is not None and state is not None:
            gallery = int(state["user_count"] if op.gallery == "users" else state["face_count"])
        floor_fmr = profile.floor_fmr(op.name, gallery)
        floor_sim = profile.floor_similarity(op.name, gallery)
        requested = float(params.get(name, default))
        effective = requested
        if requested + 1e-9 < floor_sim:
            if profile.on_low_threshold == "deny":
                scope = (
                    f"FPIR {profile.max_fpir:g} per search over a gallery of {gallery} "
                    if gallery is not None and profile.max_fpir > 0
                    else ""
                )
                raise AccessDenied(
                    f"{name} {requested:g} stands for an estimated false-match rate of "
                    f"{fmr_from_similarity(requested):.3g} per comparison; the {profile.name} profile "
                    f"allows at most {floor_fmr:.3g} ({scope}max FMR {profile.max_fmr:g}): "
                    f"use {name} >= {floor_sim:.4f}"
                )
            effective = floor_sim
            params[name] = floor_sim
        # the floor as a per-comparison FMR is at least as strict as the requested threshold
        threshold_fmr = min(floor_fmr, fmr_from_similarity(effective))
        record["threshold"] = {
            "parameter": name,
            "requested": requested,
            "effective": effective,
            "floor_similarity": floor_sim,
            "floor_fmr": floor_fmr,
            "effective_fmr": threshold_fmr,
            "gallery_size": gallery,
            "raised": effective != requested,
        }
        headers[HEADER_EFFECTIVE_THRESHOLD] = f"{effective:.4f}"
        headers[HEADER_THRESHOLD_FMR] = f"{threshold_fmr:.6g}"
        return floor_fmr

    @staticmethod
    def _hide_collections(result: dict[str, Any], profile: Profile) -> None:
        """ListCollections shows only the collections the profile may use."""
        ids = result.get("CollectionIds") or []
        versions = result.get("FaceModelVersions") or [None] * len(ids)
        kept = [(c, v) for c, v in zip(ids, versions, strict=False) if profile.allows_collection(c)]
        result["CollectionIds"] = [c for c, _ in kept]
        if "FaceModelVersions" in result:
            result["FaceModelVersions"] = [v for _, v in kept]

    @staticmethod
    def _apply_floor(
        operation: str, result: dict[str, Any], floor_fmr: float, record: dict[str, Any]
    ) -> None:
        for key in ("FaceMatches", "UserMatches"):
            if key not in result:
                continue
            kept: list[dict[str, Any]] = []
            dropped: list[dict[str, Any]] = []
            for m in result[key]:
                fmr = m.get("EstimatedFalseMatchRate")
                if fmr is None:
                    fmr = fmr_from_similarity(float(m.get("Similarity", 0.0)))
                (dropped if float(fmr) > floor_fmr * (1 + 1e-9) else kept).append(m)
            result[key] = kept
            if dropped:
                record.setdefault("threshold", {})["dropped_above_floor"] = len(dropped)
                if operation == "CompareFaces":
                    result.setdefault("UnmatchedFaces", []).extend(m["Face"] for m in dropped if "Face" in m)

    def _queue_leads(
        self,
        operation: str,
        result: dict[str, Any],
        collection: str,
        caller: Caller,
        info: RequestInfo,
        headers: dict[str, str],
    ) -> None:
        key = "FaceMatches" if "FaceMatches" in result else "UserMatches"
        matches = result.get(key) or []
        headers[HEADER_REVIEW] = PENDING if matches else "NO_CANDIDATES"
        if not matches:
            return
        candidates = []
        for m in matches:
            s = _match_summary(m)
            candidates.append(
                Candidate(
                    face_id=s.get("face_id"),
                    user_id=s.get("user_id"),
                    external_image_id=s.get("external_image_id"),
                    similarity=float(s.get("similarity") or 0.0),
                    fmr=float(s["fmr"]) if s.get("fmr") is not None else 1.0,
                )
            )
        ids = self.review.add(
            request_id=info.request_id,
            requester_key=caller.access_key_id,
            requester_principal=caller.principal,
            collection_id=collection,
            operation=operation,
            candidates=candidates,
            purpose=info.purpose,
            case_reference=info.case_reference,
        )
        for m, lead_id in zip(matches, ids, strict=True):
            m["RegardLeadId"] = lead_id
            m["RegardReviewStatus"] = PENDING

    # -- review -----------------------------------------------------------------------------
    def review_decide(
        self, lead_id: str, decision: str, caller: Caller, info: RequestInfo, note: str | None = None
    ) -> dict[str, Any]:
        """One reviewer's decision on a lead, logged whether it is accepted or refused."""
        record: dict[str, Any] = {
            "kind": "review",
            "request_id": info.request_id,
            "access_key_id": caller.access_key_id,
            "principal": caller.principal,
            "role": caller.role,
            "profile": caller.profile,
            "operation": "ReviewConfirm" if decision == "confirm" else "ReviewReject",
            "parameters": {"lead_id": lead_id, "note": note},
        }
        try:
            lead = self.review.decide(
                lead_id,
                reviewer_key=caller.access_key_id or f"local:{caller.principal}",
                reviewer_principal=caller.principal,
                reviewer_role=caller.role,
                decision=decision,
                note=note,
            )
        except RegardError as exc:
            self._record_failure(record, exc)
            raise
        record["collection"] = lead.collection_id
        record["case_reference"] = lead.case_reference
        record["results"] = {
            "lead_status": lead.status,
            "face_id": lead.face_id,
            "user_id": lead.user_id,
            "search_request_id": lead.request_id,
            "confirmations": sum(1 for d in lead.decisions if d.decision == "confirm"),
        }
        record["outcome"] = "success"
        self.audit.append(record)
        return lead.to_json()

    def review_list(self, caller: Caller, info: RequestInfo, status: str | None) -> list[dict[str, Any]]:
        """The queue as a verifier or admin sees it; the access is logged."""
        record: dict[str, Any] = {
            "kind": "review",
            "request_id": info.request_id,
            "access_key_id": caller.access_key_id,
            "principal": caller.principal,
            "role": caller.role,
            "operation": "ReviewList",
            "parameters": {"status": status},
        }
        try:
            if caller.role not in ("verifier", "admin"):
                raise AccessDenied("only verifier and admin keys may read the review queue")
            leads = self.review.list(status=status)
        except RegardError as exc:
            self._record_failure(record, exc)
            raise
        record["outcome"] = "success"
        record["results"] = {"leads": len(leads)}
        self.audit.append(record)
        return [lead.to_json() for lead in leads]


def _failure(exc: BaseException) -> dict[str, str]:
    """The audit record's error field: a RegardError's code and message, else only the type's name."""
    if isinstance(exc, RegardError):
        return {"code": exc.code, "message": exc.message}
    return {"code": "InternalServerError", "message": type(exc).__name__}


def _mark_recorded(exc: BaseException) -> None:
    """Tell outer layers (the API's refusal logging) that this error already has its record."""
    if isinstance(exc, RegardError):
        exc.audit_recorded = True


def admin_record(
    audit: AuditLog,
    operation: str,
    *,
    principal: str,
    parameters: Mapping[str, Any] | None = None,
    results: Mapping[str, Any] | None = None,
    collection: str | None = None,
    access_key_id: str | None = None,
    outcome: str = "success",
    error: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Append one record of an administrative change (policy, keys, erasure...)."""
    rec: dict[str, Any] = {
        "kind": "admin",
        "operation": operation,
        "principal": principal,
        "access_key_id": access_key_id,
        "collection": collection,
        "parameters": dict(parameters or {}),
        "results": dict(results or {}),
        "outcome": outcome,
    }
    if error:
        rec["error"] = dict(error)
    return audit.append(rec)
