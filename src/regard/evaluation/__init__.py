"""Bias audits and evaluation reports (``regard evaluate``).

:func:`evaluate` reads a labelled folder or pairs file, computes (or loads cached) templates with
a face engine, measures verification and identification error rates globally and per group, and
writes ``report.json`` and a self-contained ``report.html``. See ``docs/evaluation.md``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regard.calibrate import CalibrationTable, default_table
from regard.evaluation.audit import AuditData, AuditOptions, run_audit
from regard.evaluation.dataset import Progress, TemplateSource, compute_templates, read_dataset
from regard.evaluation.gates import check_gates, load_gates
from regard.evaluation.report import write_report

__all__ = ["AuditOptions", "Evaluation", "evaluate", "shipped_table"]


@dataclass(frozen=True)
class Evaluation:
    data: AuditData
    json_path: Path
    html_path: Path

    @property
    def gates_passed(self) -> bool:
        gates: dict[str, Any] | None = self.data.report.get("gates")
        return True if gates is None else bool(gates["passed"])


def shipped_table() -> CalibrationTable | None:
    """The calibration table shipped with regard, or None when it is not installed."""
    try:
        return default_table()
    except (OSError, KeyError, ValueError):
        return None


def evaluate(
    location: Path,
    out: Path,
    engine: object,
    options: AuditOptions,
    *,
    limit: int | None = None,
    gates_file: Path | None = None,
    workers: int = 1,
    progress: Progress | None = None,
    held_apart: bool = False,
) -> Evaluation:
    """Run a whole evaluation and write its reports into ``out``."""
    gates = load_gates(gates_file) if gates_file else None
    started = time.perf_counter()
    keep: Callable[[str], bool] | None = None
    if held_apart:
        from regard.calibrate import held_apart as held

        keep = held
    dataset = read_dataset(location, limit=limit, seed=options.seed, keep_subject=keep)
    source = TemplateSource(engine)
    templates = compute_templates(source, dataset, out / "cache", workers=workers, progress=progress)
    table = shipped_table()
    data = run_audit(dataset, templates, source.identity(), options, table)
    data.report["dataset"]["limit"] = limit
    data.report["dataset"]["subjects_held_apart_from_calibration_only"] = held_apart
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
