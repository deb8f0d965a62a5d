"""A guarded, in-process Rekognition endpoint for accountability tests (real service, engine, files)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regard.accountability.guard import Caller, Guard, RequestInfo
from regard.api.rekognition import operations
from regard.api.rekognition.operations import OPERATIONS, Context
from regard.api.rekognition.s3 import S3Images
from regard.config import Settings
from regard.face.engine import Engine
from regard.service import Service

ADMIN = Caller("RGKADMIN000000000001", "operator-admin", "admin", "admin")
INVESTIGATOR = Caller("RGKINV00000000000001", "investigator", "operator", "identification")
VERIFIER_1 = Caller("RGKVER00000000000001", "vera", "verifier", "identification")
VERIFIER_2 = Caller("RGKVER00000000000002", "victor", "verifier", "identification")
CLERK = Caller("RGKVRF00000000000001", "clerk", "operator", "verification")
CASE = {"purpose": "locate a missing person", "case_reference": "CASE-2026-001"}
PROVENANCE = {"source_note": "passport photo supplied by the family", "legal_basis": "GDPR art. 9(2)(c)"}


@dataclass
class Answer:
    """A guarded operation as the API answers it: the rendered response, headers, audit record."""

    result: dict[str, Any]
    headers: dict[str, str]
    record: dict[str, Any]


@dataclass
class Endpoint:
    data_dir: Path
    service: Service
    guard: Guard
    ctx: Context

    def call(self, operation: str, caller: Caller = ADMIN, **params: Any) -> Answer:
        info_fields = {
            k: params.pop(k)
            for k in ("purpose", "case_reference", "source_note", "legal_basis")
            if k in params
        }
        info = RequestInfo(request_id=str(uuid.uuid4()), **info_fields)
        op = OPERATIONS[operation]
        out = operations.run(self.guard, op, params, caller, info, self.ctx)
        return Answer(operations.respond(op, out, params), out.headers, out.record)


def endpoint(data_dir: Path, engine: Engine) -> Endpoint:
    service = Service.open(data_dir, engine=engine)
    guard = Guard(data_dir, service_factory=lambda: service)
    ctx = Context(
        engine=engine,
        s3=S3Images(Settings.from_env(data_dir=data_dir)),
        service_factory=lambda: service,
    )
    return Endpoint(data_dir, service, guard, ctx)


# -- human-rights impact assessments ------------------------------------------------------------

#: A complete assessment form (every field of regard.accountability.assessment.FORM_FIELDS).
FORM: dict[str, Any] = {
    "organisation": "City police, missing persons unit",
    "purpose": "find missing people among photos handed in by their families",
    "legal_basis": "national law on missing persons, art. 12",
    "affected_people": ["missing people", "people photographed with them"],
    "children_affected": True,
    "expected_volume": {"searches_per_month": 40, "gallery_size": 200},
    "risks": ["a false match leads to a wrongful stop", "function creep to other investigations"],
    "mitigations": ["two verifiers confirm every lead", "searches need a case reference"],
    "human_oversight": "two trained verifiers confirm each candidate before any action",
    "complaints": "complaints office, complaints@example.org, answers within 30 days",
    "retention": "probes are not kept; leads 6 months; audit records 6 months",
    "expected_mated_share": 0.5,
}
#: Gates the four face_recognition portraits pass (every face found) and one they fail.
PASSING_GATES = '[[gate]]\nmetric = "failure_to_acquire"\ngrouping = "all"\nmax = 0.25\n'
FAILING_GATES = '[[gate]]\nname = "faceless"\nmetric = "failure_to_acquire"\ngrouping = "all"\nmin = 0.5\n'
ASSESSOR = "asha"

_REPORTS: dict[Path, Path] = {}


def write_form(path: Path, **changes: Any) -> Path:
    """The form as TOML (``.toml``) or JSON (any other suffix), with ``changes`` (None drops a field)."""
    import json
    import tomllib

    form = {k: v for k, v in {**FORM, **changes}.items() if v is not None}
    if path.suffix == ".toml":
        lines = []
        for key, value in form.items():
            if key == "expected_volume":
                continue
            lines.append(f"{key} = {json.dumps(value)}")
        if "expected_volume" in form:
            lines.append("[expected_volume]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in form["expected_volume"].items()]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        assert tomllib.loads(path.read_text(encoding="utf-8")) == form
    else:
        path.write_text(json.dumps(form), encoding="utf-8")
    return path


def write_gates(path: Path, passing: bool = True) -> Path:
    path.write_text(PASSING_GATES if passing else FAILING_GATES, encoding="utf-8")
    return path


def evaluation_report(fr_images: Path) -> Path:
    """A real ``regard evaluate`` report.json on the four face_recognition portraits, made with the
    passing gates (once per test process: it is the same for every test)."""
    import shutil
    import tempfile

    from regard.cli.main import main

    if fr_images in _REPORTS:
        return _REPORTS[fr_images]
    root = Path(tempfile.mkdtemp(prefix="regard-assessment-report-"))
    folder = root / "set"
    folder.mkdir()
    rows = ["path,subject"]
    for name, subject in (("obama", "obama"), ("obama2", "obama"), ("obama3", "obama"), ("biden", "biden")):
        shutil.copy(fr_images / f"{name}.jpg", folder / f"{name}.jpg")
        rows.append(f"{name}.jpg,{subject}")
    (folder / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    gates = write_gates(root / "gates.toml")
    args = ["evaluate", str(folder), "--out", str(root / "out"), "--workers", "1", "--bootstrap", "0"]
    assert main([*args, "--quiet", "--gate", str(gates)]) == 0
    _REPORTS[fr_images] = root / "out" / "report.json"
    return _REPORTS[fr_images]


def scoring_in_force(data_dir: Path | None = None) -> dict[str, str]:
    """The scoring identity a server started with these tests' environment names in its records."""
    from regard.accountability.assessing import scoring_identity

    return scoring_identity(Engine(Settings.from_env(data_dir=data_dir) if data_dir else Settings.from_env()))


def approved_assessment(
    store: Any,
    policies: Any,
    collections: list[str],
    report: Path,
    *,
    profile: str = "identification",
    scoring: dict[str, str] | None = None,
    creator: str = "operator-olga",
) -> str:
    """Create (as ``creator``) and approve (as the assessor ``asha``) an assessment of ``profile``
    covering ``collections`` in ``store`` (an AssessmentStore, its clock the creation's time)
    under ``policies`` (a PolicyStore); its id."""
    import tempfile

    from regard.accountability.assessment import new_record, read_form, read_report

    scoring = scoring or scoring_in_force()
    form_path = write_form(Path(tempfile.mkdtemp(prefix="regard-form-")) / "form.toml")
    form, form_sha = read_form(form_path)
    record = new_record(
        profile=policies.load().profile(profile),
        collections=collections,
        scoring=scoring,
        form=form,
        form_sha256=form_sha,
        reports=[read_report(report, scoring)],
        created_by=creator,
        created_by_key=None,
        now=store.clock(),
    )
    made = store.create(record)
    store.decide(
        made.assessment_id,
        "approve",
        principal=ASSESSOR,
        role="assessor",
        access_key_id="RGKASSESSOR000000001",
        note="form complete, report on the deployer's own photos, gates passed",
    )
    return str(made.assessment_id)


def open_gate(data_dir: Path, collections: list[str], fr_images: Path) -> str:
    """An approved, current assessment of the identification profile for ``collections`` in
    ``data_dir``'s embedded store (what tests of the identification profile need first)."""
    from regard.accountability.assessment import AssessmentStore
    from regard.accountability.policy import PolicyStore

    return approved_assessment(
        AssessmentStore(data_dir), PolicyStore(data_dir), collections, evaluation_report(fr_images)
    )
