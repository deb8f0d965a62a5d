"""The review queue honours the reviewer's policy profile and tells people apart by a normalised
name (issue 15, item 11).

The attacks: an admin-role key of the verification profile reads every lead; a verifier whose
profile may not run 1:N searches confirms one; a verifier scoped to some collections sees and
decides the leads of others; one person confirms twice, as ``ver1`` and then as ``VER1 ``.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from regard.accountability.policy import PolicyStore
from regard.accountability.request import Caller, RequestInfo
from regard.accountability.review import CONFIRMED, PENDING, Candidate, ReviewRefused, person
from regard.accountability.reviewing import ReviewDesk
from regard.errors import AccessDenied

from .helpers import INVESTIGATOR, VERIFIER_2

ADMIN_IN_VERIFICATION = Caller("RGKADM00000000000009", "boss", "admin", "verification")
VERIFIER_IN_VERIFICATION = Caller("RGKVRF00000000000009", "clerk-v", "verifier", "verification")
TEAM_A_VERIFIER = Caller("RGKTMA00000000000001", "alice", "verifier", "team-a")
VER1 = Caller("RGKVER00000000000011", "ver1", "verifier", "identification")
VER1_AGAIN = Caller("RGKVER00000000000012", " VER1 ", "verifier", "identification")
REQUESTER_AGAIN = Caller("RGKVER00000000000013", "INVESTIGATOR", "verifier", "identification")


def _info() -> RequestInfo:
    return RequestInfo(str(uuid.uuid4()))


def _lead(desk: ReviewDesk, collection: str) -> str:
    (lead_id,) = desk.queue.add(
        request_id=str(uuid.uuid4()),
        requester_key=INVESTIGATOR.access_key_id,
        requester_principal=INVESTIGATOR.principal,
        collection_id=collection,
        operation="SearchFacesByImage",
        candidates=[Candidate(str(uuid.uuid4()), None, "ext", 97.0, 1e-6)],
        purpose="locate a missing person",
        case_reference="CASE-1",
    )
    return lead_id


@pytest.fixture
def desk(tmp_path: Path) -> ReviewDesk:
    policy = PolicyStore(tmp_path)
    policy.set("team-a", "operations", "SearchFacesByImage,SearchFaces")
    policy.set("team-a", "collections", "team-a-*")
    policy.set("team-a", "roles", "verifier")
    return ReviewDesk.open(tmp_path)


def _refusals(desk: ReviewDesk, operation: str) -> int:
    return sum(1 for r in desk.audit.records() if r["operation"] == operation and r["outcome"] == "error")


def test_a_key_of_the_verification_profile_sees_and_decides_no_lead(desk: ReviewDesk) -> None:
    lead = _lead(desk, "team-a-watch")
    assert desk.list(ADMIN_IN_VERIFICATION, _info(), None) == []  # before: every lead
    with pytest.raises(AccessDenied):
        desk.decide(lead, "confirm", VERIFIER_IN_VERIFICATION, _info())
    assert desk.queue.get(lead).decisions == () and desk.queue.get(lead).status == PENDING
    assert _refusals(desk, "ReviewConfirm") == 1


def test_a_reviewer_sees_and_decides_only_the_collections_of_its_profile(desk: ReviewDesk) -> None:
    mine = _lead(desk, "team-a-watch")
    theirs = _lead(desk, "team-b-watch")
    assert [x["LeadId"] for x in desk.list(TEAM_A_VERIFIER, _info(), PENDING)] == [mine]
    with pytest.raises(AccessDenied):
        desk.decide(theirs, "confirm", TEAM_A_VERIFIER, _info())
    assert desk.queue.get(theirs).decisions == ()
    assert desk.decide(mine, "confirm", TEAM_A_VERIFIER, _info())["Status"] == PENDING
    # The identification profile covers every collection: its verifiers see both.
    assert {x["LeadId"] for x in desk.list(VERIFIER_2, _info(), None)} == {mine, theirs}
    assert desk.decide(mine, "confirm", VERIFIER_2, _info())["Status"] == CONFIRMED


def test_people_are_told_apart_by_a_normalised_name(desk: ReviewDesk) -> None:
    assert person(" VER1 ") == person("ver1") == "ver1"
    lead = _lead(desk, "watch")
    with pytest.raises(ReviewRefused):
        desk.decide(lead, "confirm", REQUESTER_AGAIN, _info())  # the requester, in capitals
    assert desk.decide(lead, "confirm", VER1, _info())["Status"] == PENDING
    with pytest.raises(ReviewRefused):
        desk.decide(lead, "confirm", VER1_AGAIN, _info())  # before: CONFIRMED by one person
    assert desk.queue.get(lead).status == PENDING
    assert desk.decide(lead, "confirm", VERIFIER_2, _info())["Status"] == CONFIRMED
