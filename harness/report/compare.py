"""Compare two runs or experiments metric by metric, and gate a candidate against a base.

The gate passes only when every bound holds *and* the candidate is trustworthy. It fails (exit 1,
one line per problem) when:

- a base run has no candidate run with the same system and sweep point (`missing`), or a run in
  the candidate's own grid (experiment.json) is not on disk;
- a candidate run failed, is incomplete, or mostly failed (manifest `mostly_failed`; for older
  manifests: more than half of its requests not ok, or no requests at all);
- a base run is failed, incomplete or mostly failed: there is nothing trustworthy to compare with;
- a bound's metric has a value on the base but none (null / NaN) on the candidate: a metric that
  became unmeasurable does not "hold";
- the two sides replayed different workloads (manifest `workload_sha256`, else the older
  `workload.sha256`), unless the caller accepts it (`allow_workload_change`). Where the two
  manifests share no workload hash, or are of different schema versions (whose hashes come from
  different functions), the check cannot be made, and a note says so.

Pairing: runs pair by system and full sweep point (seed included); a single run on each side
pairs as is (its workload and status still checked). Candidate runs with no base counterpart
are listed as notes, not failures. Two runs with one key on the same side are ambiguous: bad input.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from harness.contracts.errors import WarmbenchError
from harness.contracts.result import REQUEST_COLUMNS, empty_table
from harness.metrics import ALL_MODELS, metrics
from harness.report.load import RunInfo
from harness.report.table import ratio
from harness.store import COMPLETE

_BOUND = re.compile(r"^(?P<metric>[a-z][a-z0-9_]*):(?P<sign>[+-])(?P<pct>[0-9]{1,6}(\.[0-9]{1,6})?)%?$")
#: The largest rise a bound may allow (x101); a fall can be at most 99.999...% (to zero never "crosses").
MAX_RISE_PCT = 10_000.0
#: Manifest keys holding a hash of the replayed request table, newest first.
WORKLOAD_HASH_KEYS: tuple[tuple[str, ...], ...] = (("workload_sha256",), ("workload", "sha256"))


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


@dataclass(frozen=True)
class Problem:
    """Why a candidate cannot pass, whatever its numbers: one line for a person, fields for a script."""

    kind: str  # missing | candidate_failed | candidate_incomplete | candidate_mostly_failed | base_failed |
    #            base_incomplete | base_mostly_failed | unmeasurable | workload_changed
    run_id: str
    system: str
    point: dict[str, Any]
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_bound(text: str, known: set[str]) -> Bound:
    """`METRIC:+PCT` or `METRIC:-PCT` (the % is optional); the metric must be one the runs record.

    PCT is a plain decimal: a rise up to MAX_RISE_PCT, a fall under 100% (a fall of 100% or more
    can never be crossed by a metric that is not negative, so such a bound would always hold).
    """
    match = _BOUND.match(text.strip())
    if not match:
        raise WarmbenchError(f"--fail-if {text!r}: expected METRIC:+PCT or METRIC:-PCT with PCT a plain number, "
                             "e.g. p99_ttft_s:+10%")
    pct = float(match["pct"])
    if match["sign"] == "+" and pct > MAX_RISE_PCT:
        raise WarmbenchError(f"--fail-if {text!r}: a rise of more than {MAX_RISE_PCT:g}% is no bound")
    if match["sign"] == "-" and pct >= 100:
        raise WarmbenchError(f"--fail-if {text!r}: a fall of 100% or more can never be crossed; use less than 100%")
    if match["metric"] not in known:
        raise WarmbenchError(f"--fail-if {text!r}: unknown metric {match['metric']!r}; known: {', '.join(sorted(known))}")
    return Bound(match["metric"], match["sign"], pct)


def _key(run: RunInfo) -> str:
    """Match runs by system and full sweep point (seed included)."""
    return json.dumps({"system": run.system, **run.point}, sort_keys=True, default=str)


def _by_key(runs: list[RunInfo], side: str) -> dict[str, RunInfo]:
    out: dict[str, RunInfo] = {}
    for run in runs:
        other = out.setdefault(_key(run), run)
        if other is not run:
            raise WarmbenchError(f"{side}: runs {other.path} and {run.path} have the same system and sweep point; "
                                 "point compare at one experiment or run")
    return out


def pair_runs(base: list[RunInfo], candidate: list[RunInfo]) -> list[tuple[RunInfo, RunInfo]]:
    """Runs of both sides with the same system and sweep point; a single run on each side pairs as is."""
    if len(base) == 1 and len(candidate) == 1:
        return [(base[0], candidate[0])]
    by_key = _by_key(candidate, "candidate")
    pairs = [(b, by_key[k]) for k, b in _by_key(base, "base").items() if k in by_key]
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


def problems(base: list[RunInfo], candidate: list[RunInfo], bounds: list[Bound], *,
             candidate_grid_missing: Sequence[str] = (), allow_workload_change: bool = False) -> list[Problem]:
    """Everything that makes the candidate untrustworthy whatever its numbers (see the module docstring)."""
    pairs = pair_runs(base, candidate)
    paired = {id(b) for b, _ in pairs}
    out = [_problem("missing", b, f"base run {b.run_id} ({_where(b)}) has no candidate run")
           for b in base if id(b) not in paired]
    said = {p.run_id for p in out}
    out += [Problem("missing", run_id, "", {}, f"candidate run {run_id} is in its experiment's grid but not on disk")
            for run_id in candidate_grid_missing if run_id not in said]
    for b, c in pairs:
        found = _state_problems(b, "base") + _state_problems(c, "candidate")
        hashes = _workload_hashes(b, c)
        if hashes and hashes[0] != hashes[1] and not allow_workload_change:
            found.append(_problem("workload_changed", c, f"{_where(c)}: the workloads differ (base {hashes[0][:12]}, "
                                  f"candidate {hashes[1][:12]}); rerun on the same workload or pass "
                                  "--allow-workload-change"))
        if not found:
            found = _unmeasurable(b, c, bounds)
        out += found
    return out


def notes(base: list[RunInfo], candidate: list[RunInfo]) -> list[str]:
    """What a reader should know that does not fail the gate: extra candidate runs, unchecked workloads."""
    pairs = pair_runs(base, candidate)
    paired = {id(c) for _, c in pairs}
    out = [f"candidate run {c.run_id} ({_where(c)}) has no base run; not compared" for c in candidate
           if id(c) not in paired]
    unknown = [c.run_id for b, c in pairs if _workload_hashes(b, c) is None]
    if unknown:
        out.append(f"workloads not checked for {len(unknown)} of {len(pairs)} run pair(s): their manifests record no "
                   f"workload hash of one schema version ({', '.join(unknown[:3])}{', ...' if len(unknown) > 3 else ''})")
    out += [f"{_where(c)}: the workloads differ (accepted with --allow-workload-change)" for b, c in pairs
            if (hashes := _workload_hashes(b, c)) and hashes[0] != hashes[1]]
    return out


def known_metrics(runs: list[RunInfo]) -> set[str]:
    """Every metric a run can record, plus any other the runs' summaries hold."""
    return set(metrics(empty_table(REQUEST_COLUMNS))) | {m for r in runs for s in r.summary.values() for m in s}


def _state_problems(run: RunInfo, side: str) -> list[Problem]:
    if run.state != COMPLETE:
        why = f": {run.manifest.get('error')}" if run.manifest.get("error") else ""
        tail = "" if side == "candidate" else "; nothing trustworthy to compare with"
        return [_problem(f"{side}_{run.state}", run, f"{side} run {run.run_id} ({_where(run)}) is {run.state}{why}{tail}")]
    if run.mostly_failed:
        counts = run.request_counts
        said = (f"{counts[0] - counts[1]:.0f} of {counts[0]:.0f} requests not ok" if counts and counts[0]
                else "no requests" if counts else "request counts not recorded")
        return [_problem(f"{side}_mostly_failed", run, f"{side} run {run.run_id} ({_where(run)}) mostly failed ({said})")]
    return []


def _unmeasurable(b: RunInfo, c: RunInfo, bounds: list[Bound]) -> list[Problem]:
    """A bound's metric measured on the base but null / NaN (or the model absent) on the candidate."""
    out = []
    for metric in dict.fromkeys(bound.metric for bound in bounds):
        lost = [model for model, values in b.summary.items() if _finite(values.get(metric))
                and not _finite(c.summary.get(model, {}).get(metric))]
        if lost:
            models = "all models" if lost == [ALL_MODELS] else "model(s) " + ", ".join(lost)
            out.append(_problem("unmeasurable", c, f"{_where(c)}: {metric} has no value on the candidate for {models} "
                                "(the base has one)"))
    return out


def _workload_hashes(b: RunInfo, c: RunInfo) -> tuple[str, str] | None:
    """(base, candidate) workload hash under the newest key both manifests record; None if they share none.

    Hashes of different manifest schema versions (none recorded: 1) come from different hash
    functions, so they are not compared: an upgrade must not read as a changed workload.
    """
    if (b.manifest.get("schema_version") or 1) != (c.manifest.get("schema_version") or 1):
        return None
    for path in WORKLOAD_HASH_KEYS:
        base_hash, candidate_hash = _dig(b.manifest, path), _dig(c.manifest, path)
        if base_hash and candidate_hash:
            return base_hash, candidate_hash
    return None


def _dig(obj: Any, path: tuple[str, ...]) -> str | None:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj if isinstance(obj, str) else None


def _finite(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def _where(run: RunInfo) -> str:
    return ", ".join([run.system, *(f"{k}={v}" for k, v in run.point.items())])


def _problem(kind: str, run: RunInfo, message: str) -> Problem:
    return Problem(kind, run.run_id, run.system, run.point, message)
