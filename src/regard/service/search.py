"""1:N search under the normalized score: the faces, and the users, nearest a template.

Shared by face search (SearchFaces, SearchFacesByImage) and user search (SearchUsers,
SearchUsersByImage); the index ranks by raw distance, these functions rank by the score a
similarity is read from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from regard.errors import ResourceNotFound
from regard.scoring.calibrate import Scorer
from regard.service.rules import DEFAULT_FACE_MATCH_THRESHOLD, MAX_SEARCH_FACES, check_search_params
from regard.store.base import Collection, FaceRecord, Neighbor, Store, User
from regard.types import Embeddings


@dataclass(frozen=True, slots=True)
class FaceMatch:
    """A FaceMatches entry: Similarity (0-100), the Face, plus regard's estimated FMR and distance."""

    similarity: float
    fmr: float
    distance: float  # Euclidean distance between the templates
    face: FaceRecord
    score: float = 0.0  # the distance after fair score normalization (what similarity is read from)


@dataclass(frozen=True, slots=True)
class UserMatch:
    """A UserMatches entry: Similarity and the User (UserId, UserStatus), plus the estimated FMR."""

    similarity: float
    fmr: float
    user: User


def match_faces(
    store: Store,
    scorer: Scorer,
    c: Collection,
    probe: Embeddings,
    max_faces: int | None,
    threshold: float | None,
    exclude: set[str] | None = None,
) -> list[FaceMatch]:
    """Up to MaxFaces (default 80) faces of ``c`` at FaceMatchThreshold (default 80) or more, best first."""
    check_search_params(max_faces, threshold)
    limit = 80 if max_faces is None else max_faces
    sim_min = DEFAULT_FACE_MATCH_THRESHOLD if threshold is None else threshold
    hits = scored_neighbors(store, scorer, c, probe, limit, sim_min, exclude or set())
    out: list[FaceMatch] = []
    for score, h in hits:
        sim = scorer.similarity(score)
        if sim < sim_min:
            continue
        out.append(
            FaceMatch(similarity=sim, fmr=scorer.fmr_at(score), distance=h.distance, face=h.face, score=score)
        )
    return out[:limit]


def scored_neighbors(
    store: Store,
    scorer: Scorer,
    c: Collection,
    probe: Embeddings,
    limit: int,
    similarity: float,
    exclude: set[str],
) -> list[tuple[float, Neighbor]]:
    """The ``limit`` faces with the lowest normalized score at or under ``similarity``'s, best first.

    The index ranks by raw distance; a face's score is its distance minus the probe's and its
    own half offset. Any face whose score passes has a distance at most ``threshold + slack``
    (slack: the probe's half offset plus the largest one a face can have), so the search asks
    for faces within that radius, and for more of them until every face it did not fetch
    (all farther than the last fetched) provably scores worse than the ``limit``-th it kept.
    The result is what an exhaustive search under the normalized score returns (up to the
    index's own approximation).
    """
    threshold = math.inf if similarity <= 0 else scorer.score_for_similarity(similarity) + 1e-9
    probe_half = scorer.half_offset(probe)
    slack = probe_half + scorer.max_half_offset
    total = max(1, c.face_count)
    k = min(total, limit + len(exclude) + 8)
    while True:
        hits = store.nearest(c.collection_id, probe, k, threshold + slack)
        kept = [h for h in hits if h.face.face_id not in exclude]
        halves = scorer.half_offsets(np.stack([h.face.embedding for h in kept])) if kept else np.zeros(0)
        scores = [(h.distance - probe_half - float(half), h) for h, half in zip(kept, halves, strict=True)]
        scored = sorted((x for x in scores if x[0] <= threshold), key=lambda x: (x[0], x[1].face.face_id))
        if len(hits) < k or k >= total:
            break  # every face within the radius was fetched
        unseen_best = max(h.distance for h in hits) - slack
        if len(scored) >= limit and scored[limit - 1][0] < unseen_best:
            break  # nothing farther can beat (or tie with) the ones kept
        k = min(total, k * 4)
    return scored[:limit]


def match_users(
    store: Store,
    scorer: Scorer,
    c: Collection,
    probes: Sequence[Embeddings],
    threshold: float,
    limit: int,
    exclude_user: str | None,
    exclude_face: str | None = None,
) -> list[UserMatch]:
    """Users of ``c`` whose best face scores ``threshold`` or more against any probe, best first."""
    k = min(MAX_SEARCH_FACES, max(c.face_count, 1))
    best: dict[str, float] = {}
    for p in probes:
        for score, h in scored_neighbors(
            store, scorer, c, p, k, threshold, {exclude_face} if exclude_face else set()
        ):
            uid = h.face.user_id
            if uid is None or uid == exclude_user:
                continue
            if uid not in best or score < best[uid]:
                best[uid] = score
    ranked = sorted(best.items(), key=lambda kv: (kv[1], kv[0]))
    out: list[UserMatch] = []
    for uid, score in ranked:
        sim = scorer.similarity(score)
        if sim < threshold:
            continue
        try:
            user = store.get_user(c.collection_id, uid)
        except ResourceNotFound:
            continue  # deleted meanwhile
        out.append(UserMatch(similarity=sim, fmr=scorer.fmr_at(score), user=user))
        if len(out) >= limit:
            break
    return out
