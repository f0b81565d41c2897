"""Compare two runs or experiments metric by metric, and check regression bounds (`METRIC:+PCT`)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from harness.errors import WarmbenchError
from harness.metrics import ALL_MODELS
from harness.report.load import RunInfo
from harness.report.table import ratio

_BOUND = re.compile(r"^(?P<metric>[a-z0-9_]+):(?P<sign>[+-])(?P<pct>\d+(\.\d+)?)%?$")


@dataclass(frozen=True)
class Bound:
    """Fail when `metric` moves more than `pct` percent in the bad direction given by `sign`.

    `p99_ttft_s:+10%` fails when the candidate is over 1.10x the base; `slo_attainment:-5%` when it
    is under 0.95x.
    """

    metric: str
    sign: str
    pct: float

    def crossed(self, r: float | None) -> bool:
        if r is None or math.isnan(r):
            return False
        return r > 1 + self.pct / 100 if self.sign == "+" else r < 1 - self.pct / 100

    def __str__(self) -> str:
        return f"{self.metric}:{self.sign}{self.pct:g}%"


def parse_bound(text: str, known: set[str]) -> Bound:
    """`METRIC:+PCT` or `METRIC:-PCT` (the % is optional); the metric must exist in the runs."""
    match = _BOUND.match(text.strip())
    if not match:
        raise WarmbenchError(f"--fail-if {text!r}: expected METRIC:+PCT or METRIC:-PCT, e.g. p99_ttft_s:+10%")
    if known and match["metric"] not in known:
        raise WarmbenchError(f"--fail-if {text!r}: unknown metric {match['metric']!r}; known: {', '.join(sorted(known))}")
    return Bound(match["metric"], match["sign"], float(match["pct"]))


def _key(run: RunInfo) -> str:
    """Match runs by system and full sweep point (seed included)."""
    return json.dumps({"system": run.system, **run.point}, sort_keys=True, default=str)


def pair_runs(base: list[RunInfo], candidate: list[RunInfo]) -> list[tuple[RunInfo, RunInfo]]:
    """Runs of both sides with the same system and sweep point; a single run on each side pairs as is."""
    if len(base) == 1 and len(candidate) == 1:
        return [(base[0], candidate[0])]
    by_key = {_key(r): r for r in candidate}
    pairs = [(b, by_key[_key(b)]) for b in base if _key(b) in by_key]
    if not pairs:
        raise WarmbenchError("the two sides share no run (same system and sweep point); nothing to compare")
    return pairs


def compare(base: list[RunInfo], candidate: list[RunInfo]) -> list[dict[str, Any]]:
    """One row per (paired run, model, metric): {system, point, model, metric, base, candidate, ratio}."""
    rows = []
    for b, c in pair_runs(base, candidate):
        for model in b.summary:
            if model not in c.summary:
                continue
            for metric, bv in b.summary[model].items():
                cv = c.summary[model].get(metric, math.nan)
                rows.append({"system": b.system, "point": b.point, "model": model, "metric": metric,
                             "base": bv, "candidate": cv, "ratio": ratio(cv, bv)})
    return rows


def failures(rows: list[dict[str, Any]], bounds: list[Bound]) -> list[dict[str, Any]]:
    """Rows whose ratio crosses a bound, each with the bound that it crossed."""
    out = []
    for bound in bounds:
        for row in rows:
            if row["metric"] == bound.metric and bound.crossed(row["ratio"]):
                out.append({**row, "bound": str(bound)})
    return out


def known_metrics(runs: list[RunInfo]) -> set[str]:
    return {m for r in runs for m in r.summary.get(ALL_MODELS, {})}
