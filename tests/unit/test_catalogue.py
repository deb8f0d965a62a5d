"""The catalogue of operations (regard.catalogue) says what the hand-kept sets it replaced said.

The ``OLD_*`` constants below are those sets as they stood in policy.py, guard.py and local.py
before the catalogue, copied verbatim: every value the catalogue gives must be the one they gave.
The catalogue's served names are the API's operation table, its local methods are Service
methods, and docs/accountability.md's profile table says what the default profiles are.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from regard import catalogue
from regard.accountability.audit import AuditLog
from regard.accountability.guard import Caller, Guard, RequestInfo, recorded_parameters
from regard.accountability.policy import DEFAULT_PROFILES, PolicyConfig, config_from_dict, to_toml
from regard.api.rekognition.operations import OPERATIONS
from regard.api.rekognition.shapes import service_model
from regard.catalogue import OPERATIONS_BY_NAME, Kind
from regard.errors import InvalidParameter, UnsupportedOperation
from regard.service import Service

ROOT = Path(__file__).resolve().parents[2]

# -- the sets as they were ------------------------------------------------------------------------
OLD_ALL_OPERATIONS = (  # policy.ALL_OPERATIONS
    "DetectFaces",
    "CompareFaces",
    "CreateCollection",
    "DescribeCollection",
    "ListCollections",
    "DeleteCollection",
    "IndexFaces",
    "ListFaces",
    "DeleteFaces",
    "SearchFaces",
    "SearchFacesByImage",
    "CreateUser",
    "DeleteUser",
    "ListUsers",
    "AssociateFaces",
    "DisassociateFaces",
    "SearchUsers",
    "SearchUsersByImage",
    "TagResource",
    "UntagResource",
    "ListTagsForResource",
)
#: Served since issue 20 (stored video), after the old list: Starts are biometric (StartFaceSearch a
#: 1:N identification with FaceMatchThreshold, default 80), Gets read a job's results.
VIDEO_OPERATIONS = ("StartFaceDetection", "GetFaceDetection", "StartFaceSearch", "GetFaceSearch")
OLD_BIOMETRIC_OPERATIONS = {  # policy.BIOMETRIC_OPERATIONS
    "DetectFaces",
    "CompareFaces",
    "IndexFaces",
    "SearchFaces",
    "SearchFacesByImage",
    "SearchUsers",
    "SearchUsersByImage",
    "AssociateFaces",
    "DisassociateFaces",
}
OLD_IDENTIFICATION_OPERATIONS = {"SearchFaces", "SearchFacesByImage", "SearchUsers", "SearchUsersByImage"}
OLD_THRESHOLD_PARAMETERS = {  # policy.THRESHOLD_PARAMETERS
    "CompareFaces": ("SimilarityThreshold", 80.0),
    "SearchFaces": ("FaceMatchThreshold", 80.0),
    "SearchFacesByImage": ("FaceMatchThreshold", 80.0),
    "SearchUsers": ("UserMatchThreshold", 80.0),
    "SearchUsersByImage": ("UserMatchThreshold", 80.0),
}
OLD_RECORDED_PARAMS = (  # guard._RECORDED_PARAMS (kept for any operation whose request has them)
    "MaxFaces",
    "MaxUsers",
    "MaxResults",
    "FaceMatchThreshold",
    "SimilarityThreshold",
    "UserMatchThreshold",
    "QualityFilter",
    "Attributes",
    "DetectionAttributes",
    "ExternalImageId",
    "FaceId",
    "FaceIds",
    "UserId",
    "ClientRequestToken",
    "ResourceArn",
    "TagKeys",
)
OLD_IMAGE_PARAMS = ("Image", "SourceImage", "TargetImage")  # guard.recorded_parameters
OLD_READ_ONLY = {"DescribeCollection", "ListCollections", "ListFaces", "ListUsers", "ListTagsForResource"}
OLD_LOGGED = {  # local.LOGGED: Service method -> operation
    "create_collection": "CreateCollection",
    "delete_collection": "DeleteCollection",
    "index_faces": "IndexFaces",
    "add_templates": "AddTemplates",
    "delete_faces": "DeleteFaces",
    "search_faces": "SearchFaces",
    "search_faces_by_image": "SearchFacesByImage",
    "search_faces_by_vector": "SearchFacesByVector",
    "create_user": "CreateUser",
    "delete_user": "DeleteUser",
    "associate_faces": "AssociateFaces",
    "disassociate_faces": "DisassociateFaces",
    "search_users": "SearchUsers",
    "search_users_by_image": "SearchUsersByImage",
    "tag_resource": "TagResource",
    "untag_resource": "UntagResource",
}
OLD_LOCAL_BIOMETRIC = {  # local._BIOMETRIC
    "IndexFaces",
    "SearchFaces",
    "SearchFacesByImage",
    "SearchFacesByVector",
    "SearchUsers",
    "SearchUsersByImage",
    "AssociateFaces",
    "DisassociateFaces",
    "AddTemplates",
}
#: sha256 of the policy.toml that PolicyConfig() writes: the one written before the catalogue
#: (09263bcc...) plus, since issue 17, the assessment profile and the settings require_assessment,
#: suspend_on_drift, drift_window and drift_alpha (8f5e3884...), plus, since issue 20, the video
#: operations: StartFaceDetection and GetFaceDetection in verification and identification,
#: StartFaceSearch and GetFaceSearch in identification. A change of the defaults must change this on purpose.
OLD_DEFAULT_POLICY_SHA256 = "e3276e360da3be3504ffffb7d631bca585bfb4e152021faaf781fea0bb278108"

#: The kind of each operation (new with the catalogue; read-only follows from it).
KINDS = {
    "DetectFaces": Kind.DETECTION,
    "CompareFaces": Kind.COMPARISON,
    "CreateCollection": Kind.COLLECTION,
    "DeleteCollection": Kind.COLLECTION,
    "DescribeCollection": Kind.LISTING,
    "ListCollections": Kind.LISTING,
    "ListFaces": Kind.LISTING,
    "ListUsers": Kind.LISTING,
    "ListTagsForResource": Kind.LISTING,
    "IndexFaces": Kind.INDEXING,
    "DeleteFaces": Kind.INDEXING,
    "AddTemplates": Kind.INDEXING,
    "CreateUser": Kind.USERS,
    "DeleteUser": Kind.USERS,
    "AssociateFaces": Kind.USERS,
    "DisassociateFaces": Kind.USERS,
    "SearchFaces": Kind.SEARCH,
    "SearchFacesByImage": Kind.SEARCH,
    "SearchFacesByVector": Kind.SEARCH,
    "SearchUsers": Kind.SEARCH,
    "SearchUsersByImage": Kind.SEARCH,
    "TagResource": Kind.TAGS,
    "UntagResource": Kind.TAGS,
    "StartFaceDetection": Kind.DETECTION,
    "GetFaceDetection": Kind.LISTING,
    "StartFaceSearch": Kind.SEARCH,
    "GetFaceSearch": Kind.LISTING,
}

SERVED = [op for op in OPERATIONS_BY_NAME.values() if op.served]


def _input_members(name: str) -> list[str]:
    return list(service_model().operation_model(name).input_shape.members)


# -- names ----------------------------------------------------------------------------------------
def test_served_names_are_the_api_operation_table() -> None:
    assert {op.name for op in SERVED} == set(OPERATIONS)
    assert catalogue.served_names() == frozenset(OPERATIONS)


def test_served_names_are_the_old_policy_list_in_its_order() -> None:
    assert tuple(op.name for op in SERVED) == OLD_ALL_OPERATIONS + VIDEO_OPERATIONS


def test_video_operations_are_a_detection_a_search_and_two_reads() -> None:
    start_detection, get_detection, start_search, get_search = (
        OPERATIONS_BY_NAME[n] for n in VIDEO_OPERATIONS
    )
    assert start_detection.biometric and not start_detection.identification
    assert start_search.biometric and start_search.identification and start_search.gallery == "faces"
    assert start_search.threshold is not None
    assert (start_search.threshold.parameter, start_search.threshold.default) == ("FaceMatchThreshold", 80.0)
    assert all(op.read_only and not op.biometric for op in (get_detection, get_search))
    assert start_detection.images == start_search.images == ("Video",)


def test_local_only_names_are_the_old_logged_names_outside_the_api() -> None:
    local_only = {op.name for op in OPERATIONS_BY_NAME.values() if not op.served}
    assert local_only == set(OLD_LOGGED.values()) - set(OLD_ALL_OPERATIONS)
    assert local_only == {"AddTemplates", "SearchFacesByVector"}


def test_every_name_is_its_key_and_every_kind_is_pinned() -> None:
    assert all(op.name == name for name, op in OPERATIONS_BY_NAME.items())
    assert {name: op.kind for name, op in OPERATIONS_BY_NAME.items()} == KINDS


# -- the old sets, operation by operation -----------------------------------------------------------
@pytest.mark.parametrize("name", OLD_ALL_OPERATIONS)
def test_served_operation_keeps_the_old_policy_values(name: str) -> None:
    op = OPERATIONS_BY_NAME[name]
    assert op.biometric == (name in OLD_BIOMETRIC_OPERATIONS)
    assert op.identification == (name in OLD_IDENTIFICATION_OPERATIONS)
    threshold = (op.threshold.parameter, op.threshold.default) if op.threshold else None
    assert threshold == OLD_THRESHOLD_PARAMETERS.get(name)
    # the guard counted SearchUsers' gallery in users and SearchFaces' in faces
    if op.identification:
        assert op.gallery == ("users" if name.startswith("SearchUsers") else "faces")


@pytest.mark.parametrize("name", OLD_ALL_OPERATIONS)
def test_guard_records_the_collection_after_exactly_the_old_changes(name: str) -> None:
    """The guard recorded a collection's state after an operation not in _READ_ONLY nor 1:N; of the
    operations that can name a collection, those are the ones that are not read-only. (DetectFaces
    and CompareFaces were in neither set, but name no collection, so nothing was recorded.)"""
    members = _input_members(name)
    old_changes = name not in OLD_READ_ONLY and name not in OLD_IDENTIFICATION_OPERATIONS
    if "CollectionId" in members or "ResourceArn" in members:
        assert (not OPERATIONS_BY_NAME[name].read_only) == old_changes
    else:  # DetectFaces, CompareFaces, ListCollections: no collection, no state recorded either way
        assert OPERATIONS_BY_NAME[name].read_only


@pytest.mark.parametrize("name", OLD_ALL_OPERATIONS)
def test_recorded_parameters_are_the_old_ones_for_each_request(name: str) -> None:
    """guard kept any of _RECORDED_PARAMS present; validated requests hold only the model's members,
    so per operation that is the model's members among them (plus images and Tags as keys)."""
    members = _input_members(name)
    op = OPERATIONS_BY_NAME[name]
    assert op.recorded == tuple(p for p in OLD_RECORDED_PARAMS if p in members)
    assert op.images == tuple(p for p in OLD_IMAGE_PARAMS if p in members)
    assert op.tag_keys_of_tags == ("Tags" in members)


def _old_recorded_parameters(params: dict[str, object]) -> dict[str, object]:
    out: dict[str, object] = {k: params[k] for k in OLD_RECORDED_PARAMS if k in params}
    tags = params.get("Tags")
    if isinstance(tags, dict):
        out["TagKeys"] = sorted(tags)
    for name in OLD_IMAGE_PARAMS:
        image = params.get(name)
        if isinstance(image, dict) and "Bytes" in image:
            data = image["Bytes"]
            assert isinstance(data, bytes)
            out[name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    return out


@pytest.mark.parametrize("name", OLD_ALL_OPERATIONS)
def test_a_request_with_every_member_is_recorded_as_before(name: str) -> None:
    values: dict[str, object] = {
        "Image": {"Bytes": b"probe"},
        "SourceImage": {"Bytes": b"source"},
        "TargetImage": {"Bytes": b"target"},
        "Tags": {"b": "2", "a": "1"},
        "TagKeys": ["a"],
        "FaceIds": ["f1", "f2"],
        "Attributes": ["ALL"],
        "DetectionAttributes": ["DEFAULT"],
    }
    params = {m: values.get(m, f"{m}-value") for m in _input_members(name)}
    assert recorded_parameters(name, params) == _old_recorded_parameters(params)


@pytest.mark.parametrize("method", sorted(OLD_LOGGED))
def test_local_methods_are_the_old_logged_ones(method: str) -> None:
    op = catalogue.by_local_method(method)
    assert op is not None and op.name == OLD_LOGGED[method]
    assert op.biometric == (op.name in OLD_LOCAL_BIOMETRIC)
    assert callable(getattr(Service, method))


def test_no_other_method_is_logged_locally() -> None:
    logged = {op.local_method: op.name for op in OPERATIONS_BY_NAME.values() if op.local_method}
    assert logged == OLD_LOGGED
    assert catalogue.by_local_method("describe_collection") is None


def test_the_guard_refuses_and_records_what_the_catalogue_does_not_serve(tmp_path: Path) -> None:
    guard = Guard(tmp_path)
    admin = Caller("RGKADMIN000000000001", "operator-admin", "admin", "admin")  # profile "*"
    for name in ("DetectLabels", "AddTemplates"):
        with pytest.raises(UnsupportedOperation, match=name):
            guard.run(name, {}, admin, RequestInfo(request_id=name), lambda p: {})
    records = list(AuditLog(tmp_path).records())
    assert [(r["operation"], r["outcome"], r["error"]["code"]) for r in records] == [
        ("DetectLabels", "error", "UnsupportedOperationException"),
        ("AddTemplates", "error", "UnsupportedOperationException"),
    ]


# -- the kinds and their read-only rule ---------------------------------------------------------------
def test_read_only_follows_from_the_kind() -> None:
    for op in OPERATIONS_BY_NAME.values():
        assert op.read_only == (op.kind in catalogue.READ_ONLY_KINDS)
    assert {Kind.DETECTION, Kind.COMPARISON, Kind.LISTING, Kind.SEARCH} == catalogue.READ_ONLY_KINDS


def test_identification_is_exactly_the_searches_and_each_has_a_threshold() -> None:
    for op in OPERATIONS_BY_NAME.values():
        assert op.identification == (op.kind is Kind.SEARCH)
        if op.identification:
            assert op.threshold is not None and op.gallery in ("faces", "users")
        else:
            assert op.gallery is None


def test_thresholds_are_request_members_and_agree_with_the_service_defaults() -> None:
    from regard import service

    defaults = {
        "FaceMatchThreshold": service.DEFAULT_FACE_MATCH_THRESHOLD,
        "UserMatchThreshold": service.DEFAULT_USER_MATCH_THRESHOLD_SEARCH,
        "SimilarityThreshold": service.DEFAULT_SIMILARITY_THRESHOLD,
    }
    for op in SERVED:
        if op.threshold is not None:
            assert op.threshold.parameter in _input_members(op.name)
            assert op.threshold.default == defaults[op.threshold.parameter]


# -- policy and its documentation ----------------------------------------------------------------------
def test_default_policy_file_is_unchanged() -> None:
    text = to_toml(PolicyConfig())
    assert hashlib.sha256(text.encode()).hexdigest() == OLD_DEFAULT_POLICY_SHA256
    assert config_from_dict(tomllib.loads(text)) == PolicyConfig()


def test_a_policy_file_naming_every_served_operation_loads_and_others_are_refused() -> None:
    listed = ", ".join(f'"{n}"' for n in OLD_ALL_OPERATIONS)
    config = config_from_dict(tomllib.loads(f"[profiles.all]\noperations = [{listed}]\n"))
    assert config.profiles["all"].operations == OLD_ALL_OPERATIONS
    for name in ("AddTemplates", "SearchFacesByVector", "DetectLabels"):
        with pytest.raises(InvalidParameter, match="unknown operation"):
            config_from_dict({"profiles": {"p": {"operations": [name]}}})


def test_default_profiles_name_only_served_operations() -> None:
    for profile in DEFAULT_PROFILES.values():
        assert profile.validate() is profile
        assert set(profile.operations) <= catalogue.served_names() | {"*"}


def _profile_table() -> dict[str, dict[str, str]]:
    """docs/accountability.md's table of default profiles: setting -> profile -> cell."""
    text = (ROOT / "docs" / "accountability.md").read_text(encoding="utf-8")
    section = text.split("## Policy profiles", 1)[1].split("\n\n| setting |", 1)[1]
    rows = ("| setting |" + section.split("\n\n", 1)[0]).splitlines()
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    assert header == ["setting", "verification", "identification", "assessment", "admin"]
    table: dict[str, dict[str, str]] = {}
    for row in rows[2:]:
        cells = [c.strip() for c in row.strip("|").split("|")]
        table[cells[0]] = dict(zip(header[1:], cells[1:], strict=True))
    return table


def _documented_operations(cell: str) -> set[str]:
    """Operation names, ``all``, or catalogue kinds ("kinds: detection, comparison, ...")."""
    if cell == "all":
        return set(catalogue.served_names())
    m = re.fullmatch(r"kinds: (.*)", cell)
    if m:
        kinds = {Kind(k.strip()) for k in m.group(1).split(",")}
        return {op.name for op in SERVED if op.kind in kinds}
    return {n.strip() for n in cell.split(",")}


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def test_documented_profiles_agree_with_the_policy_and_the_catalogue() -> None:
    table = _profile_table()
    for name, profile in DEFAULT_PROFILES.items():
        expected = catalogue.served_names() if profile.operations == ("*",) else set(profile.operations)
        cell = table["`operations`"][name]
        assert (set() if cell == "none" else _documented_operations(cell)) == expected, name
        assert {r.strip() for r in table["`roles`"][name].split(",")} == set(profile.roles), name
        assert table["`on_low_threshold`"][name] == profile.on_low_threshold
        rate, burst = (float(x) for x in table["`rate_per_second` / `burst`"][name].split("/"))
        assert (rate, burst) == (profile.rate_per_second, profile.burst)
        assert table["`two_person_review`"][name] == _yes_no(profile.two_person_review)
        assert table["`require_assessment`"][name] == _yes_no(profile.require_assessment)
        drift = table["`suspend_on_drift` (`drift_window` 50, `drift_alpha` 0.01)"][name]
        assert drift == _yes_no(profile.suspend_on_drift)
        assert (profile.drift_window, profile.drift_alpha) == (50, 0.01)
        assert table["`require_provenance` (IndexFaces)"][name] == _yes_no(profile.require_provenance)
        assert profile.require_purpose == profile.require_case_reference
        assert table["`require_purpose`, `require_case_reference`"][name] == _yes_no(profile.require_purpose)
        fmr = table["`max_fmr` (per comparison)"][name].split(" ")[0]
        assert float(fmr) == profile.max_fmr
        fpir = table["`max_fpir` (per search)"][name]
        assert (0.0 if fpir == "-" else float(fpir)) == profile.max_fpir


def test_documented_max_fmr_is_the_default_threshold() -> None:
    """The verification cell says "1e-4 (similarity 80)": 80 is every default threshold."""
    from regard.scoring.calibrate import similarity_from_fmr

    cell = _profile_table()["`max_fmr` (per comparison)"]["verification"]
    m = re.fullmatch(r"(\S+) \(similarity (\d+)\)", cell)
    assert m is not None
    assert similarity_from_fmr(float(m.group(1))) == pytest.approx(float(m.group(2)))
    assert {op.threshold.default for op in SERVED if op.threshold} == {float(m.group(2))}


# -- layering -------------------------------------------------------------------------------------------
def test_the_catalogue_imports_nothing_of_regard_but_itself() -> None:
    code = (
        "import json, sys, regard.catalogue; "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('regard.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout)
    assert not any(m.split(".")[1] in {"api", "accountability", "cli", "service"} for m in loaded), loaded
