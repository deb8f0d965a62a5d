"""1:N search under the normalized score equals an exhaustive search under it, index on or off.

The index ranks faces by raw distance, but a match is decided by the normalized score
``distance - half(probe) - half(face)``: faces whose offsets push them across the threshold (in
either direction) must be found or dropped exactly as a full scan of the normalized scores would.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from regard.face.engine import Engine
from regard.scoring.calibrate import CalibrationTable, Scorer
from regard.scoring.normalize import ScoreNormalizer
from regard.service import Service
from regard.store.base import Store
from regard.store.sqlite import SqliteStore
from store.conftest import fixed_table
from store.synthetic import face_like, new_faces

N_PEOPLE = 150
PER_PERSON = 3


def synthetic_scorer(templates: np.ndarray) -> Scorer:
    """Six clusters with offsets from -0.3 to +0.3: shifts of a pair up to 0.3 either way, as large
    as the gap between genuine (about 0.4) and impostor (about 0.9) distances of these templates."""
    rng = np.random.default_rng(5)
    centroids = templates[rng.choice(len(templates), 6, replace=False)]
    norm = ScoreNormalizer(
        version="test",
        model="synthetic",
        centroids=centroids.astype(np.float32),
        offsets=np.array([-0.3, -0.15, 0.0, 0.1, 0.2, 0.3]),
    )
    data: dict[str, Any] = {
        "version": "test",
        "model": "synthetic",
        "dataset": "synthetic",
        "normalizer": norm.sha256,
        "rows": [
            {"distance": float(r), "fmr": f, "fnmr": n}
            for r, f, n in zip(fixed_table().distances, fixed_table().fmr, fixed_table().fnmr, strict=True)
        ],
        "tail": {"slope": 10.0, "distance": 0.5, "log10_fmr": -4.0},
        "counts": {"genuine": 1, "impostor": 1},
    }
    return Scorer(CalibrationTable.from_dict(data), norm)


def oracle(
    scorer: Scorer, gallery: np.ndarray, ids: list[str], probe: np.ndarray, sim: float, k: int
) -> list[str]:
    """Exhaustive search under the normalized score: every face, scored, thresholded, sorted."""
    scores = scorer.scores(probe, gallery)
    tau = scorer.score_for_similarity(sim) + 1e-9
    hits = sorted((float(s), i) for s, i in zip(scores, ids, strict=True) if s <= tau)
    return [i for _, i in hits[:k]]


def raw_matches(
    scorer: Scorer, gallery: np.ndarray, ids: list[str], probe: np.ndarray, sim: float
) -> set[str]:
    d = np.linalg.norm(gallery - probe[None, :], axis=1)
    tau = scorer.score_for_similarity(sim)
    return {i for dist, i in zip(d, ids, strict=True) if dist <= tau}


def open_store(backend: str, tmp_path: Path, ann_min_faces: int, request: pytest.FixtureRequest) -> Store:
    if backend == "postgres":
        from regard.store.postgres import PostgresStore

        return PostgresStore(request.getfixturevalue("pg_url"), ann_min_faces=ann_min_faces)
    return SqliteStore(tmp_path / "data", ann_min_faces=ann_min_faces)


@pytest.mark.parametrize("ann_min_faces", [10**9, 50], ids=["exact", "ann"])
def test_search_equals_exhaustive_normalized_search(
    backend: str, tmp_path: Path, engine: Engine, ann_min_faces: int, request: pytest.FixtureRequest
) -> None:
    templates = face_like(N_PEOPLE, PER_PERSON + 1, seed=21)
    stored = np.concatenate([templates[i * 4 : i * 4 + PER_PERSON] for i in range(N_PEOPLE)])
    probes = templates[3::4][:40]  # each person's fourth capture, never stored
    scorer = synthetic_scorer(stored)
    store = open_store(backend, tmp_path, ann_min_faces, request)
    service = Service(store, engine, scorer=scorer)
    try:
        service.create_collection("c")
        records = service.add_templates("c", new_faces(stored))
        ids = [r.face_id for r in records]
        gallery = np.stack([r.embedding for r in records])
        pushed_in = pushed_out = 0
        for sim, k in ((80.0, 5), (60.0, 10), (40.0, 3), (20.0, 50)):
            for probe in probes:
                got = service.search_faces_by_vector("c", probe, max_faces=k, face_match_threshold=sim)
                want = oracle(scorer, gallery, ids, probe, sim, k)
                assert [m.face.face_id for m in got] == want
                for m in got:
                    assert m.similarity == pytest.approx(scorer.similarity(m.score))
                    assert m.score == pytest.approx(
                        m.distance - scorer.half_offset(probe) - scorer.half_offset(m.face.embedding)
                    )
                everyone = set(oracle(scorer, gallery, ids, probe, sim, len(ids)))
                raw = raw_matches(scorer, gallery, ids, probe, sim)
                pushed_in += len(everyone - raw)
                pushed_out += len(raw - everyone)
        # SearchFaces by FaceId: the stored face is the probe and is left out of its own results.
        for i in range(0, len(records), 37):
            got_by_id = service.search_faces("c", ids[i], max_faces=10, face_match_threshold=40.0)
            want = [f for f in oracle(scorer, gallery, ids, gallery[i], 40.0, 11) if f != ids[i]][:10]
            assert [m.face.face_id for m in got_by_id.face_matches] == want
        # The offsets mattered: faces crossed the threshold both ways, and the search followed them.
        assert pushed_in > 0 and pushed_out > 0
    finally:
        store.close()


def test_user_search_ranks_users_by_their_best_normalized_score(
    backend: str, tmp_path: Path, engine: Engine, request: pytest.FixtureRequest
) -> None:
    templates = face_like(40, 3, seed=22)
    scorer = synthetic_scorer(templates)
    store = open_store(backend, tmp_path, 10**9, request)
    service = Service(store, engine, scorer=scorer)
    try:
        service.create_collection("c")
        records = service.add_templates("c", new_faces(templates))
        owner = [f"u{i // 3}" for i in range(len(records))]
        for u in range(40):
            service.create_user("c", f"u{u}")
            faces = [r.face_id for r in records[u * 3 : u * 3 + 3]]
            assert service.associate_faces("c", f"u{u}", faces, user_match_threshold=0).associated_faces
        gallery = np.stack([r.embedding for r in records])
        for probe_index in (0, 7, 50, 100):
            probe = records[probe_index]
            got = service.search_users("c", face_id=probe.face_id, user_match_threshold=20.0)
            scores = scorer.scores(probe.embedding, gallery)
            tau = scorer.score_for_similarity(20.0) + 1e-9
            best: dict[str, float] = {}
            for i, (s, u) in enumerate(zip(scores, owner, strict=True)):
                if s <= tau and i != probe_index:
                    best[u] = min(best.get(u, np.inf), float(s))
            want = [u for u, _ in sorted(best.items(), key=lambda kv: (kv[1], kv[0]))]
            assert want, "the probe's own user matches through its other faces"
            assert [m.user.user_id for m in got.user_matches] == want
            for m in got.user_matches:
                assert m.similarity == pytest.approx(scorer.similarity(best[m.user.user_id]))
    finally:
        store.close()
