"""docs/rekognition-coverage.md stays true against botocore's model and what operations emit."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from regard.api.rekognition import coverage
from regard.api.rekognition.operations import OPERATIONS, Context
from regard.api.rekognition.s3 import S3Images
from regard.api.rekognition.shapes import service_model

if TYPE_CHECKING:
    from regard.face.engine import Engine

DOC = Path(__file__).resolve().parents[2] / "docs" / "rekognition-coverage.md"


def test_document_is_current() -> None:
    assert DOC.read_text() == coverage.render(), "run: python scripts/rekognition_coverage.py"


def test_operations_and_rules_exist_in_the_model() -> None:
    model = service_model()
    assert set(OPERATIONS) <= set(model.operation_names)
    assert len(OPERATIONS) == 25  # 21, and since issue 20 the four stored-video operations
    response_parts: set[str] = set()
    for op in OPERATIONS:
        for path in coverage.fields(model.operation_model(op).output_shape):
            response_parts.update(path.replace("[]", "").split("."))
    for name in list(coverage.NEVER_INFERRED) + list(coverage.NOT_RETURNED):
        assert name in response_parts, f"coverage rule {name} names no field of a supported operation"
    for name in coverage.EXTRA_FIELDS:
        assert name not in response_parts


def emitted(value: Any, prefix: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            path = f"{prefix}.{k}" if prefix else k
            out.add(path)
            out |= emitted(v, path)
    elif isinstance(value, list):
        for item in value:
            out |= emitted(item, prefix + "[]")
    return out


def check_against_doc(operation: str, response: dict[str, Any]) -> set[str]:
    declared = set(coverage.fields(service_model().operation_model(operation).output_shape))
    supported = {p for p in declared if coverage.field_status(p) is None}
    paths = emitted(response)
    for path in paths:
        if path.rsplit(".", 1)[-1] in coverage.EXTRA_FIELDS:
            continue
        assert path in supported, (
            f"{operation} emits {path}, which the coverage document does not list as supported"
        )
    return paths


def test_engine_operations_emit_only_supported_fields(engine: Engine, fr_images: Path) -> None:
    ctx = Context(engine=engine, s3=S3Images(engine.settings))
    obama = (fr_images / "obama.jpg").read_bytes()
    detected = OPERATIONS["DetectFaces"](ctx, {"Image": {"Bytes": obama}, "Attributes": ["ALL"]})
    paths = check_against_doc("DetectFaces", detected)
    face_fields = {
        p
        for p in coverage.fields(service_model().operation_model("DetectFaces").output_shape)
        if p.count(".") == 1 and coverage.field_status(p) is None
    }
    assert face_fields <= paths, "a field documented as supported is missing from DetectFaces ALL"
    compared = OPERATIONS["CompareFaces"](
        ctx,
        {
            "SourceImage": {"Bytes": obama},
            "TargetImage": {"Bytes": (fr_images / "obama2.jpg").read_bytes()},
        },
    )
    paths = check_against_doc("CompareFaces", compared)
    assert "FaceMatches[].Similarity" in paths and "FaceMatches[].EstimatedFalseMatchRate" in paths


def test_the_document_says_where_regard_differs() -> None:
    """Issue 19, item 10: the deliberate differences are in the generated document."""
    text = DOC.read_text()
    assert "Every request field of a supported operation is honoured" not in text
    assert "## Where regard differs" in text
    topics = {topic for topic, _ in coverage.DIFFERENCES}
    for needed in (
        "Policy profiles",
        "Threshold floors",
        "Similarity",
        "Identification gated by assessments and review",
        "IndexFaces stores an image once",
        "QualityFilter and SMALL_BOUNDING_BOX",
        "FaceModelVersion",
    ):
        assert needed in topics and f"- **{needed}**: " in text
