"""Policy profiles (file, floors, rate limits) and the two-person review queue."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from regard.accountability.policy import DEFAULT_PROFILES, PolicyStore, RateLimiter, to_toml
from regard.accountability.review import (
    CONFIRMED,
    PENDING,
    REJECTED,
    Candidate,
    ReviewQueue,
    ReviewRefused,
)
from regard.errors import AccessDenied, ConflictError, InvalidParameter, Throttling
from regard.scoring.calibrate import fmr_from_similarity


def test_default_policy_file_is_written_readable_and_round_trips(tmp_path: Path) -> None:
    store = PolicyStore(tmp_path)
    config = store.load()
    assert set(config.profiles) == {"verification", "identification", "assessment", "admin"}
    text = (tmp_path / "policy.toml").read_text()
    assert "[profiles.identification]" in text and "max_fpir = 0.001" in text
    parsed = tomllib.loads(text)
    assert parsed["audit"]["retention_floor_days"] == 183
    assert config.profiles == DEFAULT_PROFILES
    assert to_toml(config) == text
    with pytest.raises(AccessDenied):
        config.profile("nobody")


def test_identification_floor_rises_with_the_gallery() -> None:
    p = DEFAULT_PROFILES["identification"]
    floors = [p.floor_fmr("SearchFacesByImage", n) for n in (1, 10, 1000, 1_000_000)]
    assert floors == sorted(floors, reverse=True)
    # FPIR ~ gallery x FMR: the per-comparison rate times the gallery stays at the FPIR floor
    assert floors[2] * 1000 == pytest.approx(p.max_fpir)
    assert floors[3] * 1_000_000 == pytest.approx(p.max_fpir)
    sims = [p.floor_similarity("SearchFacesByImage", n) for n in (10, 50, 100)]
    assert sims[0] < sims[1] < sims[2]
    assert fmr_from_similarity(sims[1]) == pytest.approx(p.max_fpir / 50)
    # small galleries: the per-comparison floor (max_fmr) still applies
    assert p.floor_fmr("SearchFacesByImage", 1) == p.max_fmr
    # 1:1 comparisons only see the per-comparison floor
    assert p.floor_fmr("CompareFaces", None) == p.max_fmr


def test_policy_set_changes_and_validates(tmp_path: Path) -> None:
    store = PolicyStore(tmp_path)
    assert store.set("identification", "on_low_threshold", "raise") == ("deny", "raise")
    assert store.load().profile("identification").on_low_threshold == "raise"
    assert store.set("verification", "max_fmr", "1e-5") == (1e-4, 1e-5)
    assert store.set("verification", "collections", "faces-*, staff") == (("*",), ("faces-*", "staff"))
    p = store.load().profile("verification")
    assert p.allows_collection("faces-2026") and not p.allows_collection("watchlist")
    assert store.set("audit", "retention_floor_days", "365") == (183, 365)
    assert PolicyStore(tmp_path).load().retention_floor_days == 365
    for setting, value in (
        ("on_low_threshold", "ignore"),
        ("max_fmr", "2"),
        ("max_fmr", "lots"),
        ("operations", "DetectFaces,RecognizeCelebrities"),
        ("roles", "superuser"),
        ("nonsense", "1"),
    ):
        with pytest.raises(InvalidParameter):
            store.set("verification", setting, value)
    assert store.load().profile("verification").max_fmr == 1e-5


def test_rate_limiter_throttles_beyond_the_burst() -> None:
    limiter = RateLimiter()
    for _ in range(5):
        limiter.take("k", rate=0.001, burst=5)
    with pytest.raises(Throttling):
        limiter.take("k", rate=0.001, burst=5)
    limiter.take("other", rate=0.001, burst=5)  # buckets are per key
    for _ in range(100):
        limiter.take("k", rate=0.0, burst=0)  # 0: unlimited


def _queue_with_lead(tmp_path: Path) -> tuple[ReviewQueue, str]:
    q = ReviewQueue(tmp_path)
    (lead,) = q.add(
        request_id="req-1",
        requester_key="RGKREQUESTER",
        requester_principal="investigator",
        collection_id="watchlist",
        operation="SearchFacesByImage",
        candidates=[Candidate("f-1", None, "subject-1", 93.2, 3.3e-5)],
        purpose="missing person",
        case_reference="CASE-1",
    )
    return q, lead


def test_one_verifier_cannot_confirm_alone(tmp_path: Path) -> None:
    q, lead = _queue_with_lead(tmp_path)
    first = q.decide(
        lead, reviewer_key="RGKV1", reviewer_principal="vera", reviewer_role="verifier", decision="confirm"
    )
    assert first.status == PENDING
    with pytest.raises(ReviewRefused):  # the same person again
        q.decide(
            lead,
            reviewer_key="RGKV1",
            reviewer_principal="vera",
            reviewer_role="verifier",
            decision="confirm",
        )
    with pytest.raises(ReviewRefused):  # the same person with another key
        q.decide(
            lead,
            reviewer_key="RGKV1b",
            reviewer_principal="vera",
            reviewer_role="verifier",
            decision="confirm",
        )
    with pytest.raises(ReviewRefused):  # the requester
        q.decide(
            lead,
            reviewer_key="RGKREQUESTER",
            reviewer_principal="investigator",
            reviewer_role="verifier",
            decision="confirm",
        )
    with pytest.raises(ReviewRefused):  # not a verifier
        q.decide(
            lead,
            reviewer_key="RGKOP",
            reviewer_principal="otto",
            reviewer_role="operator",
            decision="confirm",
        )
    assert q.get(lead).status == PENDING
    second = q.decide(
        lead, reviewer_key="RGKV2", reviewer_principal="victor", reviewer_role="verifier", decision="confirm"
    )
    assert second.status == CONFIRMED and second.decided_at is not None
    assert [d.reviewer_principal for d in second.decisions] == ["vera", "victor"]
    with pytest.raises(ConflictError):
        q.decide(
            lead, reviewer_key="RGKV3", reviewer_principal="vic", reviewer_role="verifier", decision="reject"
        )
    assert q.list() == [] and [x.lead_id for x in q.list(status=CONFIRMED)] == [lead]


def test_a_rejection_closes_the_lead(tmp_path: Path) -> None:
    q, lead = _queue_with_lead(tmp_path)
    out = q.decide(
        lead,
        reviewer_key="RGKV1",
        reviewer_principal="vera",
        reviewer_role="verifier",
        decision="reject",
        note="no",
    )
    assert out.status == REJECTED
    assert out.to_json()["Decisions"][0]["Note"] == "no"
    assert q.forget_faces(["f-1"]) == 1
    assert q.list(status=None) == []
