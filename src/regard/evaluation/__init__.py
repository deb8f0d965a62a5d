"""Bias audits and evaluation reports (``regard evaluate``).

:func:`evaluate` reads a labelled folder or pairs file, computes (or loads cached) templates with
a face engine, measures verification and identification error rates globally and per group, and
writes ``report.json`` and a self-contained ``report.html``. See ``docs/evaluation.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from regard.errors import InvalidParameter, ModelUnavailable
from regard.evaluation.bias import BiasData, BiasOptions, run_bias_audit
from regard.evaluation.dataset import Progress, TemplateSource, compute_templates, read_dataset
from regard.evaluation.gates import check_gates, load_gates
from regard.evaluation.report import write_report
from regard.scoring.calibrate import (
    Scorer,
    default_scorer,
    held_apart_fold,
    is_held_apart,
    raw_scorer,
    raw_table,
)

__all__ = [
    "SCORING_MODES",
    "BiasOptions",
    "Evaluation",
    "evaluate",
    "held_apart_keep",
    "scorer_for",
]

#: ``regard evaluate --scoring``: "normalized" is what regard deploys (the shipped score normalizer
#: and the table fitted on its scores); "raw" is regard before normalization (raw distances and
#: the celeba_dev table ``data/calibration-raw.json``).
SCORING_MODES = ("normalized", "raw")


@dataclass(frozen=True)
class Evaluation:
    data: BiasData
    json_path: Path
    html_path: Path

    @property
    def gates_passed(self) -> bool:
        gates: dict[str, Any] | None = self.data.report.get("gates")
        return True if gates is None else bool(gates["passed"])


def scorer_for(mode: str, engine: object | None = None) -> Scorer:
    """The scorer of a ``--scoring`` mode: "normalized" is the engine's (the shipped parameters or
    ``REGARD_SCORING_DIR``'s), "raw" the pre-0.2 table on raw distances. Parameter files that
    cannot be read raise :class:`~regard.errors.ModelUnavailable`, never a silent fallback."""
    from regard.face.engine import Engine

    if mode not in SCORING_MODES:
        raise InvalidParameter(f"scoring must be one of {', '.join(SCORING_MODES)}, not {mode!r}")
    if mode == "normalized":
        return engine.scorer if isinstance(engine, Engine) else default_scorer()
    try:
        return raw_scorer(raw_table())
    except (OSError, KeyError, ValueError) as exc:
        raise ModelUnavailable(
            f"the raw-distance table data/calibration-raw.json cannot be read: {exc!r}"
        ) from exc


def dataset_folder(location: Path) -> str:
    """The name of the dataset folder of ``location`` (a folder, or a pairs file inside one)."""
    location = Path(location)
    return (location if location.is_dir() else location.parent).resolve().name


def held_apart_keep(location: Path) -> Callable[[str], bool]:
    """``keep_subject`` for :func:`read_dataset`: the samples of the dataset at ``location`` that
    :func:`regard.scoring.calibrate.is_held_apart` says were kept out of fitting the shipped parameters."""
    return partial(is_held_apart, dataset_folder(location))


def evaluate(
    location: Path,
    out: Path,
    engine: object,
    options: BiasOptions,
    *,
    limit: int | None = None,
    gates_file: Path | None = None,
    workers: int = 1,
    progress: Progress | None = None,
    held_apart: bool = False,
    scoring: str = "normalized",
) -> Evaluation:
    """Run a whole evaluation and write its reports into ``out``.

    ``scoring`` is one of :data:`SCORING_MODES`; ``held_apart`` keeps only the samples
    :func:`regard.scoring.calibrate.is_held_apart` says were kept out of fitting the shipped parameters.
    """
    gates = load_gates(gates_file) if gates_file else None
    scorer = scorer_for(scoring, engine)
    started = time.perf_counter()
    keep = held_apart_keep(location) if held_apart else None
    dataset = read_dataset(location, limit=limit, seed=options.seed, keep_subject=keep)
    source = TemplateSource(engine)
    system = source.identity()
    scorer.check_model(system["model_key"])
    templates = compute_templates(source, dataset, out / "cache", workers=workers, progress=progress)
    data = run_bias_audit(dataset, templates, system, options, scorer)
    data.report["system"]["scoring"]["requested"] = scoring
    data.report["dataset"]["limit"] = limit
    data.report["dataset"]["held_apart_only"] = held_apart
    data.report["dataset"]["held_apart_fold"] = (
        held_apart_fold(dataset_folder(location)) if held_apart else None
    )
    data.report["timing"] = {
        "templates_seconds": round(templates.seconds, 1),
        "templates_from_cache": templates.cached,
        "workers": workers,
    }
    if gates is not None and gates_file is not None:
        data.report["gates"] = check_gates(data.report, gates, str(gates_file))
    data.report["timing"]["total_seconds"] = round(time.perf_counter() - started, 1)
    jpath, hpath = write_report(data, out)
    return Evaluation(data, jpath, hpath)
