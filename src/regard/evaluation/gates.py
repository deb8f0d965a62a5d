"""Release gates: limits on the audit's numbers, read from a TOML file.

::

    [[gate]]
    name = "FMR differential by race at the deployed threshold"
    metric = "fmr_max_over_geomean"
    grouping = "race"          # default: every grouping in the report
    at = "similarity80"        # "similarity80", "similarity60", "floor" or a target FMR such as "1e-4"
    max = 10                   # and/or min = ...
    # bound = "upper95"        # differentials only: the upper (or "lower95") end of the ratio's
    #                          # simultaneous 95% interval instead of the estimate
    # allow_missing = true     # pass when the number cannot be measured (default: fail)

Metrics: ``fmr_max_over_min``, ``fmr_max_over_geomean``, ``fnmr_max_over_min``,
``fnmr_max_over_geomean`` (per grouping); ``fmr``, ``fnmr`` (all pairs); ``worst_group_fmr``,
``worst_group_fnmr`` (highest estimable group rate); ``failure_to_acquire`` (worst group, or
all images with ``grouping = "all"``); ``fta_max_over_min``, ``fta_max_over_geomean`` (failure to
acquire, per grouping; ``at`` does not apply); ``fpir``, ``fnir`` (1:N); ``watchlist_matches``
(innocent probes matched). A gate whose number cannot be measured fails unless ``allow_missing`` is set.

A ratio of a few dozen false matches per group moves a lot between samples: ``bound = "upper95"``
gates a differential on the upper end of its simultaneous 95% interval (the disparity that the
data cannot rule out; :func:`regard.evaluation.metrics.differential_interval`), ``"lower95"`` on
the lower end (the disparity they demonstrate). An
audit run with ``--bootstrap 0`` has no intervals, so such a gate cannot be measured.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from regard.errors import InvalidParameter

DIFF_METRICS = {
    "fmr_max_over_min": ("fmr", "max_over_min"),
    "fmr_max_over_geomean": ("fmr", "max_over_geomean"),
    "fnmr_max_over_min": ("fnmr", "max_over_min"),
    "fnmr_max_over_geomean": ("fnmr", "max_over_geomean"),
}
FTA_METRICS = {"fta_max_over_min": "max_over_min", "fta_max_over_geomean": "max_over_geomean"}
POINT_METRICS = {"fmr", "fnmr", "worst_group_fmr", "worst_group_fnmr", "fpir", "fnir", "watchlist_matches"}
METRICS = set(DIFF_METRICS) | set(FTA_METRICS) | POINT_METRICS | {"failure_to_acquire"}
#: ``bound`` -> the end of a differential's simultaneous 95% interval it reads.
BOUNDS = {"upper95": 1, "lower95": 0}


def load_gates(path: Path) -> list[dict[str, Any]]:
    """The ``[[gate]]`` tables of a TOML file, checked."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidParameter(f"cannot read gates file {path}: {exc}") from exc
    gates = data.get("gate", [])
    if not isinstance(gates, list) or not gates:
        raise InvalidParameter(f"{path} defines no [[gate]] tables")
    for i, g in enumerate(gates):
        if not isinstance(g, dict):
            raise InvalidParameter(f"gate {i + 1} in {path} is not a table")
        if g.get("metric") not in METRICS:
            raise InvalidParameter(f"gate {i + 1}: metric must be one of {sorted(METRICS)}")
        if "max" not in g and "min" not in g:
            raise InvalidParameter(f"gate {i + 1}: give max, min or both")
        ratios = set(DIFF_METRICS) | set(FTA_METRICS)
        if "bound" in g and (g["metric"] not in ratios or g["bound"] not in BOUNDS):
            raise InvalidParameter(
                f"gate {i + 1}: bound must be one of {sorted(BOUNDS)} and needs a differential metric "
                f"({', '.join(sorted(ratios))})"
            )
        g.setdefault("name", f"gate {i + 1}: {g['metric']}")
    return gates


def _points(report: dict[str, Any], at: str) -> list[dict[str, Any]]:
    points: list[dict[str, Any]] = report.get("operating_points", [])
    if at in {"similarity80", "similarity60", "floor"}:
        return [p for p in points if p["kind"] == at]
    try:
        target = float(at)
    except ValueError as exc:
        raise InvalidParameter(
            f"gate 'at' must be similarity80, similarity60, floor or a target FMR, not {at!r}"
        ) from exc
    return [
        p for p in points if p["kind"] == "target" and abs(p["target_fmr"] - target) <= 1e-12 * max(1, target)
    ]


def _values(report: dict[str, Any], gate: dict[str, Any]) -> Iterator[tuple[str, float | None, str]]:
    """(where, value, reason when missing) for every place the gate applies."""
    metric = gate["metric"]
    grouping = gate.get("grouping")
    if metric == "failure_to_acquire":
        by = report["acquisition"]["by_group"]
        specs = [grouping] if grouping else [s for s in by if s != "all"] or ["all"]
        for spec in specs:
            if spec not in by:
                yield spec, None, f"no grouping {spec!r} in the report"
                continue
            rates = [(g, v["failure_to_acquire"]["rate"]) for g, v in by[spec].items()]
            rates = [(g, r) for g, r in rates if r is not None]
            if not rates:
                yield spec, None, "no images"
                continue
            g, r = max(rates, key=lambda x: x[1])
            yield f"{spec}: worst {g}", r, ""
        return
    if metric in FTA_METRICS:
        diffs = report["acquisition"].get("differentials", {})
        specs = [grouping] if grouping else list(diffs)
        if not specs:
            yield "failure to acquire", None, "the report has no groups"
        for spec in specs:
            d = diffs.get(spec, {}).get("failure_to_acquire")
            if d is None:
                yield f"failure to acquire, {spec}", None, f"no grouping {spec!r} in the report"
                continue
            yield _ratio(f"failure to acquire, {spec}", d, FTA_METRICS[metric], gate.get("bound"))
        return
    at = str(gate.get("at", "similarity80"))
    points = _points(report, at)
    if not points:
        yield at, None, f"operating point {at!r} was not measured"
        return
    p = points[0]
    where = p["label"]
    if metric in DIFF_METRICS:
        rate, key = DIFF_METRICS[metric]
        specs = [grouping] if grouping else list(p["differentials"])
        if not specs:
            yield where, None, "the report has no groups"
        for spec in specs:
            d = p["differentials"].get(spec)
            if d is None:
                yield f"{where}, {spec}", None, f"no grouping {spec!r} in the report"
                continue
            yield _ratio(f"{where}, {spec}", d[rate], key, gate.get("bound"))
    elif metric in {"fmr", "fnmr"}:
        r = p["global"][metric]
        yield where, (r["rate"] if r["estimable"] else None), r["note"]
    elif metric in {"worst_group_fmr", "worst_group_fnmr"}:
        rate = metric.removeprefix("worst_group_")
        specs = [grouping] if grouping else list(p["by_group"])
        for spec in specs:
            per = p["by_group"].get(spec, {})
            vals = [(g, v[rate]["rate"]) for g, v in per.items() if v[rate]["estimable"]]
            if not vals:
                yield f"{where}, {spec}", None, "no estimable group"
                continue
            g, r = max(vals, key=lambda x: x[1])
            yield f"{where}, {spec}: worst {g}", r, ""
    else:
        ident = report.get("identification", {}).get("operating_points", {}).get(p["label"])
        if ident is None:
            yield where, None, "1:N was not measured"
        elif metric == "watchlist_matches":
            yield where, float(ident["watchlist"]["matched"]), ""
        else:
            r = ident[metric]
            yield (
                where,
                (r["rate"] if r and r["trials"] else None),
                "no probes" if not r or not r["trials"] else "",
            )


def _ratio(where: str, d: dict[str, Any], key: str, bound: str | None) -> tuple[str, float | None, str]:
    """A differential's ratio, or one end of its simultaneous 95% interval (``bound``)."""
    if bound is None or d[key] is None:
        return where, d[key], d["note"]
    ci = (d.get("ci95_simultaneous") or {}).get(key)
    if ci is None:
        return f"{where} ({bound})", None, "no bootstrap interval (audit run with --bootstrap 0?)"
    return f"{where} ({bound})", float(ci[BOUNDS[bound]]), d["note"]


def check_gates(report: dict[str, Any], gates: list[dict[str, Any]], source: str) -> dict[str, Any]:
    """Evaluate every gate against ``report``; the result goes into the report under ``gates``."""
    results = []
    for gate in gates:
        lo, hi = gate.get("min"), gate.get("max")
        limit = " and ".join(
            x for x in (f">= {lo}" if lo is not None else "", f"<= {hi}" if hi is not None else "") if x
        )
        for where, value, reason in _values(report, gate):
            if value is None:
                ok = bool(gate.get("allow_missing", False))
                why = f"not measured: {reason}" if reason else "not measured"
            else:
                ok = (lo is None or value >= float(lo)) and (hi is None or value <= float(hi))
                why = "" if ok else f"{value:.4g} is outside {limit}"
            results.append(
                {
                    "name": gate["name"],
                    "metric": gate["metric"],
                    "where": where,
                    "value": value,
                    "limit_text": limit,
                    "passed": ok,
                    "reason": why,
                }
            )
    return {"file": source, "passed": all(r["passed"] for r in results), "results": results}
