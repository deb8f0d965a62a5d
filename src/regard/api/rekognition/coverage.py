"""What regard serves of Rekognition's API, field by field, derived from botocore's model.

``docs/rekognition-coverage.md`` is generated from this module by
``scripts/rekognition_coverage.py``; a test regenerates it and compares, so the
document stays true when botocore's model or regard's operations change.
"""

from __future__ import annotations

from collections.abc import Iterator

from regard.api.rekognition.operations import OPERATIONS
from regard.api.rekognition.shapes import API_VERSION, service_model
from regard.scoring.versions import FACE_MODEL_VERSIONS

#: The newest FaceModelVersion regard ships (what the shipped model and scoring report).
SHIPPED_VERSION = max(FACE_MODEL_VERSIONS.values(), key=float)

#: Face attributes regard never infers, by policy: no age, gender, emotion or appearance inference.
NEVER_INFERRED = {
    "AgeRange": "age is never inferred",
    "Gender": "gender is never inferred",
    "Emotions": "emotions are never inferred",
    "Smile": "expression is never inferred",
    "Beard": "appearance attributes are never inferred",
    "Mustache": "appearance attributes are never inferred",
    "Eyeglasses": "appearance attributes are never inferred",
    "Sunglasses": "appearance attributes are never inferred",
    "FaceOccluded": "no occlusion model is packaged",
    "EyeDirection": "no gaze model is packaged",
}
#: Response members regard does not fill, with the reason.
NOT_RETURNED = {
    "OrientationCorrection": "images are rotated upright from EXIF before analysis; the field is deprecated",
    "SourceImageOrientationCorrection": "images are rotated upright from EXIF; the field is deprecated",
    "TargetImageOrientationCorrection": "images are rotated upright from EXIF; the field is deprecated",
    "ColorRange": "the video's colour range is not read (frames are converted to RGB for detection)",
}
#: Non-standard response members regard adds (botocore and the AWS SDKs ignore unknown members).
EXTRA_FIELDS = {
    "EstimatedFalseMatchRate": "next to each Similarity: the calibrated false-match rate it stands for",
    "RegardFaceModel": "in DescribeCollection: what FaceModelVersion stands for (model, template "
    "preprocessing, score normalizer and calibration table, with their hashes)",
    "RegardLeadId": "on each match of a search under two-person review: the lead a verifier confirms",
    "RegardReviewStatus": "on each such match: PENDING until two verifiers have confirmed it",
}

#: Where regard deliberately answers otherwise than Rekognition, or decides what Rekognition leaves
#: undocumented: (topic, what regard does). Rendered into the document's "Where regard differs".
DIFFERENCES: list[tuple[str, str]] = [
    (
        "Policy profiles",
        "every access key carries a policy profile (`regard keys create --profile`): `verification` "
        "(the default: DetectFaces, CompareFaces and collection reads), `identification` (1:N search "
        "and enrolment, with a purpose and a case reference in `x-regard-purpose` / "
        "`x-regard-case-reference` and the images' provenance in `x-regard-source` / "
        "`x-regard-legal-basis`), `admin` (everything, for setup and tests) and `assessment`. An "
        "operation outside the key's profile answers `AccessDeniedException`, and the message ends "
        "with the profile or `regard keys create ...` that would allow it.",
    ),
    (
        "Threshold floors",
        "each profile sets the highest false-match rate a threshold may stand for (`max_fmr`, 1e-4 "
        "for verification and identification, so SimilarityThreshold, FaceMatchThreshold and "
        "UserMatchThreshold below 80 are refused) and, for 1:N, a false positive identification rate "
        "per search (`max_fpir`, 1e-3) that raises the floor as the collection grows. A threshold "
        "under the floor answers `AccessDeniedException` naming the least allowed value (or, with "
        "`on_low_threshold = raise`, is raised to it; the response's `x-regard-effective-threshold` "
        "says which threshold was applied). See docs/migrating.md.",
    ),
    (
        "Similarity",
        "calibrated, not Amazon's scale: similarity = -20 log10(estimated false-match rate) on "
        "regard's fair-score-normalized scores, so 80 means an FMR of 1e-4 and 99 about 1.1e-5 "
        "(docs/calibration.md); the same threshold does not admit the same pairs as in Rekognition. "
        "docs/migrating.md has a table of what 70-99 mean here.",
    ),
    (
        "Identification gated by assessments and review",
        "under the `identification` profile a 1:N search needs an approved human-rights impact "
        "assessment covering the collection (`regard assess`; otherwise `AccessDeniedException`), "
        "and each match is a lead (`RegardLeadId`, `RegardReviewStatus`) until two verifiers confirm it.",
    ),
    (
        "IndexFaces stores an image once",
        "indexing the same image bytes (sha256) with the same ExternalImageId into a collection that "
        "still holds faces of it stores nothing and returns those faces' records, same FaceIds "
        "(Rekognition documents that it does not save duplicate face metadata without saying how it "
        "tells). Without an ExternalImageId every call stores; another ExternalImageId, another "
        "collection or other bytes (even of the same picture) store new faces. UnindexedFaces is "
        "computed for the request as usual.",
    ),
    (
        "MaxFaces",
        "IndexFaces takes any MaxFaces of 1 or more and stores at most 100 faces of an image, the "
        "largest; the others are reported in UnindexedFaces with EXCEEDS_MAX_FACES.",
    ),
    (
        "QualityFilter and SMALL_BOUNDING_BOX",
        "the levels are regard's measured bars (`regard.service.QUALITY_BARS`; AUTO is LOW). A face's "
        "box is judged relative to the image, after Rekognition's documented detection rule (40x40 "
        "pixels in a 1920x1080 image, proportionally more in larger images): the bar's pixel side "
        "(LOW 20, MEDIUM 40, HIGH 64) holds up to an image whose shorter side is 1080 px and grows in "
        "proportion beyond it; a face under it is SMALL_BOUNDING_BOX.",
    ),
    (
        "No face to search by",
        "CompareFaces answers `InvalidParameterException` when the source or the target holds no face "
        "(target faces that fail QualityFilter are left out of both lists). SearchFacesByImage "
        "answers `InvalidParameterException`; SearchUsersByImage answers 200 with no UserMatches and "
        "no SearchedFace, reporting a largest face that failed QualityFilter in UnsearchedFaces.",
    ),
    (
        "FaceModelVersion",
        f"a numeric string (`{SHIPPED_VERSION}` for the shipped model and scoring) that changes whenever the "
        "embedding model, its template preprocessing, the score normalizer or the calibration table "
        "change (`regard.scoring.versions`); regard's numbers continue from Rekognition's latest but "
        "name regard's models. A scoring of your own (`REGARD_SCORING_DIR`) reads `0.<n>`. The full "
        "identity is in DescribeCollection's `RegardFaceModel`, `regard models` and each audit "
        "record's `scoring`.",
    ),
    (
        "Images",
        "Bytes up to 5 MB (`REGARD_MAX_IMAGE_BYTES`), S3Object up to 15 MB "
        "(`REGARD_MAX_S3_IMAGE_BYTES`), read from the S3-compatible endpoint the operator configured; "
        "JPEG and PNG as in Rekognition, and WebP, BMP, TIFF, GIF and PGM besides.",
    ),
    (
        "Stored video",
        "StartFaceDetection and StartFaceSearch read Video.S3Object from the configured S3 endpoint "
        "(up to `REGARD_VIDEO_MAX_BYTES`, 10 GB, and `REGARD_VIDEO_MAX_SECONDS`, 6 hours) and run as "
        "jobs in the server's own worker pool; poll GetFaceDetection / GetFaceSearch. A request with "
        "NotificationChannel is refused with `InvalidParameterException` (regard sends no "
        "notifications). A corrupt or unsupported video is not refused: its job ends FAILED with a "
        "StatusMessage. StartFaceSearch is a 1:N identification (profile, purpose, case reference, "
        "threshold floor and assessment gate as SearchFacesByImage); its matches become leads when the "
        "job ends. A job's results are readable by the key that started it and by admin keys. "
        'Real-time (streaming) video is not offered. See docs/http-api.md, "Stored video".',
    ),
    (
        "Errors",
        "each error is sent with the status class Rekognition's model gives it: ThrottlingException "
        "(a server fault in the model) as HTTP 503, InternalServerError as 500, client errors as 4xx "
        "(`tests/api/test_api_error_status.py`).",
    ),
]


def fields(shape: object, prefix: str = "", depth: int = 0) -> Iterator[str]:
    """Dotted member paths of a shape (``[]`` marks list elements), depth-first, model order."""
    if depth > 6 or shape is None:
        return
    kind = getattr(shape, "type_name", "")
    if kind == "structure":
        for name, member in shape.members.items():  # type: ignore[attr-defined]
            path = f"{prefix}.{name}" if prefix else name
            yield path
            yield from fields(member, path, depth + 1)
    elif kind == "list":
        yield from fields(shape.member, prefix + "[]", depth + 1)  # type: ignore[attr-defined]
    elif kind == "map":
        return


def field_status(path: str) -> str | None:
    """``None`` when regard supports the field at ``path``, else why it does not."""
    for part in path.replace("[]", "").split("."):
        if part in NEVER_INFERRED:
            return NEVER_INFERRED[part]
        if part in NOT_RETURNED:
            return NOT_RETURNED[part]
    return None


def supported_operations() -> list[str]:
    return sorted(OPERATIONS)


def render() -> str:
    """The Markdown of docs/rekognition-coverage.md."""
    model = service_model()
    ops = set(OPERATIONS)
    lines = [
        "# Rekognition API coverage",
        "",
        "Generated by `scripts/rekognition_coverage.py` from botocore's model of Rekognition "
        f"({API_VERSION}) and regard's operation table; `tests/api/test_api_coverage.py` fails when "
        "this file is stale.",
        "",
        f"regard serves {len(ops)} of the {len(model.operation_names)} operations. Every other operation "
        "answers `UnsupportedOperationException` with a message naming it. Requests are validated against "
        "the model (required members, types, lengths, ranges, patterns, enums) before an operation runs.",
        "",
        "Every request field of a supported operation is accepted and validated; where regard answers "
        "otherwise than Rekognition, on purpose, is listed under "
        "[Where regard differs](#where-regard-differs). "
        "`Attributes`/`DetectionAttributes` "
        "values that name a field regard never fills (`AGE_RANGE`, `GENDER`, `EMOTIONS`, ...) are accepted "
        "and add nothing; `DEFAULT` gives BoundingBox, Confidence, Pose, Quality and five Landmarks, `ALL` "
        "adds all thirty Landmarks, EyesOpen and MouthOpen. `QualityFilter` levels are regard's own "
        "measured bars (`regard.service.QUALITY_BARS`); `AUTO` is `LOW`. `Similarity` is calibrated: "
        "similarity = -20 log10(estimated false-match rate), so 80 means an FMR of 1e-4.",
        "",
        "Fields regard never fills:",
        "",
    ]
    for name, why in NEVER_INFERRED.items():
        lines.append(f"- `{name}`: {why}.")
    for name, why in NOT_RETURNED.items():
        lines.append(f"- `{name}`: {why}.")
    lines += ["", "Fields regard adds (ignored by botocore and the AWS SDKs, visible in the raw JSON):", ""]
    for name, why in EXTRA_FIELDS.items():
        lines.append(f"- `{name}`: {why}.")
    lines += ["", "## Where regard differs", ""]
    for topic, what in DIFFERENCES:
        lines.append(f"- **{topic}**: {what}")
    lines += ["", "## Operations", "", "| Operation | Supported |", "| --- | --- |"]
    for op in sorted(model.operation_names):
        lines.append(f"| {op} | {'yes' if op in ops else 'no'} |")
    for op in sorted(ops):
        om = model.operation_model(op)
        lines += ["", f"## {op}", ""]
        for title, shape in (("Request", om.input_shape), ("Response", om.output_shape)):
            lines += [f"{title} fields:", "", "| Field | Supported |", "| --- | --- |"]
            paths = list(fields(shape))
            if not paths:
                lines.append("| (none) | yes |")
            for path in paths:
                missing = field_status(path) if title == "Response" else None
                lines.append(f"| `{path}` | {'yes' if missing is None else 'no: ' + missing} |")
            lines.append("")
        if lines[-1] == "":
            lines.pop()
    return "\n".join(lines) + "\n"
