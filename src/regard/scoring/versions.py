"""FaceModelVersion: a number a client can compare, standing for the model and the scoring behind it.

Rekognition answers ``FaceModelVersion`` as a numeric string ("6.0", "7.0") and clients compare it
as a number. In regard what a similarity means depends on the embedding model (and how templates
are made, e.g. flip-mean) *and* on the scoring parameters (fair score normalizer, calibration
table), so the version stands for that whole identity: :data:`FACE_MODEL_VERSIONS` maps each
identity regard has shipped to its number, and a change of model or scoring without a new entry
here fails ``tests/scoring/test_versions.py``.

regard's numbers continue from Rekognition's latest face model (7.0), so code that requires a
recent model (users need 6.0 or later) keeps working; they name regard's own models, not
Amazon's. An identity regard never shipped (a ``REGARD_SCORING_DIR`` of your own, flip-mean
templates turned off) gets ``0.<n>``, a number below every shipped version derived from a hash of
the identity: it still changes whenever the identity does. The full identity is in
DescribeCollection's ``RegardFaceModel``, in ``regard models`` and in each audit record's ``scoring``.
"""

from __future__ import annotations

import hashlib

from regard.scoring.calibrate import Scorer
from regard.types import ModelIdentity


def identity(model: ModelIdentity, scorer: Scorer) -> str:
    """The full identity a FaceModelVersion stands for: model key, template preprocessing, scoring key."""
    return f"{model.key}/{model.preprocessing}+scoring-{scorer.key}"


#: identity() of each shipped model and scoring -> its FaceModelVersion. Add an entry (a higher
#: number) whenever the model, the template preprocessing, the normalizer or the table changes.
FACE_MODEL_VERSIONS: dict[str, str] = {
    "dlib_face_recognition_resnet_model_v1:1:55533b28a95800a5/"
    "dlib-shape5-similarity-chip150-pad0.25+flip-mean+scoring-f04062bda60b": "7.0",
    # The same model and templates; the normalizer re-made: 200 clusters, offsets limited (offset_quantile).
    "dlib_face_recognition_resnet_model_v1:1:55533b28a95800a5/"
    "dlib-shape5-similarity-chip150-pad0.25+flip-mean+scoring-e76c9324f862": "7.1",
    # The same model and templates; the offsets averaged over 5 k-means clusterings, full strength.
    "dlib_face_recognition_resnet_model_v1:1:55533b28a95800a5/"
    "dlib-shape5-similarity-chip150-pad0.25+flip-mean+scoring-efab06076ea8": "7.2",
}


def face_model_version(model: ModelIdentity, scorer: Scorer) -> str:
    """The numeric FaceModelVersion of ``model`` scored by ``scorer`` (see the module's docstring)."""
    ident = identity(model, scorer)
    known = FACE_MODEL_VERSIONS.get(ident)
    if known is not None:
        return known
    return f"0.{int(hashlib.sha256(ident.encode()).hexdigest()[:12], 16)}"


def describe(model: ModelIdentity, scorer: Scorer) -> dict[str, str]:
    """What DescribeCollection's ``RegardFaceModel`` and ``regard models`` show for a version."""
    return {
        "FaceModelVersion": face_model_version(model, scorer),
        "Model": model.key,
        "ModelWeightsSha256": model.weights_sha256,
        "Preprocessing": model.preprocessing,
        **{k.title().replace("_", ""): v for k, v in scorer.identity().items()},
    }
