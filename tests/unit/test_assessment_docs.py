"""The assessment form as documented: the example form validates, the example gates load, and
docs/accountability.md's form table names exactly the form's fields, their types and which are
optional."""

from __future__ import annotations

from pathlib import Path

import pytest

from regard.accountability.assessment import FORM_FIELDS, read_form, validate_form
from regard.errors import InvalidParameter
from regard.evaluation.gates import load_gates

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"


def test_the_example_form_is_valid_and_complete() -> None:
    form, digest = read_form(EXAMPLES / "assessment-form.toml")
    assert set(form) == set(FORM_FIELDS)
    assert len(digest) == 64


def test_the_example_gates_load() -> None:
    gates = load_gates(EXAMPLES / "assessment-gates.toml")
    assert {g["metric"] for g in gates} >= {"fmr_max_over_geomean", "fpir"}


def test_the_documented_form_table_is_the_schema() -> None:
    text = (ROOT / "docs" / "accountability.md").read_text(encoding="utf-8")
    section = text.split("### The record", 1)[1].split("A complete example", 1)[0]
    rows = [r for r in section.splitlines() if r.strip().startswith("| `")]
    documented = {}
    for row in rows:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        documented[cells[0].strip("`")] = cells[1]
    assert set(documented) == set(FORM_FIELDS)
    kinds = {"text": "text", "list": "list of text", "bool": "true/false", "volume": "table"}
    for name, (kind, required, _) in FORM_FIELDS.items():
        if kind in kinds:
            assert documented[name] == kinds[kind], name
        assert ("optional" in documented[name]) == (not required), name


def test_every_problem_of_a_form_is_named_at_once() -> None:
    form = {
        "organisation": "",
        "purpose": "x",
        "affected_people": [],
        "children_affected": "no",
        "expected_volume": {"searches_per_month": -1, "gallery_size": 10},
        "expected_mated_share": 1.5,
        "colour": "blue",
    }
    with pytest.raises(InvalidParameter) as err:
        validate_form(form)
    message = str(err.value.message)
    for name in (
        "unknown fields colour",
        "organisation must be",
        "legal_basis is missing",
        "affected_people must be",
        "children_affected must be true or false",
        "expected_volume must be",
        "risks is missing",
        "expected_mated_share must be",
    ):
        assert name in message, name
    assert "purpose must" not in message and "purpose is missing" not in message  # valid: not named
