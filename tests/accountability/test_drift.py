"""The drift signal end to end through :class:`ReviewDesk`: real audit log, review queue, policy and
assessment store in a temporary data directory; leads added as the guard adds them and decided by
two verifiers. With the assessment predicting that reviewers reject 5% of leads, a field where
half are rejected is flagged once, recorded once and (``suspend_on_drift``) closes the gate; one
rejection in twenty is not flagged."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from regard.accountability.assessment import (
    Assessment,
    AssessmentStore,
    drift,
    new_record,
    validate_form,
)
from regard.accountability.audit import AuditLog
from regard.accountability.policy import PolicyStore
from regard.accountability.request import RequestInfo
from regard.accountability.review import REJECTED, Candidate, ReviewQueue
from regard.accountability.reviewing import DRIFT_OPERATION, ReviewDesk

from .helpers import INVESTIGATOR, VERIFIER_1, VERIFIER_2

FORM: dict[str, Any] = {
    "organisation": "Example police service",
    "purpose": "locating missing persons",
    "legal_basis": "national law under AI Act art. 5(2)",
    "affected_people": ["people reported missing"],
    "children_affected": True,
    "expected_volume": {"searches_per_month": 20, "gallery_size": 5},
    "risks": ["misidentification"],
    "mitigations": ["two-person review"],
    "human_oversight": "two trained verifiers confirm each lead",
    "complaints": "the ombudsman",
    "retention": "leads 6 months",
}
SCORING = {"model": "test-model", "normalizer": "none"}


def evaluation(predicted: float, gates_passed: bool = True) -> dict[str, Any]:
    """An evaluation report as an assessment cites it (the shape ``read_report`` returns)."""
    return {
        "file": "report.json",
        "sha256": "ab" * 32,
        "dataset": {"name": "field sample", "images": 200, "subjects": 80},
        "gates_file": "gates.toml",
        "gates": [
            {
                "name": "fpir_at_floor",
                "where": "all",
                "value": 0.001,
                "limit": "<= 0.01",
                "passed": gates_passed,
                "reason": "",
            }
        ],
        "gates_passed": gates_passed,
        "predicted_rejection_share": predicted,
    }


def approved_assessment(
    data_dir: Path,
    collections: list[str],
    scoring: dict[str, str],
    predicted: float,
    profile_name: str = "identification",
) -> Assessment:
    """An assessment created by an operator and approved by an assessor, through the library."""
    store = AssessmentStore(data_dir)
    profile = PolicyStore(data_dir).load().profile(profile_name)
    made = store.create(
        new_record(
            profile=profile,
            collections=collections,
            scoring=scoring,
            form=validate_form(FORM),
            form_sha256="cd" * 32,
            reports=[evaluation(predicted)],
            created_by="operator",
            created_by_key=None,
            now=datetime.now(UTC),
        )
    )
    return store.decide(
        made.assessment_id,
        "approve",
        principal="assessor",
        role="assessor",
        access_key_id=None,
        note="checked the form and the gates",
    )


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed term by term."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def _setup(tmp_path: Path, *, suspend: bool) -> tuple[ReviewDesk, Assessment]:
    policies = PolicyStore(tmp_path)
    policies.set("identification", "drift_window", "20")
    policies.set("identification", "suspend_on_drift", "true" if suspend else "false")
    found = approved_assessment(tmp_path, ["watch*"], SCORING, predicted=0.05)
    desk = ReviewDesk(AuditLog(tmp_path), ReviewQueue(tmp_path), policies, AssessmentStore(tmp_path))
    return desk, found


def _decide_leads(desk: ReviewDesk, rejected: list[bool]) -> None:
    """One lead per entry, raised by a search of the investigator; rejected by one verifier, or
    confirmed by two."""
    for reject in rejected:
        (lead_id,) = desk.queue.add(
            request_id=str(uuid.uuid4()),
            requester_key=INVESTIGATOR.access_key_id,
            requester_principal=INVESTIGATOR.principal,
            collection_id="watchlist",
            operation="SearchFacesByImage",
            candidates=[Candidate("face", None, "subject", 99.0, 1e-6)],
            purpose="locating missing persons",
            case_reference="CASE-1",
        )
        if reject:
            desk.decide(lead_id, "reject", VERIFIER_1, RequestInfo(str(uuid.uuid4())), "not the same person")
        else:
            desk.decide(lead_id, "confirm", VERIFIER_1, RequestInfo(str(uuid.uuid4())), "same")
            desk.decide(lead_id, "confirm", VERIFIER_2, RequestInfo(str(uuid.uuid4())), "same")


def _drift_records(desk: ReviewDesk) -> list[dict[str, Any]]:
    return [r for r in desk.audit.records() if r.get("operation") == DRIFT_OPERATION]


def test_half_the_leads_rejected_flags_drift_once_and_suspends_the_assessment(tmp_path: Path) -> None:
    desk, found = _setup(tmp_path, suspend=True)
    store = AssessmentStore(tmp_path)
    profile = PolicyStore(tmp_path).load().profile("identification")
    assert store.current(profile, "watchlist", SCORING)[0] is not None
    _decide_leads(desk, [i % 2 == 1 for i in range(20)])  # 10 of 20 rejected

    (rec,) = _drift_records(desk)
    assert rec["kind"] == "system" and rec["outcome"] == "success"
    assert rec["parameters"]["assessment_id"] == found.assessment_id
    res = rec["results"]
    assert res["flagged"] is True and res["suspended"] is True
    assert res["predicted_share"] == 0.05 and res["alpha"] == 0.01
    # flagged at the first decision whose window is significant; its numbers are the binomial tail
    assert res["p_value"] == pytest.approx(binomial_tail(res["rejected"], res["leads"], 0.05), rel=1e-9)
    assert res["p_value"] < 0.01
    assert res["leads"] < 20  # flagged as soon as it was significant, not at the end
    # the gate is closed: the assessment is suspended until a new one is approved
    suspended = store.get(found.assessment_id)
    assert suspended.suspension is not None and suspended.suspension.principal == "regard:drift"
    now, why = store.current(profile, "watchlist", SCORING)
    assert now is None and "suspended" in why and found.assessment_id in why
    assert desk.audit.verify().ok

    # the whole field: 10 of the 20 leads rejected, p-value tiny
    window = desk.queue.final_decisions(covers=found.covers, decided_since="", limit=20)
    final = drift([status == REJECTED for _, status, _ in window], 0.05, 0.01)
    assert (final.leads, final.rejected) == (20, 10)
    assert final.p_value == pytest.approx(binomial_tail(10, 20, 0.05), rel=1e-9)
    assert final.p_value < 1e-7 and final.flagged


def test_drift_without_suspension_is_recorded_once_per_episode(tmp_path: Path) -> None:
    desk, found = _setup(tmp_path, suspend=False)
    _decide_leads(desk, [i % 2 == 1 for i in range(20)])
    (rec,) = _drift_records(desk)  # flagged at every decision after the first: recorded once
    assert rec["results"]["suspended"] is False
    store = AssessmentStore(tmp_path)
    assert store.get(found.assessment_id).suspension is None
    profile = PolicyStore(tmp_path).load().profile("identification")
    assert store.current(profile, "watchlist", SCORING)[0] is not None
    # once every lead of the flagged window has left it (20 newer leads), a new episode is recorded
    _decide_leads(desk, [True] * 20)
    first, second = _drift_records(desk)
    assert first == rec and second["results"]["leads"] == 20


def test_one_rejection_in_twenty_is_not_drift(tmp_path: Path) -> None:
    desk, found = _setup(tmp_path, suspend=True)
    _decide_leads(desk, [True] + [False] * 19)
    assert _drift_records(desk) == []
    store = AssessmentStore(tmp_path)
    assert store.get(found.assessment_id).suspension is None
    profile = PolicyStore(tmp_path).load().profile("identification")
    assert store.current(profile, "watchlist", SCORING)[0] is not None
    window = desk.queue.final_decisions(covers=found.covers, decided_since="", limit=20)
    result = drift([status == REJECTED for _, status, _ in window], 0.05, 0.01)
    assert (result.leads, result.rejected, result.flagged) == (20, 1, False)
    assert result.p_value == pytest.approx(binomial_tail(1, 20, 0.05), rel=1e-9)
    assert result.p_value == pytest.approx(1 - 0.95**20, rel=1e-9)


def test_leads_of_collections_no_assessment_covers_are_not_tested(tmp_path: Path) -> None:
    queue = ReviewQueue(tmp_path)
    desk = ReviewDesk(AuditLog(tmp_path), queue, PolicyStore(tmp_path), AssessmentStore(tmp_path))
    _decide_leads(desk, [True] * 3)  # no assessment yet: no drift test at all
    assert _drift_records(desk) == []
    found = approved_assessment(tmp_path, ["other"], SCORING, predicted=0.05)
    _decide_leads(desk, [True] * 5)  # all rejected, but in watchlist, which it does not cover
    assert _drift_records(desk) == []
    assert AssessmentStore(tmp_path).get(found.assessment_id).suspension is None
    assert queue.final_decisions(covers=found.covers, decided_since="", limit=50) == []
    # the window: final leads of the covered collections decided since a time, the newest last
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    covers = approved_assessment(tmp_path, ["watch*"], SCORING, predicted=0.05).covers
    everything = queue.final_decisions(covers=covers, decided_since="", limit=50)
    assert len(everything) == 8 and all(status == REJECTED for _, status, _ in everything)
    assert [at for _, _, at in everything] == sorted(at for _, _, at in everything)
    assert queue.final_decisions(covers=covers, decided_since="", limit=3) == everything[-3:]
    assert queue.final_decisions(covers=covers, decided_since=since, limit=50) == []


@pytest.mark.postgres
def test_drift_on_the_shared_database(pg_url: str, tmp_path: Path) -> None:
    """The same signal with every store in PostgreSQL (the workspace of a node of a cluster)."""
    from regard.workspace import Workspace

    ws = Workspace.open(data_dir=tmp_path, database_url=pg_url)
    try:
        policies = ws.policies()
        policies.set("identification", "drift_window", "20")
        profile = policies.load().profile("identification")
        store = ws.assessments()
        made = store.create(
            new_record(
                profile=profile,
                collections=["watch*"],
                scoring=SCORING,
                form=validate_form(FORM),
                form_sha256="cd" * 32,
                reports=[evaluation(0.05)],
                created_by="operator",
                created_by_key=None,
                now=datetime.now(UTC),
            )
        )
        store.decide(made.assessment_id, "approve", principal="assessor", role="assessor",
                     access_key_id=None, note="checked")  # fmt: skip
        desk = ReviewDesk(ws.audit(), ws.review(), policies, store)
        _decide_leads(desk, [False, True, True, True, True])
        (rec,) = _drift_records(desk)
        assert (rec["results"]["leads"], rec["results"]["rejected"]) == (3, 2)  # p = 0.00725 < 0.01
        assert rec["results"]["p_value"] == pytest.approx(binomial_tail(2, 3, 0.05), rel=1e-9)
        assert store.current(profile, "watchlist", SCORING)[0] is None
        assert desk.audit.verify().ok
    finally:
        ws.close()
    assert not (tmp_path / "assessments.sqlite3").exists() and not (tmp_path / "review.sqlite3").exists()
