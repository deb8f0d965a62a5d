"""CompareFaces: the largest face of one image against every face of another (no collection involved)."""

from __future__ import annotations

from dataclasses import dataclass

from regard.errors import InvalidParameter
from regard.face.engine import Engine
from regard.face.imaging import image_size
from regard.scoring.calibrate import Scorer
from regard.service.images import NO_FACES, FaceDetail, ImageInput, decode, probe
from regard.service.quality import quality_reasons
from regard.service.rules import DEFAULT_SIMILARITY_THRESHOLD, check_range


@dataclass(frozen=True, slots=True)
class CompareFacesMatch:
    """A FaceMatches entry of CompareFaces: Similarity, the target's Face, plus the estimated FMR."""

    similarity: float
    fmr: float
    face: FaceDetail


@dataclass(frozen=True, slots=True)
class CompareFacesResult:
    """CompareFaces: SourceImageFace, FaceMatches (most similar first), UnmatchedFaces."""

    source_image_face: FaceDetail
    face_matches: list[CompareFacesMatch]
    unmatched_faces: list[FaceDetail]


def compare_faces(
    engine: Engine,
    source: ImageInput,
    target: ImageInput,
    *,
    similarity_threshold: float | None = None,
    quality_filter: str = "NONE",
    scorer: Scorer | None = None,
) -> CompareFacesResult:
    """CompareFaces: the source's largest face (InvalidParameter if none passes ``quality_filter``)
    against each target face that passes it; those at SimilarityThreshold (default 80) or more match.
    InvalidParameter too when the target holds no face at all, as Rekognition answers; target faces
    that fall short of ``quality_filter`` are left out of both lists.

    ``scorer`` overrides the engine's scoring (as :class:`regard.service.Service` may).
    """
    threshold = DEFAULT_SIMILARITY_THRESHOLD if similarity_threshold is None else float(similarity_threshold)
    check_range(threshold, 0, 100, "SimilarityThreshold")
    source_rgb = decode(engine, source)
    target_rgb = decode(engine, target)
    probed = probe(engine, source_rgb, quality_filter)
    compare = engine.compare if scorer is None else scorer.compare
    width, height = image_size(target_rgb)
    matches: list[CompareFacesMatch] = []
    unmatched: list[FaceDetail] = []
    target_faces = engine.faces(target_rgb)
    if not target_faces:
        raise InvalidParameter(NO_FACES)
    for face in target_faces:
        if quality_reasons(face.analysis, quality_filter, width, height):
            continue
        result = compare(probed.embedding, face.embedding)
        detail = FaceDetail.of(face.analysis, width, height)
        if result.similarity >= threshold:
            matches.append(CompareFacesMatch(result.similarity, result.fmr, detail))
        else:
            unmatched.append(detail)
    matches.sort(key=lambda m: -m.similarity)
    return CompareFacesResult(probed.detail, matches, unmatched)
