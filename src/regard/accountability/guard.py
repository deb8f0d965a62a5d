"""The wrapper every operation runs in, from the API or the command line: policy before, audit
record after, review queue.

:meth:`Guard.run` takes an operation's name, its validated request parameters (in Rekognition's
names), who is calling (:class:`Caller`), the request's accountability fields
(:class:`RequestInfo`: purpose, case reference, provenance) and the operation's *typed call*: a
function of the parameters that performs it on the service and returns the service's typed
result. It

1. checks the caller's policy profile: role, operation, collection, rate limit, purpose and
   case reference, IndexFaces provenance, and the similarity threshold against the profile's
   floor (a false-match rate per comparison, or a false positive identification rate per
   search turned into a per-comparison rate for the collection's current size) - denying the
   request or raising the threshold to the floor, as the profile says; then, under a profile
   with ``require_assessment``, the assessment gate: a 1:N search or IndexFaces on a collection
   needs a current, approved human-rights impact assessment covering it
   (:mod:`regard.accountability.assessment`). Every biometric record names the assessment in
   force (``assessment: {id, status}``); admin keys and the local operator are never gated, and
   their identification and IndexFaces records are marked ``admin_call``;
2. runs the typed call, then drops any match whose estimated FMR is above the floor (the
   similarity scale saturates at 100, the per-comparison floor of a large gallery may not);
3. in a profile with two-person review, records a 1:N search's candidates as investigative
   leads pending verification (:attr:`Guarded.leads`, which the API adds to its response);
4. appends one audit record (success or error) and fsyncs it before returning, so nothing is
   acknowledged before it is logged. If the record cannot be written the request fails.

A state-changing operation (one the catalogue does not call read-only) first appends an
``intent`` record (synced) once the policy allows it and just before the typed call runs; its
outcome record names it (``intent_seq``). So after a crash at any point every change the store
committed has a record: opening a guard finds the intents whose writer is gone without an outcome
(:meth:`regard.accountability.audit.AuditChain.orphan_intents`) and appends for each an
``outcome: unknown`` record (``interrupted``) with the collection's state as found then.
Read-only operations keep one record.

The record is the same whoever calls: :mod:`regard.accountability.records` starts it from the
parameters, :mod:`regard.accountability.results` reads matches from and summarises the typed
result. The operator at the command line (:attr:`Caller.local`) works under
:data:`regard.accountability.policy.LOCAL_PROFILE`, the data directory's own rights. What each
operation is comes from :mod:`regard.catalogue`; an operation it does not list as served is
refused (UnsupportedOperationException) and the refusal recorded. Nothing here knows HTTP or
Rekognition's JSON: parameters in, typed result and headers (plain dicts) out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from regard.accountability import results
from regard.accountability.assessment import APPROVED as ASSESSMENT_APPROVED
from regard.accountability.assessment import GATED_OPERATIONS, Assessment, AssessmentStore
from regard.accountability.audit import INTENT_KIND, AuditChain, AuditLog
from regard.accountability.evidence import EvidenceStore
from regard.accountability.policy import LOCAL_PROFILE, PolicyStore, Profile, RateLimiter
from regard.accountability.records import (
    Record,
    admin_record,
    append_failure,
    operation_record,
    recorded_parameters,
)
from regard.accountability.request import (
    HEADER_AUDIT_SEQ,
    HEADER_CASE_REFERENCE,
    HEADER_EFFECTIVE_THRESHOLD,
    HEADER_LEGAL_BASIS,
    HEADER_PURPOSE,
    HEADER_REVIEW,
    HEADER_SOURCE,
    HEADER_THRESHOLD_FMR,
    Caller,
    Params,
    RequestInfo,
)
from regard.accountability.review import PENDING, ReviewQueue
from regard.catalogue import OPERATIONS_BY_NAME, Operation
from regard.errors import AccessDenied, RegardError, UnsupportedOperation
from regard.scoring.calibrate import fmr_from_similarity
from regard.service import DeleteFacesResult, FaceMatch, IndexFacesResult, Service, UserMatch

# Names other modules import from here.
__all__ = [
    "HEADER_AUDIT_SEQ",
    "HEADER_CASE_REFERENCE",
    "HEADER_EFFECTIVE_THRESHOLD",
    "HEADER_LEGAL_BASIS",
    "HEADER_PURPOSE",
    "HEADER_REVIEW",
    "HEADER_SOURCE",
    "HEADER_THRESHOLD_FMR",
    "Caller",
    "Guard",
    "Guarded",
    "RequestInfo",
    "admin_record",
    "recorded_parameters",
]

R = TypeVar("R")


@dataclass
class Guarded(Generic[R]):
    """An operation's typed result (amended by the floor or the profile), the headers to add,
    its sealed audit record, and the lead id of each match when review made them leads."""

    result: R
    headers: dict[str, str] = field(default_factory=dict)
    record: Record = field(default_factory=dict)
    leads: list[str] = field(default_factory=list)


class Guard:
    """Policy, audit and review around operations, for one data directory."""

    def __init__(
        self,
        data_dir: Path,
        *,
        service_factory: Callable[[], Service] | None = None,
        audit: AuditChain | None = None,
        policies: PolicyStore | None = None,
        review: ReviewQueue | Callable[[], ReviewQueue] | None = None,
        assessments: AssessmentStore | None = None,
        evidence: EvidenceStore | Callable[[], EvidenceStore] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.policies = policies or PolicyStore(self.data_dir)
        #: The human-rights impact assessments the gate reads (the data directory's when not given).
        self.assessments = assessments or AssessmentStore(self.data_dir)
        if audit is None:
            audit = AuditLog(self.data_dir, retention_floor_days=self.policies.load().retention_floor_days)
        self.audit: AuditChain = audit
        self._review = review if isinstance(review, ReviewQueue) else None
        self._open_review: Callable[[], ReviewQueue] = (
            review if callable(review) and not isinstance(review, ReviewQueue) else self._data_dir_review
        )
        #: Encrypted face crops for review (opened on first use; None: no evidence is kept).
        self._evidence = evidence if isinstance(evidence, EvidenceStore) else None
        self._open_evidence = (
            evidence if callable(evidence) and not isinstance(evidence, EvidenceStore) else None
        )
        self.service_factory = service_factory
        self.rates = RateLimiter()
        self.reconcile()

    def reconcile(self) -> list[Record]:
        """Record, for each intent whose writer is gone without an outcome, that its outcome is
        unknown (the operation was interrupted), with the collection's state found now."""
        orphans = self.audit.orphan_intents()
        outcomes: dict[int, Record] = {}
        for intent in orphans:
            collection = intent.get("collection")
            try:
                found = self._state(collection) if isinstance(collection, str) else None
            except Exception:  # the store cannot be read now: still record the interruption
                found = None
            outcomes[int(intent["seq"])] = {
                "kind": "system",
                "request_id": intent.get("request_id"),
                "access_key_id": intent.get("access_key_id"),
                "principal": intent.get("principal"),
                "operation": intent.get("operation"),
                "collection": collection,
                "parameters": intent.get("parameters", {}),
                "collection_state": {
                    "before": (intent.get("collection_state") or {}).get("before"),
                    "found": found,
                },
                "results": {"interrupted": True},
                "outcome": "unknown",
                "error": {
                    "code": "Interrupted",
                    "message": "the operation was interrupted before its outcome was recorded; "
                    "collection_state.found is the collection as found afterwards",
                },
            }
        return self.audit.reconcile(outcomes)

    @property
    def review(self) -> ReviewQueue:
        """The lead queue, opened on first use (a guard that never makes leads leaves no file)."""
        if self._review is None:
            self._review = self._open_review()
        return self._review

    @property
    def evidence(self) -> EvidenceStore | None:
        """The evidence store, opened on first use (None when this guard keeps no evidence)."""
        if self._evidence is None and self._open_evidence is not None:
            self._evidence = self._open_evidence()
        return self._evidence

    def _data_dir_review(self) -> ReviewQueue:
        return ReviewQueue(self.data_dir)

    # -- the wrapper ------------------------------------------------------------------------
    def run(
        self,
        operation: str,
        params: Params,
        caller: Caller,
        info: RequestInfo,
        call: Callable[[Params], R],
    ) -> Guarded[R]:
        """Check, run, review and log one operation; raises its error after logging it."""
        op = OPERATIONS_BY_NAME.get(operation)
        record = operation_record(operation, params, caller, info)
        collection: str | None = record["collection"]
        headers: dict[str, str] = {}
        leads: list[str] = []
        try:
            if op is None or not op.served:
                raise UnsupportedOperation(f"regard does not serve {operation}")
            profile = self._check(op, collection, caller, info)
            if record["kind"] == "biometric" and self.service_factory is not None:
                # Which similarity scale the results are read from: model + normalizer + table.
                svc = self.service_factory()
                record["scoring"] = {"model": svc.face_model.key, **svc.scorer.identity()}
            state = self._state(collection) if collection else None
            if state is not None:
                record["collection_state"] = {"before": state}
            params = dict(params)  # the threshold may be raised; the caller's dict stays as sent
            floor_fmr = self._threshold(op, params, profile, state, record, headers)
            if record["kind"] == "biometric":
                record["assessment"] = self._assessment(op, profile, caller, collection, record)
            if op.provenance:
                record["parameters"]["source_note"] = info.source_note
                record["parameters"]["legal_basis"] = info.legal_basis
            if not op.read_only:
                record["intent_seq"] = self._intend(record)["seq"]
            result = call(params)
            if op.name == "ListCollections" and profile.collections != ("*",):
                result = results.only_collections(result, profile.allows_collection)
            if floor_fmr is not None:
                result = self._apply_floor(result, floor_fmr, record)
            if profile.two_person_review and op.identification and collection:
                leads = self._queue_leads(op, result, collection, caller, info, headers)
            if collection:
                self._keep_evidence(op, params, result, collection, leads, record)
            if collection and not op.read_only:
                after = self._state(collection)
                record.setdefault("collection_state", {})["after"] = after
            record["results"] = results.summarize(result, leads)
            record["outcome"] = "success"
        except Exception as exc:
            if record["kind"] == "biometric":
                # refused before the assessment was looked up (policy), or by the gate itself
                record.setdefault("assessment", {"id": None, "status": "not_checked"})
            append_failure(self.audit, record, exc)
            raise
        sealed = self.audit.append(record)
        headers[HEADER_AUDIT_SEQ] = str(sealed["seq"])
        # a result that must not act before its record is written (a stored-video job) acts now
        after_record = getattr(result, "after_record", None)
        if callable(after_record):
            after_record(sealed)
        return Guarded(result=result, headers=headers, record=sealed, leads=leads)

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
    def _intend(self, record: Record) -> Record:
        """Append (and sync) the intent record of the operation ``record`` starts."""
        keep = ("request_id", "access_key_id", "principal", "role", "profile", "operation", "collection")
        intent: Record = {k: record.get(k) for k in keep}
        intent["kind"] = INTENT_KIND
        intent["parameters"] = record.get("parameters", {})
        intent["collection_state"] = {"before": (record.get("collection_state") or {}).get("before")}
        intent["writer"] = self.audit.writer_token()
        intent["outcome"] = "pending"
        return self.audit.append(intent)

    def profile_of(self, caller: Caller) -> Profile:
        """The caller's profile: its key's, from policy.toml, or the local operator's own."""
        if caller.local:
            return LOCAL_PROFILE
        return self.policies.load().profile(caller.profile)

    def _check(self, op: Operation, collection: str | None, caller: Caller, info: RequestInfo) -> Profile:
        profile = self.profile_of(caller)
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
        if op.provenance and profile.require_provenance and not info.provenance.complete:
            raise AccessDenied(
                f"the {profile.name} profile requires the images' provenance: headers {HEADER_SOURCE} "
                f"(where the image comes from) and {HEADER_LEGAL_BASIS} (the legal basis for processing it)"
            )
        return profile

    def _assessment(
        self, op: Operation, profile: Profile, caller: Caller, collection: str | None, record: Record
    ) -> Record:
        """The gate (:meth:`AssessmentStore.gate`) and what the biometric record says of it:
        ``{"id", "status"}`` with status ``current`` (an approved, current assessment covers the
        collection: the gate passed, or none was needed), ``not_required`` (none needed, none
        covers) or ``admin`` (an admin key or the local operator doing identification or
        IndexFaces: never gated, marked ``admin_call`` with the covering assessment's id if any).
        Raises AccessDenied, the record saying ``missing``, when the gate stays closed."""
        scoring: dict[str, str] | None = record.get("scoring")
        threshold = record.get("threshold") or {}
        if (caller.role == "admin" or caller.local) and (op.identification or op.name == "IndexFaces"):
            found = self._covering(collection, scoring) if collection else None
            return {"id": found.assessment_id if found else None, "status": "admin", "admin_call": True}
        if profile.require_assessment and op.name in GATED_OPERATIONS and collection:
            try:
                gate = self.assessments.gate(
                    profile,
                    collection,
                    scoring,
                    threshold.get("effective_fmr"),
                    op.name,
                    threshold.get("gallery_size"),
                )
            except AccessDenied:
                record["assessment"] = {"id": None, "status": "missing"}
                raise
            return {"id": gate.assessment_id, "status": "current"}
        found = self._covering(collection, scoring) if collection else None
        if found is not None:
            return {"id": found.assessment_id, "status": "current"}
        return {"id": None, "status": "not_required"}

    def _covering(self, collection: str, scoring: dict[str, str] | None) -> Assessment | None:
        """The newest approved assessment, of any profile, that covers ``collection`` and is
        current under that profile as policy.toml defines it now (one query; the policy is read
        only when an approved assessment covers the collection)."""
        approved = [
            a for a in self.assessments.list() if a.status == ASSESSMENT_APPROVED and a.covers(collection)
        ]
        if not approved:
            return None
        profiles = self.policies.load().profiles
        now = self.assessments.clock()
        for a in reversed(approved):
            profile = profiles.get(a.profile)
            if profile is not None and a.staleness(profile, scoring, now) is None:
                return a
        return None

    def _state(self, collection: str) -> Record | None:
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
        params: Params,
        profile: Profile,
        state: Record | None,
        record: Record,
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
    def _apply_floor(result: R, floor_fmr: float, record: Record) -> R:
        """``result`` without the matches whose estimated FMR is above the floor."""

        def above(m: results.Match) -> bool:
            return float(m.fmr) > floor_fmr * (1 + 1e-9)

        kept, dropped = results.drop_matches(result, above)
        if dropped:
            record.setdefault("threshold", {})["dropped_above_floor"] = dropped
        return kept

    def _queue_leads(
        self,
        op: Operation,
        result: object,
        collection: str,
        caller: Caller,
        info: RequestInfo,
        headers: dict[str, str],
    ) -> list[str]:
        """Each candidate of a 1:N search as a lead pending two verifiers; their ids, in order."""
        found = results.matches(result)
        if found is None:  # a video search: its matches become leads when its job ends
            return []
        headers[HEADER_REVIEW] = PENDING if found else "NO_CANDIDATES"
        if not found:
            return []
        return self.review.add(
            request_id=info.request_id,
            requester_key=caller.access_key_id,
            requester_principal=caller.principal,
            collection_id=collection,
            operation=op.name,
            candidates=[results.candidate(m) for m in found],
            purpose=info.purpose,
            case_reference=info.case_reference,
        )

    # -- evidence for review ----------------------------------------------------------------
    def _review_covers(self, collection: str) -> bool:
        """Whether a profile with two-person review covers ``collection`` (its faces' crops are
        kept, so that reviewers can see the candidates of its leads)."""
        return any(
            p.two_person_review and p.allows_collection(collection)
            for p in self.policies.load().profiles.values()
        )

    def _keep_evidence(
        self,
        op: Operation,
        params: Params,
        result: object,
        collection: str,
        leads: list[str],
        record: Record,
    ) -> None:
        """Keep or drop the crops an operation's result concerns (docs/review.md): IndexFaces into
        a collection under review keeps each face's crop; a search that raised leads keeps each
        lead's probe and candidate crops; DeleteFaces and DeleteCollection drop theirs. A failure
        is recorded in the audit record and does not fail the operation (the store has committed)."""
        if self._open_evidence is None and self._evidence is None:
            return
        try:
            if op.name == "IndexFaces" and isinstance(result, IndexFacesResult):
                crops = [(r.face.face_id, r.crop) for r in result.face_records if r.crop is not None]
                if crops and self._review_covers(collection):
                    store = self.evidence
                    assert store is not None
                    store.put_enrolled(collection, crops)
                    record["evidence"] = {"enrolled_crops": len(crops)}
            elif leads:
                record["evidence"] = self._keep_lead_evidence(params, result, collection, leads)
            elif op.name == "DeleteFaces" and isinstance(result, DeleteFacesResult) and result.deleted_faces:
                store = self.evidence
                assert store is not None
                record["evidence"] = {"rows_deleted": store.forget_faces(collection, result.deleted_faces)}
            elif op.name == "DeleteCollection":
                store = self.evidence
                assert store is not None
                record["evidence"] = {"rows_deleted": store.forget_collection(collection)}
        except Exception as exc:  # the operation itself succeeded; say what was not kept
            record["evidence"] = {"error": f"{type(exc).__name__}: {exc}"}

    def _keep_lead_evidence(
        self, params: Params, result: object, collection: str, leads: list[str]
    ) -> dict[str, object]:
        store = self.evidence
        assert store is not None
        probe: bytes | None = getattr(result, "searched_face_crop", None)
        if probe is None and isinstance(params.get("FaceId"), str):
            probe = store.enrolled(collection, str(params["FaceId"]))
        if probe is None and isinstance(params.get("UserId"), str):
            probe = self._user_crop(store, collection, str(params["UserId"]))[1]
        kept = 0
        for lead_id, m in zip(leads, results.matches(result) or [], strict=True):
            if isinstance(m, FaceMatch):
                face_id: str | None = m.face.face_id
                candidate = store.enrolled(collection, m.face.face_id)
            elif isinstance(m, UserMatch):
                face_id, candidate = self._user_crop(store, collection, m.user.user_id)
            else:
                face_id, candidate = None, None
            store.put_lead(lead_id, collection, probe=probe, candidate_face_id=face_id, candidate=candidate)
            kept += (probe is not None) + (candidate is not None)
        out: dict[str, object] = {"lead_crops": kept}
        if probe is not None:
            out["probe_crop_sha256"] = hashlib.sha256(probe).hexdigest()
        return out

    def _user_crop(
        self, store: EvidenceStore, collection: str, user_id: str
    ) -> tuple[str | None, bytes | None]:
        """The first of a user's faces that has an enrolled crop: (its FaceId, the crop)."""
        if self.service_factory is None:
            return None, None
        for f in self.service_factory().list_faces(collection, user_id=user_id).faces:
            crop = store.enrolled(collection, f.face_id)
            if crop is not None:
                return f.face_id, crop
        return None, None
