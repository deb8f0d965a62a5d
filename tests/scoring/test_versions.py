"""Issue 19, item 7: FaceModelVersion is a numeric string that changes with the model or the scoring."""

from __future__ import annotations

from dataclasses import replace

from regard.config import Settings
from regard.face.engine import Engine
from regard.scoring.calibrate import default_scorer
from regard.scoring.versions import FACE_MODEL_VERSIONS, describe, face_model_version, identity


def test_the_shipped_model_and_scoring_have_a_registered_version() -> None:
    """Fails when the packaged model, its preprocessing, the normalizer or the calibration table
    change without a new entry in FACE_MODEL_VERSIONS."""
    model = Engine(Settings()).model_identity
    scorer = default_scorer()
    assert identity(model, scorer) in FACE_MODEL_VERSIONS, identity(model, scorer)
    version = face_model_version(model, scorer)
    assert float(version) >= 7.0 and version == FACE_MODEL_VERSIONS[identity(model, scorer)]


def test_versions_are_numbers_and_each_names_one_identity() -> None:
    versions = list(FACE_MODEL_VERSIONS.values())
    assert len(set(versions)) == len(versions)
    assert all(float(v) >= 7.0 for v in versions)


def test_an_unshipped_identity_gets_a_lower_number_that_follows_it() -> None:
    model = Engine(Settings()).model_identity
    scorer = default_scorer()
    unflipped = Engine(Settings(embed_flip=False)).model_identity
    other = face_model_version(unflipped, scorer)
    assert float(other) < 1.0 and other != face_model_version(model, scorer)
    assert other == face_model_version(unflipped, scorer)
    renamed = replace(model, weights_sha256="0" * 64)
    assert face_model_version(renamed, scorer) not in (other, face_model_version(model, scorer))
    full = describe(model, scorer)
    assert full["Model"] == model.key and full["Scoring"] == scorer.key
    assert full["CalibrationSha256"] == scorer.table.sha256
