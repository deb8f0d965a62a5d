"""The bias audit: from templates and labels to the report's numbers (no plotting, no I/O).

Pairs are compared by *score*, as regard compares them in service: the Euclidean distance
between the templates minus both templates' half offsets (fair score normalization), or the
plain distance when scoring is raw. A :class:`regard.scoring.calibrate.Scorer` supplies the half offsets
and the calibration table that maps a score to FMR and similarity.

One global score threshold per target false-match rate is set on all impostor pairs; each group's
FMR (impostor pairs with both images in the group) and FNMR (genuine pairs of the group) are
then measured at that same threshold, as in NISTIR 8280. Two more operating points are the
deployed ones: similarity 80 under the shipped calibration table (Rekognition's default
threshold) and the policy floor, an FPIR per search turned into a per-comparison FMR for the
gallery size (FPIR ~ N x FMR), capped by the profile's per-comparison FMR, as the
"identification" policy profile does, and then into a score by the shipped table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from regard import __version__
from regard.evaluation import identification
from regard.evaluation.dataset import NO_FACE, OK, UNREADABLE, Dataset, Templates
from regard.evaluation.metrics import (
    MIN_EXPECTED_ERRORS,
    MIN_GENUINE_PAIRS,
    Rate,
    differential,
    differential_interval,
    fmr_replicates,
    group_rates,
    make_rate,
    min_impostors_for,
    replicate_interval,
    subject_rate_replicates,
    threshold_from_smallest,
)
from regard.evaluation.pairs import (
    BIN_EDGES,
    Grouping,
    PairScores,
    natural_key,
    score_all_pairs,
    score_listed_pairs,
)
from regard.scoring.calibrate import Scorer, similarity_from_fmr

ALL = "all"


@dataclass(frozen=True)
class QualityPolicy:
    """When an acquired face counts as a quality rejection (reported per group; still compared)."""

    min_face_height: float = 40.0
    min_sharpness: float = 5.0
    min_brightness: float = 10.0
    max_brightness: float = 95.0

    def rejected(self, t: Templates) -> np.ndarray:
        ok = t.acquired
        bad = (
            (t.face_height < self.min_face_height)
            | (t.sharpness < self.min_sharpness)
            | (t.brightness < self.min_brightness)
            | (t.brightness > self.max_brightness)
        )
        return np.asarray(ok & bad)


@dataclass(frozen=True)
class BiasOptions:
    groups: Sequence[str] = ()
    targets: Sequence[float] = (1e-3, 1e-4, 1e-5)
    seed: int = 0
    bootstrap: int = 1000
    fpir_floor: float = 1e-3  # the "identification" policy profile's max_fpir
    fmr_floor: float = 1e-4  # its max_fmr: the floor's per-comparison FMR is min(this, fpir / N)
    quality: QualityPolicy = field(default_factory=QualityPolicy)


@dataclass
class BiasData:
    """What the report module needs to draw: the scores beside the numbers."""

    report: dict[str, Any]
    scores: PairScores | None
    groupings: list[Grouping]
    operating: list[dict[str, Any]]


def default_groups(dataset: Dataset) -> list[str]:
    """The demographic columns present among sex, race and age, in that order."""
    return [c for c in ("sex", "race", "age") if c in dataset.labels]


def run_bias_audit(
    dataset: Dataset,
    templates: Templates,
    system: dict[str, Any],
    options: BiasOptions,
    scorer: Scorer | None,
) -> BiasData:
    """Compute every number of the report, scoring pairs with ``scorer`` (None: no calibration is
    installed; pairs are scored by raw distance and similarity 80 and the floor are placed on this
    data's own impostors)."""
    targets = sorted({float(t) for t in options.targets}, reverse=True)
    if not targets or any(not 0 < t < 1 for t in targets):
        raise ValueError("targets must be false-match rates strictly between 0 and 1")
    specs = list(options.groups) or default_groups(dataset)
    acquired = np.nonzero(templates.acquired)[0]
    emb = templates.embeddings[acquired]
    half = scorer.half_offsets(emb) if scorer is not None and len(acquired) else np.zeros(len(acquired))
    subj_names = [dataset.subjects[i] for i in acquired]
    subj_lookup = {s: k for k, s in enumerate(sorted(set(subj_names)))}
    subj = np.array([subj_lookup[s] for s in subj_names], dtype=np.int64)
    all_values = {spec: dataset.group_values(spec) for spec in specs}
    groupings = [Grouping.of(ALL, [ALL] * len(acquired))] + [
        Grouping.of(spec, [all_values[spec][i] for i in acquired]) for spec in specs
    ]

    report: dict[str, Any] = {
        "regard_version": __version__,
        "system": dict(system),
        "dataset": {
            "name": dataset.name,
            "root": str(dataset.root),
            "has_identities": dataset.has_identities,
            "pairs_file": dataset.pairs is not None,
            "groups": specs,
        },
        "options": {
            "targets": targets,
            "seed": options.seed,
            "bootstrap_replicates": options.bootstrap,
            "fpir_floor": options.fpir_floor,
            "fmr_floor": options.fmr_floor,
            "quality_policy": options.quality.__dict__,
        },
    }
    table = scorer.table if scorer is not None else None
    report["system"]["calibration_table"] = (
        {"version": table.version, "model": table.model, "dataset": table.dataset} if table else None
    )
    report["system"]["scoring"] = scoring_identity(scorer)
    report["acquisition"] = _acquisition(dataset, templates, specs, all_values, options)

    # -- pairs ---------------------------------------------------------------------------------
    names = [dataset.paths[i] for i in acquired]
    roles = identification.split(subj, options.seed, subject_names=subj_names, image_names=names)
    gallery_size = int(roles.gallery.size)
    fixed: dict[str, float] = {}
    if scorer is not None:
        fixed["similarity 80 (shipped table)"] = scorer.score_for_similarity(80.0)
        fixed["similarity 60 (shipped table)"] = scorer.score_for_similarity(60.0)
        if gallery_size:
            fixed[_floor_label(options, gallery_size)] = scorer.score_for_fmr(
                _floor_fmr(options, gallery_size)
            )
    if len(acquired) < 2:
        scores = None
    elif dataset.pairs is not None:
        pos = {int(a): k for k, a in enumerate(acquired)}
        listed = [(pos[a], pos[b], s) for a, b, s in dataset.pairs if a in pos and b in pos]
        scores = score_listed_pairs(emb, listed, groupings, half_offsets=half)
    else:
        scores = score_all_pairs(
            emb,
            subj,
            groupings,
            max_target=targets[0],
            fixed_thresholds=list(fixed.values()),
            half_offsets=half,
        )
    report["data_card"] = _data_card(dataset, templates, groupings, scores, subj, acquired)
    if scores is None or scores.n_impostor == 0:
        report["operating_points"] = []
        report["note"] = "fewer than two acquired images or no impostor pairs: no rates can be measured"
        return BiasData(report, scores, groupings, [])

    points: list[dict[str, Any]] = []
    for t in targets:
        k = math.floor(t * scores.n_impostor + 1e-9)
        if k >= scores.tail_s.size:
            continue
        tau = threshold_from_smallest(scores.tail_s, scores.n_impostor, t)
        points.append({"label": f"FMR {t:g} (global)", "kind": "target", "target_fmr": t, "score": tau})
    for label, tau in fixed.items():
        kind = "floor" if not label.startswith("similarity") else "similarity" + label.split()[1]
        nominal = scorer.fmr_at(tau) if scorer else None
        points.append({"label": label, "kind": kind, "target_fmr": nominal, "score": tau})
    if scorer is None:
        # No shipped table: similarity 80 and the floor are placed by this data's own impostors.
        wanted = [("similarity 80 (measured on this data)", "similarity80", 1e-4)]
        if gallery_size:
            label = _floor_label(options, gallery_size) + " measured"
            wanted.append((label, "floor", _floor_fmr(options, gallery_size)))
        for label, kind, fmr in wanted:
            if math.floor(fmr * scores.n_impostor + 1e-9) < scores.tail_s.size:
                tau = threshold_from_smallest(scores.tail_s, scores.n_impostor, fmr)
                points.append({"label": label, "kind": kind, "target_fmr": fmr, "score": tau})
    for p in points:
        p["shipped_similarity"] = scorer.similarity(p["score"]) if scorer else None
        p["shipped_fmr"] = scorer.fmr_at(p["score"]) if scorer else None
        _measure_point(p, scores, groupings, subj, options)
    report["operating_points"] = points
    report["calibration"] = _calibration(scores, scorer)
    sim = (lambda x: scorer.similarity(x)) if scorer else (lambda x: None)
    report["identification"] = identification.evaluate_identification(
        emb,
        subj,
        groupings,
        {p["label"]: p["score"] for p in points},
        seed=options.seed,
        names=names,
        similarity=sim,
        half_offsets=half,
        subject_names=subj_names,
    )
    return BiasData(report, scores, groupings, points)


def scoring_identity(scorer: Scorer | None) -> dict[str, Any]:
    """What the report's "System under test" says about how pairs were scored."""
    if scorer is None:
        return {
            "mode": "raw",
            "score": "Euclidean distance (no calibration table installed)",
            "calibration_installed": False,
        }
    return {
        "mode": "normalized" if scorer.normalized else "raw",
        "score": (
            "distance(a, b) - h(a) - h(b) (fair score normalization)"
            if scorer.normalized
            else "Euclidean distance (no normalizer)"
        ),
        "calibration_installed": True,
        **scorer.identity(),
    }


def _floor_fmr(options: BiasOptions, gallery_size: int) -> float:
    return min(options.fmr_floor, options.fpir_floor / max(1, gallery_size))


def _floor_label(options: BiasOptions, gallery_size: int) -> str:
    return (
        f"policy floor (FMR {_floor_fmr(options, gallery_size):.2g} = min({options.fmr_floor:g}, "
        f"FPIR {options.fpir_floor:g} / N={gallery_size}))"
    )


def _acquisition(
    dataset: Dataset,
    templates: Templates,
    specs: Sequence[str],
    values: dict[str, list[str]],
    options: BiasOptions,
) -> dict[str, Any]:
    """Failure to acquire and quality rejections per group, and how far apart the groups' failure
    rates are, with a simultaneous interval.

    A group enters the differential only when at least three failures are expected in it at the
    overall rate (the rule FMR follows at its nominal rate): otherwise a small group without
    failures, counted as half a failure, would rank as the worst (0 of 3 images counts as 17%).
    """
    fta = ~templates.acquired
    rejected = options.quality.rejected(templates)
    subjects = np.asarray(dataset.subjects)
    overall = float(fta.mean()) if len(fta) else 0.0
    min_images = math.ceil(MIN_EXPECTED_ERRORS / overall) if overall > 0 else len(fta) + 1
    out: dict[str, Any] = {
        "no_face": int((templates.status == NO_FACE).sum()),
        "unreadable": int((templates.status == UNREADABLE).sum()),
        "by_group": {},
        "differentials": {},
    }
    for spec, vals in [(ALL, [ALL] * len(dataset)), *[(s, values[s]) for s in specs]]:
        fta_counts = group_rates(fta.tolist(), vals)
        acq = templates.acquired
        q_counts = group_rates(rejected[acq].tolist(), [v for v, a in zip(vals, acq, strict=True) if a])
        per: dict[str, Any] = {}
        rates: dict[str, Rate] = {}
        reps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        labels = np.asarray(vals)
        for k, (g, (err, n)) in enumerate(sorted(fta_counts.items(), key=lambda item: natural_key(item[0]))):
            qe, qn = q_counts.get(g, (0, 0))
            rates[g] = make_rate(err, n, min_trials=min_images)  # estimable: for the differential only
            per[g] = {
                "failure_to_acquire": make_rate(err, n, min_trials=1).to_dict(),
                "quality_rejected": make_rate(qe, qn, min_trials=1).to_dict(),
            }
            if options.bootstrap > 0 and spec != ALL and rates[g].estimable:
                member = labels == g
                uniq, inv = np.unique(subjects[member], return_inverse=True)
                failed = np.bincount(inv, weights=fta[member].astype(np.float64), minlength=uniq.size)
                images = np.bincount(inv, minlength=uniq.size).astype(np.float64)
                reps[g] = subject_rate_replicates(failed, images, options.bootstrap, (options.seed, k))
        out["by_group"][spec] = per
        if spec != ALL:
            d = replace(differential(rates), interval=differential_interval(_counts(rates), reps))
            out["differentials"][spec] = {"failure_to_acquire": d.to_dict()}
    return out


def _data_card(
    dataset: Dataset,
    templates: Templates,
    groupings: Sequence[Grouping],
    scores: PairScores | None,
    subj: np.ndarray,
    acquired: np.ndarray,
) -> dict[str, Any]:
    card: dict[str, Any] = {
        "images": len(dataset),
        "subjects": len(set(dataset.subjects)),
        "acquired": int(templates.acquired.sum()),
        "not_acquired": int((templates.status != OK).sum()),
        "genuine_pairs": int(scores.genuine_s.size) if scores else 0,
        "impostor_pairs": int(scores.n_impostor) if scores else 0,
        "by_group": {},
    }
    for g in groupings:
        per: dict[str, Any] = {}
        totals = scores.impostor_totals(g.spec) if scores else None
        for k, name in enumerate(g.names):
            members = g.codes == k
            gen = 0
            if scores is not None and scores.genuine_ij.size:
                ij = scores.genuine_ij
                gen = int(((g.codes[ij[:, 0]] == k) & (g.codes[ij[:, 1]] == k)).sum())
            per[name] = {
                "acquired_images": int(members.sum()),
                "subjects": int(np.unique(subj[members]).size),
                "genuine_pairs": gen,
                "impostor_pairs_same_group": int(totals[k, k]) if totals is not None else 0,
            }
        card["by_group"][g.spec] = per
    return card


def _fm_subject_pairs(scores: PairScores, subj: np.ndarray, sel: np.ndarray, tau: float) -> np.ndarray:
    hit = sel & (scores.tail_s <= tau)
    return np.stack([subj[scores.tail_ij[hit, 0]], subj[scores.tail_ij[hit, 1]]], axis=1)


def _measure_point(
    point: dict[str, Any],
    scores: PairScores,
    groupings: Sequence[Grouping],
    subj: np.ndarray,
    options: BiasOptions,
) -> None:
    tau = float(point["score"])
    nominal = point["target_fmr"] or 1e-4
    min_imp = min_impostors_for(nominal)
    gi, gj = scores.genuine_ij[:, 0], scores.genuine_ij[:, 1]
    ti, tj = scores.tail_ij[:, 0], scores.tail_ij[:, 1]
    by_group: dict[str, Any] = {}
    differentials: dict[str, Any] = {}
    cross: dict[str, Any] = {}
    seed = options.seed
    for g in groupings:
        totals = scores.impostor_totals(g.spec)
        fmr_rates: dict[str, Rate] = {}
        fnmr_rates: dict[str, Rate] = {}
        # One set of subject resamples per group gives both its own interval and the
        # differentials' (metrics.differential_interval). Each group of a grouping is resampled
        # on its own with a seed of its own (the same seed would draw the same indices for groups
        # of equal size and tie their replicates together); "all" keeps the run's seed.
        fmr_reps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        fnmr_reps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        per: dict[str, Any] = {}
        for k, name in enumerate(g.names):
            sel_t = (g.codes[ti] == k) & (g.codes[tj] == k)
            n_imp = int(totals[k, k])
            fm = int((sel_t & (scores.tail_s <= tau)).sum())
            fmr = make_rate(fm, n_imp, min_trials=min_imp)
            sel_g = (g.codes[gi] == k) & (g.codes[gj] == k)
            gd = scores.genuine_s[sel_g]
            fnm = int((gd > tau).sum())
            fnmr = make_rate(fnm, int(gd.size), min_trials=MIN_GENUINE_PAIRS)
            if options.bootstrap > 0:
                counts, local = _fmr_subjects(scores, subj, g.codes == k, sel_t, tau)
                e, n = _fnmr_subjects(subj[gi[sel_g]], gd > tau)
                draw: int | tuple[int, int] = seed if g.spec == ALL else (seed, k)
                fmr_draws = fmr_replicates(counts, local, options.bootstrap, draw) if fmr.trials else None
                fnmr_draws = subject_rate_replicates(e, n, options.bootstrap, draw) if fnmr.trials else None
                fmr, fnmr = _with_interval(fmr, fmr_draws), _with_interval(fnmr, fnmr_draws)
                if g.spec != ALL:
                    if fmr.estimable and fmr_draws is not None:
                        fmr_reps[name] = fmr_draws
                    if fnmr.estimable and fnmr_draws is not None:
                        fnmr_reps[name] = fnmr_draws
            fmr_rates[name], fnmr_rates[name] = fmr, fnmr
            per[name] = {"fmr": fmr.to_dict(), "fnmr": fnmr.to_dict()}
        by_group[g.spec] = per
        if g.spec != ALL:
            fd = replace(
                differential(fmr_rates), interval=differential_interval(_counts(fmr_rates), fmr_reps)
            )
            nd = replace(
                differential(fnmr_rates), interval=differential_interval(_counts(fnmr_rates), fnmr_reps)
            )
            differentials[g.spec] = {"fmr": fd.to_dict(), "fnmr": nd.to_dict()}
            # Cross-group impostor FMR matrix.
            n_g = len(g.names)
            hit = scores.tail_s <= tau
            lo = np.minimum(g.codes[ti[hit]], g.codes[tj[hit]])
            hi = np.maximum(g.codes[ti[hit]], g.codes[tj[hit]])
            fm_mat = np.bincount(lo * n_g + hi, minlength=n_g * n_g).reshape(n_g, n_g)
            fm_sym = fm_mat + np.triu(fm_mat, 1).T
            tot_sym = totals + np.triu(totals, 1).T
            with np.errstate(invalid="ignore", divide="ignore"):
                rate = np.where(tot_sym > 0, fm_sym / np.maximum(tot_sym, 1), np.nan)
            cross[g.spec] = {
                "groups": g.names,
                "false_matches": np.triu(fm_sym).tolist(),
                "impostor_pairs": np.triu(tot_sym).tolist(),
                "fmr": [[None if not np.isfinite(v) else float(v) for v in row] for row in rate],
            }
    point["global"] = by_group[ALL][ALL]
    point["by_group"] = {k: v for k, v in by_group.items() if k != ALL}
    point["differentials"] = differentials
    point["cross_group_fmr"] = cross


def _counts(rates: dict[str, Rate]) -> dict[str, tuple[int, int]]:
    return {g: (r.errors, r.trials) for g, r in rates.items()}


def _fmr_subjects(
    scores: PairScores, subj: np.ndarray, members: np.ndarray, sel_t: np.ndarray, tau: float
) -> tuple[np.ndarray, np.ndarray]:
    """A group's images per subject and its false-matching pairs as rows of subject indices."""
    uniq, counts = np.unique(subj[members], return_counts=True)
    pairs = _fm_subject_pairs(scores, subj, sel_t, tau)
    return counts, np.searchsorted(uniq, pairs).reshape(-1, 2)


def _fnmr_subjects(pair_subjects: np.ndarray, errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A group's false non-matches and genuine pairs per subject."""
    uniq, inv = np.unique(pair_subjects, return_inverse=True)
    e = np.bincount(inv, weights=errors.astype(np.float64), minlength=uniq.size)
    n = np.bincount(inv, minlength=uniq.size).astype(np.float64)
    return e, n


def _with_interval(rate: Rate, draws: tuple[np.ndarray, np.ndarray] | None) -> Rate:
    """``rate`` with the percentile interval of its replicates' rates (errors / trials)."""
    if draws is None or rate.trials == 0:
        return rate
    ci = replicate_interval(*draws)
    return Rate(rate.errors, rate.trials, rate.ci, rate.estimable, ci, rate.note)


def _calibration(scores: PairScores, scorer: Scorer | None) -> dict[str, Any]:
    """Measured score -> FMR/similarity on this data next to the shipped table's values."""
    cum = np.cumsum(scores.hist_all)
    rows = []
    genuine = np.sort(scores.genuine_s)
    for d in np.round(np.arange(0.10, 0.82, 0.02), 2):
        idx = int(np.searchsorted(BIN_EDGES, d - 1e-12)) - 1  # bin whose upper edge is d
        fm = int(cum[idx]) if idx >= 0 else 0
        fmr = fm / scores.n_impostor
        fnmr = (
            float(genuine.size - np.searchsorted(genuine, d, side="right")) / genuine.size
            if genuine.size
            else None
        )
        rows.append(
            {
                "score": float(d),
                "measured_fmr": fmr,
                "measured_false_matches": fm,
                "measured_similarity": similarity_from_fmr(fmr) if fm else None,
                "measured_fnmr": fnmr,
                "shipped_fmr": scorer.fmr_at(float(d)) if scorer else None,
                "shipped_similarity": scorer.similarity(float(d)) if scorer else None,
                "shipped_fnmr": scorer.table.fnmr_at(float(d)) if scorer else None,
            }
        )
    return {"impostor_pairs": scores.n_impostor, "rows": rows}
