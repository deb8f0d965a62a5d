"""1:N identification: a gallery and probe split, FPIR/FNIR per group, a watchlist test.

Subjects are split with a seed (:func:`split`, by a hash of the seed and each subject's name,
so the split does not move when a run acquires other images): half are *enrolled* (one image each
in the gallery, their other images are mated probes), the other half are not (all their images
are non-mated probes: people who are not on the list). A search returns every gallery entry
whose score (the distance minus the probe's and the entry's half offsets, as in
``regard.scoring.calibrate.Scorer``) is at or below the threshold, so the candidate list can be
as long as the gallery; candidates rank by score.

- FPIR (false positive identification rate): share of non-mated probes with at least one
  candidate.
- FNIR (false negative identification rate): share of mated probes whose mate is not a
  candidate; rank-1 misses additionally count a mate that is a candidate but not the closest.
- The watchlist test (after the ACLU's 2018 test of Rekognition against mugshots) reports how
  many innocent probes got a match, and from which groups, at similarity 80 and at the floor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from regard.evaluation.metrics import clopper_pearson, make_rate
from regard.evaluation.pairs import Grouping

BLOCK = 1024
EXAMPLES = 25


@dataclass(frozen=True)
class Split:
    gallery: np.ndarray  # acquired-image indices, one per enrolled subject
    mated: np.ndarray  # acquired-image indices of probes whose subject is enrolled
    mate_pos: np.ndarray  # position in ``gallery`` of each mated probe's mate
    nonmated: np.ndarray  # acquired-image indices of probes whose subject is not enrolled


#: A subject whose draw is below this (half of all 64-bit draws) is enrolled.
HALF_OF_DRAWS = 1 << 63


def _draw(seed: int, key: str) -> int:
    """A stable pseudo-random number for ``key`` under ``seed``."""
    return int.from_bytes(hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest(), "big")


def split(
    subjects: np.ndarray,
    seed: int,
    *,
    subject_names: Sequence[str] | None = None,
    image_names: Sequence[str] | None = None,
) -> Split:
    """Seeded gallery/probe split of the acquired images by subject.

    Every subject and every image draws a number from a hash of the seed and its name
    (``subject_names`` and ``image_names``, one per image; by default the subject code and the
    position). A subject whose draw falls in the lower half of all draws is enrolled (about half
    of them; with two or more subjects at least one is enrolled and one is not), with its image
    of smallest draw in the gallery. So a person's role depends only on the seed and who they
    are: two runs whose detectors acquired different images (a fallback step, another detector)
    enrol the same people and probe with the same people wherever both acquired them, and their
    watchlist counts compare person by person.
    """
    subj = np.asarray(subjects)
    who = [str(s) for s in subj] if subject_names is None else [str(s) for s in subject_names]
    what = [str(i) for i in range(subj.size)] if image_names is None else [str(n) for n in image_names]
    if len(who) != subj.size or len(what) != subj.size:
        raise ValueError("need one subject name and one image name per image")
    code_of: dict[str, int] = {}
    for code, name in zip(subj.tolist(), who, strict=True):
        if code_of.setdefault(name, int(code)) != int(code):
            raise ValueError(f"subject {name!r} has two codes")
    ranked = sorted(code_of, key=lambda name: (_draw(seed, name), name))
    chosen_names = [name for name in ranked if _draw(seed, name) < HALF_OF_DRAWS]
    if len(ranked) >= 2:  # at least one person on the list and one not
        chosen_names = ranked[: min(max(len(chosen_names), 1), len(ranked) - 1)]
    enrolled = {code_of[name] for name in chosen_names}
    gallery_of: dict[int, int] = {}  # enrolled subject -> its image with the smallest draw
    for idx, code in enumerate(subj.tolist()):
        if int(code) in enrolled:
            best = gallery_of.setdefault(int(code), idx)
            if (_draw(seed, what[idx]), what[idx]) < (_draw(seed, what[best]), what[best]):
                gallery_of[int(code)] = idx
    chosen = set(gallery_of.values())
    mated = [i for i, code in enumerate(subj.tolist()) if int(code) in enrolled and i not in chosen]
    nonmated = [i for i, code in enumerate(subj.tolist()) if int(code) not in enrolled]
    g = np.array(sorted(chosen), dtype=np.int64)
    where = {int(subj[i]): k for k, i in enumerate(g)}
    m = np.array(sorted(mated), dtype=np.int64)
    return Split(
        g,
        m,
        np.array([where[int(subj[i])] for i in m], dtype=np.int64),
        np.array(sorted(nonmated), dtype=np.int64),
    )


def _rate(errors: int, trials: int) -> dict[str, Any]:
    r = make_rate(errors, trials, min_trials=1)
    return r.to_dict()


def evaluate_identification(
    emb: np.ndarray,
    subjects: np.ndarray,
    groupings: Sequence[Grouping],
    thresholds: Mapping[str, float],
    *,
    seed: int,
    names: Sequence[str],
    similarity: Any,
    half_offsets: np.ndarray | None = None,
    subject_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Everything the report says about 1:N search. ``thresholds`` are scores; ``names`` label
    acquired images in examples and key the split (with ``subject_names``: :func:`split`);
    ``similarity`` maps a score to the shipped similarity (or None); ``half_offsets`` has one
    entry per row of ``emb`` (None: scores are raw distances)."""
    sp = split(subjects, seed, subject_names=subject_names, image_names=names)
    emb = np.asarray(emb, dtype=np.float64)
    half = (
        np.zeros(emb.shape[0]) if half_offsets is None else np.asarray(half_offsets, np.float64).reshape(-1)
    )
    if half.shape != (emb.shape[0],):
        raise ValueError(f"need one half offset per template: {half.size} for {emb.shape[0]}")
    gal = emb[sp.gallery]
    gsq = np.einsum("ij,ij->i", gal, gal)
    ghalf = half[sp.gallery]

    def search(probes: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Best score, best gallery position, and the score rows (kept per block)."""
        best_d = np.full(probes.size, np.inf)
        best_k = np.full(probes.size, -1, dtype=np.int64)
        rows: list[np.ndarray] = []
        for s in range(0, probes.size, BLOCK):
            p = emb[probes[s : s + BLOCK]]
            d2 = np.einsum("ij,ij->i", p, p)[:, None] + gsq[None, :] - 2.0 * (p @ gal.T)
            d = np.sqrt(np.maximum(d2, 0.0)) - half[probes[s : s + BLOCK]][:, None] - ghalf[None, :]
            if d.shape[1]:
                best_k[s : s + BLOCK] = np.argmin(d, axis=1)
                best_d[s : s + BLOCK] = d[np.arange(d.shape[0]), best_k[s : s + BLOCK]]
            rows.append(d.astype(np.float32))
        return best_d, best_k, rows

    out: dict[str, Any] = {
        "gallery_size": int(sp.gallery.size),
        "mated_probes": int(sp.mated.size),
        "nonmated_probes": int(sp.nonmated.size),
        "seed": seed,
        "operating_points": {},
    }
    if sp.gallery.size == 0:
        out["note"] = "no gallery: no images were acquired"
        return out
    _, m_best_k, m_rows = search(sp.mated)
    mate_d = (
        np.concatenate(
            [
                r[np.arange(r.shape[0]), sp.mate_pos[s * BLOCK : s * BLOCK + r.shape[0]]]
                for s, r in enumerate(m_rows)
            ]
        )
        if sp.mated.size
        else np.zeros(0)
    )
    n_best_d, n_best_k, n_rows = search(sp.nonmated)
    n_dist = np.concatenate(n_rows) if n_rows else np.zeros((0, sp.gallery.size))

    rank1_hit = (m_best_k == sp.mate_pos) if sp.mated.size else np.zeros(0, dtype=bool)
    out["rank1_identification_rate"] = float(rank1_hit.mean()) if sp.mated.size else None

    for label, tau in thresholds.items():
        point: dict[str, Any] = {"score": tau, "similarity_shipped": similarity(tau)}
        fp = n_best_d <= tau
        miss = mate_d > tau
        miss_rank1 = miss | ~rank1_hit
        point["fpir"] = _rate(int(fp.sum()), int(fp.size))
        point["fnir"] = _rate(int(miss.sum()), int(miss.size)) if sp.mated.size else None
        point["fnir_rank1"] = _rate(int(miss_rank1.sum()), int(miss.size)) if sp.mated.size else None
        cand = n_dist <= tau  # (nonmated, gallery)
        lengths = cand.sum(axis=1)
        point["false_candidate_lists"] = {
            "probes_with_candidates": int((lengths > 0).sum()),
            "candidates_total": int(lengths.sum()),
            "mean_length_when_any": float(lengths[lengths > 0].mean()) if (lengths > 0).any() else 0.0,
            "max_length": int(lengths.max()) if lengths.size else 0,
        }
        by_group: dict[str, Any] = {}
        for g in groupings:
            pcode_n = g.codes[sp.nonmated]
            pcode_m = g.codes[sp.mated]
            per: dict[str, Any] = {}
            for k, name in enumerate(g.names):
                sel_n = pcode_n == k
                sel_m = pcode_m == k
                per[name] = {
                    "fpir": _rate(int(fp[sel_n].sum()), int(sel_n.sum())),
                    "fnir": _rate(int(miss[sel_m].sum()), int(sel_m.sum())) if sp.mated.size else None,
                }
            # Make-up of the false candidate lists: probe group x candidate group.
            pi, gi = np.nonzero(cand)
            n_g = len(g.names)
            mat = np.bincount(pcode_n[pi] * n_g + g.codes[sp.gallery][gi], minlength=n_g * n_g).reshape(
                n_g, n_g
            )
            by_group[g.spec] = {
                "groups": per,
                "candidate_makeup": {
                    "probe_groups": g.names,
                    "candidate_groups": g.names,
                    "counts": mat.tolist(),
                },
            }
        point["by_group"] = by_group
        point["watchlist"] = _watchlist(fp, n_best_d, n_best_k, sp, groupings, names, similarity, half)
        out["operating_points"][label] = point
    return out


def _watchlist(
    fp: np.ndarray,
    best_d: np.ndarray,
    best_k: np.ndarray,
    sp: Split,
    groupings: Sequence[Grouping],
    names: Sequence[str],
    similarity: Any,
    half: np.ndarray,
) -> dict[str, Any]:
    matched = np.nonzero(fp)[0]
    order = matched[np.argsort(best_d[matched], kind="stable")]
    examples = [
        {
            "probe": names[int(sp.nonmated[i])],
            "matched": names[int(sp.gallery[best_k[i]])],
            "score": float(best_d[i]),
            "distance": float(best_d[i] + half[sp.nonmated[i]] + half[sp.gallery[best_k[i]]]),
            "similarity_shipped": similarity(float(best_d[i])),
            **{g.spec: g.names[int(g.codes[sp.nonmated[i]])] for g in groupings},
        }
        for i in order[:EXAMPLES]
    ]
    who: dict[str, dict[str, Any]] = {}
    for g in groupings:
        codes = g.codes[sp.nonmated]
        who[g.spec] = {
            name: {
                "innocent_probes": int((codes == k).sum()),
                "matched": int(fp[codes == k].sum()),
                "ci95": list(clopper_pearson(int(fp[codes == k].sum()), int((codes == k).sum()))),
            }
            for k, name in enumerate(g.names)
        }
    return {
        "innocent_probes": int(fp.size),
        "matched": int(fp.sum()),
        "by_group": who,
        "closest_examples": examples,
    }
