"""Fair score normalization: one comparison score whose meaning does not depend on whose face it is.

A descriptor distance means different things for different faces: dlib's ResNet packs East Asian
faces and young children closer together than White adults, so one global distance threshold
admits tens of times more false matches for some people than for others. Following Terhörst et
al., "Post-comparison mitigation of demographic bias in face recognition using fair score
normalization" (IJCB 2020), without any demographic label:

1. the templates of a diverse pool are clustered (k-means);
2. each cluster's *local threshold* is the distance at which the impostor comparisons of its
   members reach the target false-match rate, and the *global threshold* the same over the pool;
3. a pair's score is its distance shifted by the mean of its two clusters' offsets::

       score = distance - (offset[cluster(a)] + offset[cluster(b)]) / 2
       offset[c] = local_threshold[c] - global_threshold

   so pairs from clusters whose impostors sit close together (a low local threshold) are moved
   apart, and the calibration table (``regard.scoring.calibrate``) maps the score to a false-match rate.

Steps 2-3 may be repeated on the normalized scores (``iterations``), each round adding the
residual offsets, since one pair's shift mixes two clusters. The offsets are then scaled
(``strength``) and limited to the range the pool's templates mostly fall in
(``offset_quantile``). Each sample's impostor comparisons count with equal total weight, so
large datasets in a pool do not drown small ones.

One k-means clustering is one random draw: on the sweep's folds, five seeds of the same setting
gave a worst criterion from 1.26 to 2.06 (docs/calibration.md). So several clusterings
(``members``, seeds ``seed`` .. ``seed + members - 1``) are fitted together and a template's
offset is the mean of its clusters' offsets across them; each round of step 2 measures every
member's clusters on the scores the whole ensemble gives.

A template's share of the shift, ``offset / 2`` (averaged over the members), is its *half
offset*; scores and searches use it.
The normalizer is data with provenance (``data/normalizer.json``): the model its centroids were
fitted for, the datasets, the method and its parameters, and a content hash.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from regard.errors import InvalidParameter, ScoringMismatch

#: Score histograms are kept at this resolution (distance units) while fitting.
BIN_WIDTH = 0.0005
#: Scores beyond this never decide a threshold at a useful false-match rate.
MAX_SCORE = 2.0
#: One clustering, centroids as JSON numbers (written for ``members == 1``, so the hash of a
#: normalizer made before ensembles stays the same).
FORMAT_SINGLE = "regard-normalizer/1"
#: Several clusterings; centroids as base64 of little-endian float32 (exact and a third the size).
FORMAT = "regard-normalizer/2"


@dataclass(frozen=True)
class ScoreNormalizer:
    """Cluster centroids and each cluster's offset from the global threshold (distance units).

    ``members`` clusterings of ``k`` clusters each: rows ``j * k .. (j + 1) * k - 1`` of
    ``centroids`` and ``offsets`` are clustering ``j``.
    """

    version: str
    model: str  # ModelIdentity.key of the descriptor the centroids live in
    centroids: np.ndarray  # (members * k, d) float32
    offsets: np.ndarray  # (members * k,) float64
    provenance: dict[str, Any] = field(default_factory=dict)
    members: int = 1

    def __post_init__(self) -> None:
        n = len(self.centroids)
        if self.members < 1 or n == 0 or n % self.members or np.shape(self.offsets) != (n,):
            raise InvalidParameter(
                f"score normalizer: {n} centroids, {len(self.offsets)} offsets and "
                f"{self.members} clusterings do not fit together"
            )

    @property
    def k(self) -> int:
        """Clusters per clustering."""
        return len(self.centroids) // self.members

    # -- applying ---------------------------------------------------------------------------
    def clusters(self, templates: np.ndarray) -> np.ndarray:
        """(n, members): each template's nearest centroid in every clustering, as a row of
        ``centroids`` (and ``offsets``)."""
        t = np.atleast_2d(np.asarray(templates, dtype=np.float32))
        d2 = self._centroid_norms[None, :] - 2.0 * (t @ self._centroids_t)
        nearest = np.argmin(d2.reshape(len(t), self.members, self.k), axis=2)
        result: np.ndarray = nearest + self.k * np.arange(self.members)[None, :]
        return result

    @cached_property
    def _centroid_norms(self) -> np.ndarray:
        """Squared norms of the centroids (computed once: a third of a lookup's time otherwise)."""
        result: np.ndarray = np.einsum("ij,ij->i", self.centroids, self.centroids)
        return result

    @cached_property
    def _centroids_t(self) -> np.ndarray:
        """The centroids transposed into contiguous memory: a product with a few templates (a
        CompareFaces pair, a search's candidates) took 8 us instead of 56 with the strided view."""
        result: np.ndarray = np.ascontiguousarray(self.centroids.T)
        return result

    def half_offsets(self, templates: np.ndarray) -> np.ndarray:
        """Each template's share of a pair's shift: half its clusters' mean offset (float64)."""
        t = np.atleast_2d(np.asarray(templates, dtype=np.float32))
        if len(t) == 0:
            return np.zeros(0, dtype=np.float64)
        result: np.ndarray = 0.5 * self.offsets[self.clusters(t)].mean(axis=1)
        return result

    @property
    def half_offset_range(self) -> tuple[float, float]:
        """Bounds on the half offset any template can have (each clustering's extreme, averaged)."""
        blocks = self.offsets.reshape(self.members, self.k)
        return 0.5 * float(blocks.min(axis=1).mean()), 0.5 * float(blocks.max(axis=1).mean())

    def check_model(self, model_key: str) -> None:
        """Refuse to score templates of a model the centroids were not fitted for."""
        if self.model != model_key:
            raise ScoringMismatch(
                f"score normalizer {self.version!r} was fitted for templates of {self.model}; "
                f"these templates come from {model_key}. Re-make it with 'regard calibrate' "
                "on photos embedded by this model."
            )

    # -- storing ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": FORMAT_SINGLE if self.members == 1 else FORMAT,
            "version": self.version,
            "model": self.model,
            "provenance": self.provenance,
            "offsets": [round(float(x), 7) for x in self.offsets],
        }
        if self.members == 1:
            data["centroids"] = [[round(float(x), 7) for x in row] for row in self.centroids]
        else:
            data["members"] = self.members
            data["dimensions"] = int(self.centroids.shape[1])
            raw = np.ascontiguousarray(self.centroids, dtype="<f4").tobytes()
            data["centroids_float32"] = base64.b64encode(raw).decode("ascii")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScoreNormalizer:
        fmt = data.get("format")
        if fmt not in (FORMAT_SINGLE, FORMAT):
            raise InvalidParameter(f"not a score normalizer (format {fmt!r}, want {FORMAT})")
        offsets = np.asarray(data["offsets"], dtype=np.float64)
        try:
            if fmt == FORMAT_SINGLE:
                members = 1
                centroids = np.asarray(data["centroids"], dtype=np.float32)
            else:
                members = int(data["members"])
                flat = np.frombuffer(base64.b64decode(data["centroids_float32"], validate=True), dtype="<f4")
                centroids = flat.reshape(-1, int(data["dimensions"])).astype(np.float32)
        except (KeyError, TypeError, ValueError) as e:
            raise InvalidParameter(f"score normalizer: unreadable centroids ({e})") from e
        if centroids.ndim != 2 or offsets.shape != (centroids.shape[0],) or len(offsets) == 0:
            raise InvalidParameter("score normalizer: centroids and offsets do not match")
        return cls(
            version=str(data["version"]),
            model=str(data["model"]),
            centroids=centroids,
            offsets=offsets,
            provenance=dict(data.get("provenance", {})),
            members=members,
        )

    @classmethod
    def load(cls, path: Path | None = None) -> ScoreNormalizer:
        if path is None:
            text = resources.files("regard").joinpath("data/normalizer.json").read_text()
        else:
            text = Path(path).read_text()
        return cls.from_dict(json.loads(text))

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @cached_property
    def sha256(self) -> str:
        """Hash of the parameters as stored (what audit records and reports cite). Computed once:
        serialising the centroids took ~21 ms, several times per IndexFaces, and the parameters
        of a loaded normalizer never change."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


@cache
def default_normalizer() -> ScoreNormalizer:
    """The normalizer shipped with regard."""
    return ScoreNormalizer.load()


# -- fitting -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitOptions:
    """How a normalizer is fitted; the defaults are the ones chosen by the sweep in docs/calibration.md."""

    clusters: int = 200
    target_fmr: float = 1e-3
    iterations: int = 2
    seed: int = 0
    #: The fitted offsets are multiplied by this (1: Terhörst's full shift; less trades some of the
    #: equalisation for accuracy within a population, see docs/calibration.md).
    strength: float = 1.0
    #: Offsets are limited to the ``1 - q`` and ``q`` quantiles of the pool templates' offsets (1:
    #: no limit). A cluster beyond them holds few of the pool's images, so its threshold rests on
    #: little, and the largest offset sets how far every 1:N search must look (docs/benchmarks.md).
    offset_quantile: float = 0.99
    #: Clusterings averaged (seeds ``seed`` .. ``seed + members - 1``); 1 is Terhörst's single one.
    members: int = 5


def fitting_libraries() -> dict[str, str]:
    """Versions of the libraries whose arithmetic a fit depends on (recorded in its provenance)."""
    import sklearn

    return {"numpy": np.__version__, "scikit-learn": sklearn.__version__}


def kmeans_centroids(templates: np.ndarray, k: int, seed: int) -> np.ndarray:
    """k-means centroids of ``templates`` (scikit-learn, deterministic for a seed)."""
    from sklearn.cluster import KMeans

    if len(templates) < 2 * k:
        raise InvalidParameter(f"too few templates ({len(templates)}) for {k} clusters; need {2 * k}")
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(np.asarray(templates, dtype=np.float64))
    return np.asarray(km.cluster_centers_, dtype=np.float32)


def _impostor_histograms(
    templates: np.ndarray,
    subjects: np.ndarray,
    domains: np.ndarray,
    clusters: np.ndarray,
    k: int,
    half: np.ndarray,
    block: int = 512,
) -> np.ndarray:
    """(k, bins) weighted histograms of the shifted impostor scores of each cluster's members.

    ``clusters`` is (n, members) rows of ``offsets`` (``k`` of them in all): a comparison counts
    in each of its sample's clusters. A sample's impostors are the samples of its own domain with
    another subject; each sample's comparisons carry total weight 1 in every clustering.
    """
    emb = np.asarray(templates, dtype=np.float32)
    n = len(emb)
    bins = int(MAX_SCORE / BIN_WIDTH)
    hist = np.zeros(k * bins, dtype=np.float64)
    sq = np.einsum("ij,ij->i", emb, emb)
    for start in range(0, n, block):
        stop = min(n, start + block)
        d2 = sq[start:stop, None] + sq[None, :] - 2.0 * (emb[start:stop] @ emb.T)
        score = np.sqrt(np.maximum(d2, 0.0)) - half[start:stop, None] - half[None, :]
        imp = (domains[start:stop, None] == domains[None, :]) & (
            subjects[start:stop, None] != subjects[None, :]
        )
        counts = imp.sum(axis=1)
        weight = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
        rows, cols = np.nonzero(imp)
        b = np.clip((score[rows, cols] / BIN_WIDTH).astype(np.int64), 0, bins - 1)
        for column in clusters[start:stop].T:
            hist += np.bincount(column[rows] * bins + b, weights=weight[rows], minlength=k * bins)
    return hist.reshape(k, bins)


def histogram_threshold(hist: np.ndarray, fmr: float) -> float:
    """The score at which the cumulative weight of ``hist`` reaches ``fmr`` of its total."""
    total = float(hist.sum())
    if total <= 0:
        raise InvalidParameter("no impostor comparisons to set a threshold on")
    cum = np.cumsum(hist) / total
    i = int(np.searchsorted(cum, fmr))
    below = float(cum[i - 1]) if i > 0 else 0.0
    inside = float(hist[i]) / total if i < len(hist) else 0.0
    frac = 0.0 if inside <= 0 else (fmr - below) / inside
    return (i + min(max(frac, 0.0), 1.0)) * BIN_WIDTH


def limit_offsets(offsets: np.ndarray, assigned: np.ndarray, quantile: float) -> np.ndarray:
    """``offsets`` clipped to the ``1 - quantile`` and ``quantile`` quantiles of the offsets of the
    templates whose clusters are ``assigned`` ((n,) or (n, members); each template counts once
    per clustering, so a cluster of a few images cannot set the range). ``quantile`` 1 leaves
    them as they are."""
    if quantile >= 1.0 or len(assigned) == 0:
        return np.asarray(offsets, dtype=np.float64)
    lo, hi = np.quantile(np.asarray(offsets)[assigned], [1.0 - quantile, quantile])
    return np.clip(np.asarray(offsets, dtype=np.float64), lo, hi)


def fit_normalizer(
    templates: np.ndarray,
    subjects: Sequence[str] | np.ndarray,
    domains: Sequence[str] | np.ndarray,
    *,
    model: str,
    version: str,
    options: FitOptions | None = None,
    provenance: dict[str, Any] | None = None,
) -> ScoreNormalizer:
    """Fit centroids and offsets on labelled templates.

    ``subjects`` say which samples are the same person; ``domains`` (the dataset each sample came
    from) keep impostor comparisons within one dataset, so a pool of differently cropped sets is
    not padded with trivially easy cross-set impostors.
    """
    opts = options or FitOptions()
    emb = np.asarray(templates, dtype=np.float32)
    subj = np.asarray(subjects).astype(str)
    dom = np.asarray(domains).astype(str)
    if not (len(emb) == len(subj) == len(dom)):
        raise InvalidParameter("templates, subjects and domains differ in length")
    if not 0 < opts.target_fmr < 0.5:
        raise InvalidParameter("target_fmr must be between 0 and 0.5")
    if not 0.5 < opts.offset_quantile <= 1.0:
        raise InvalidParameter("offset_quantile must be above 0.5 and at most 1")
    if opts.members < 1:
        raise InvalidParameter("members must be at least 1")
    seeds = [opts.seed + j for j in range(opts.members)]
    cents = np.concatenate([kmeans_centroids(emb, opts.clusters, s) for s in seeds])
    k = len(cents)
    shape = ScoreNormalizer(version, model, np.asarray(cents, np.float32), np.zeros(k), members=opts.members)
    assigned = shape.clusters(emb)
    offsets = np.zeros(k, dtype=np.float64)
    for _ in range(max(1, opts.iterations)):
        half = 0.5 * offsets[assigned].mean(axis=1)
        hist = _impostor_histograms(emb, subj, dom, assigned, k, half)
        # Every clustering holds each comparison once: its clusters' histograms sum to the pool's.
        global_thr = histogram_threshold(hist[: shape.k].sum(axis=0), opts.target_fmr)
        for c in range(k):
            if hist[c].sum() > 0:
                offsets[c] += histogram_threshold(hist[c], opts.target_fmr) - global_thr
    offsets *= opts.strength
    offsets = limit_offsets(offsets, assigned, opts.offset_quantile)
    sizes = np.bincount(assigned.ravel(), minlength=k)
    prov = dict(provenance or {})
    prov.update(
        {
            "method": "fair score normalization (Terhörst et al., IJCB 2020): k-means clusters, "
            "per-cluster thresholds at the target FMR on impostor comparisons, "
            "score = distance - mean of the two templates' offsets; a template's offset is the "
            "mean over the clusterings (members) of its cluster's offset",
            "clusters": shape.k,
            "members": opts.members,
            "target_fmr": opts.target_fmr,
            "iterations": opts.iterations,
            "strength": opts.strength,
            "offset_quantile": opts.offset_quantile,
            "seed": opts.seed,
            "templates": len(emb),
            "smallest_cluster": int(sizes.min()),
            "largest_cluster": int(sizes.max()),
            # A refit elsewhere need not give the same clusters: name the libraries that made these.
            "libraries": fitting_libraries(),
        }
    )
    return ScoreNormalizer(version, model, np.asarray(cents, np.float32), offsets, prov, members=opts.members)
