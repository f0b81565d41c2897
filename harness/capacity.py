"""Capacity search: the highest rate each system serves within the SLO.

An experiment with a `[capacity]` table does not run its grid once: for each system and each other
sweep point it searches the rate parameter (`param`, e.g. `workload.params.total_rps`) between
`low` and `high`. It probes `high` first (passes: capacity "> high"), then `low` (fails: "< low"),
then bisects geometrically (the next rate is sqrt(passed * failed), rounded to a few significant
digits so run ids stay readable) until failed / passed - 1 < `tolerance`; the capacity is the highest
rate that passed. A probe is every seed of the experiment run at that rate; it passes when each
seed's `slo_attainment` (harness.metrics: share of *all* requests ok with TTFT and TPOT within the
SLO) reaches `attainment` (`rule = "every_seed"`, the default: the rate is served on every draw), or
with `rule = "mean"` when their mean does.

Every probe run is an ordinary run of the results store (`<experiment>/<system>_<param>-<rate>_..._seed-N`,
the rate part of its point and identity), so probes resume like any run, are never overwritten
and can be reported; the search is deterministic, so a second invocation finds every probe done.
The search assumes attainment does not rise with the rate; every probe and its attainment is in
`capacity.json` so a reader can check that.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, model_validator

from harness.contracts.errors import InputError
from harness.contracts.files import write_json
from harness.store import CAPACITY_FILE

if TYPE_CHECKING:
    from harness.executors import Executor
    from harness.experiment import ExperimentConfig, RunSpec
    from harness.runner import RunOutcome

SCHEMA_VERSION = 1
#: Prefixes a searched parameter may have: a value shared by every run of the point.
PARAM_PREFIXES: tuple[str, ...] = ("workload.params.", "options.")


class CapacityConfig(BaseModel):
    """The `[capacity]` table of an experiment file."""

    model_config = ConfigDict(extra="forbid", strict=True)  # as the experiment's: "2" or true is no number

    param: str = "workload.params.total_rps"
    low: PositiveFloat
    high: PositiveFloat
    attainment: float = Field(0.99, gt=0, le=1)
    tolerance: float = Field(0.05, gt=0, le=100)
    rule: Literal["every_seed", "mean"] = "every_seed"

    @model_validator(mode="after")
    def _ordered(self) -> CapacityConfig:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite")
        if self.high <= self.low:
            raise ValueError(f"high ({self.high:g}) must be above low ({self.low:g})")
        return self


def check(config: ExperimentConfig) -> None:
    """The searched parameter is set in the file to one number (not a sweep list): errors name the key."""
    cap = config.capacity
    if cap is None:
        return
    source = config._source or None
    prefix = next((p for p in PARAM_PREFIXES if cap.param.startswith(p) and len(cap.param) > len(p)), None)
    if prefix is None:
        raise InputError(f"{cap.param!r} is not a parameter the search can set; give "
                         f"{' or '.join(p + 'NAME' for p in PARAM_PREFIXES)}", file=source, field="capacity.param")
    name = cap.param[len(prefix):]
    table = config.workload.params if prefix == "workload.params." else config.options
    if name not in table:
        raise InputError(f"{cap.param} is not set in the file; set it to a number (the search replaces it)",
                         file=source, field="capacity.param")
    value = table[name]
    if isinstance(value, list):
        raise InputError(f"{cap.param} is a sweep list; the searched parameter takes one number",
                         file=source, field=cap.param)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{cap.param} = {value!r} is not a number, so it cannot be searched",
                         file=source, field=cap.param)


def with_rate(config: ExperimentConfig, rate: float) -> ExperimentConfig:
    """A copy of the experiment with the searched parameter set to `rate`."""
    cap = config.capacity
    assert cap is not None
    out = config.model_copy(deep=True)
    out._source = config._source
    if cap.param.startswith("workload.params."):
        out.workload.params[cap.param[len("workload.params."):]] = float(rate)
    else:
        out.options[cap.param[len("options."):]] = float(rate)
    return out


def point_key(config: ExperimentConfig) -> str:
    """The name the rate has in a probe's point and run id: `total_rps`, or the full dotted
    parameter where a swept axis already has that short name."""
    from harness.experiment import grid

    assert config.capacity is not None
    short = config.capacity.param.rsplit(".", 1)[-1]
    clash = any(short in spec.point for spec in grid(with_rate(config, config.capacity.low)))
    return config.capacity.param if clash else short


def probe_specs(config: ExperimentConfig, rate: float, key: str | None = None) -> list[RunSpec]:
    """Every run of a probe at `rate` (all systems, points and seeds); the rate is part of the point."""
    from harness.experiment import grid, run_id

    key = key or point_key(config)
    out = []
    for spec in grid(with_rate(config, rate)):
        point = {"system": spec.point["system"], key: float(rate),
                 **{k: v for k, v in spec.point.items() if k != "system"}}
        out.append(dataclasses.replace(spec, point=point, run_id=run_id(point)))
    return out


def group_of(spec: RunSpec, key: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """(system label, the other swept values): one search each."""
    return spec.point["system"], tuple((k, v) for k, v in spec.point.items() if k not in ("system", key, "seed"))


def round_between(low: float, high: float) -> float:
    """The geometric midpoint, rounded to the fewest significant digits (3 or more) that keep it inside."""
    mid = math.sqrt(low * high)
    for digits in range(3, 17):
        rounded = float(f"{mid:.{digits}g}")
        if low < rounded < high:
            return rounded
    return mid


def max_probes(low: float, high: float, tolerance: float) -> int:
    """Probes a search needs at most: high, low, then halving log(high/low) until under log(1 + tol)."""
    steps = math.log(high / low) / math.log1p(tolerance)
    return 2 + max(0, math.ceil(math.log2(steps))) + 1  # +1: rounding the midpoint can cost one more


@dataclass
class Probe:
    rate: float
    #: Per seed: run id, status and slo_attainment (None where not measured).
    runs: list[dict[str, Any]]
    attainment: float | None
    passed: bool | None  # None: a run failed or was cut short, so the search cannot go on

    def to_json(self) -> dict[str, Any]:
        return {"rate": self.rate, "passed": self.passed, "attainment": self.attainment, "runs": self.runs}


@dataclass
class Search:
    """One system at one sweep point: the bracketing state of its bisection."""

    system: str
    point: dict[str, Any]
    low: float
    high: float
    tolerance: float
    probes: list[Probe] = field(default_factory=list)
    passed: float | None = None
    failed: float | None = None
    error: str = ""

    def next_rate(self) -> float | None:
        """The next rate to probe, or None when the search is over."""
        if self.error:
            return None
        if not self.probes:
            return self.high
        if self.failed is None:  # high passed
            return None
        if self.passed is None:
            return self.low if self.failed > self.low else None
        if self.failed / self.passed - 1 < self.tolerance:
            return None
        return round_between(self.passed, self.failed)

    def record(self, probe: Probe) -> None:
        self.probes.append(probe)
        if probe.passed is None:
            self.error = "; ".join(f"{r['run_id']}: {r['status']} {r.get('error', '')}".strip()
                                   for r in probe.runs if r["status"] not in ("complete", "skipped")) or "no runs"
        elif probe.passed:
            self.passed = probe.rate
        else:
            self.failed = probe.rate

    @property
    def status(self) -> str:
        if self.error:
            return "error"
        if self.next_rate() is not None:
            return "unfinished"
        if self.failed is None:
            return "above_high"
        if self.passed is None:
            return "below_low"
        return "found"

    def bounds(self) -> tuple[float, float]:
        """The capacity lies in [lower, upper): from the bracket, 0 and inf where open."""
        return (self.passed if self.passed is not None else 0.0,
                self.failed if self.failed is not None else math.inf)

    def text(self) -> str:
        status = self.status
        if status == "found":
            return f"{self.passed:.4g}"
        return {"above_high": f"> {self.high:g}", "below_low": f"< {self.low:g}"}.get(status, status)


def probe_outcome(rate: float, outcomes: list[RunOutcome], target: float, rule: str) -> Probe:
    """Judge one probe from its seeds' runs (complete or skipped: their summary's slo_attainment)."""
    runs, values = [], []
    ok = bool(outcomes)
    for o in outcomes:
        att = o.summary.get("slo_attainment") if o.status in ("complete", "skipped") else None
        att = None if att is None or (isinstance(att, float) and math.isnan(att)) else float(att)
        runs.append({"seed": o.spec.seed, "run_id": o.spec.run_id, "status": o.status, "slo_attainment": att,
                     **({"error": o.error} if o.error else {})})
        if o.status not in ("complete", "skipped"):
            ok = False
        values.append(att if att is not None else 0.0)  # nothing measured: nothing served within the SLO
    if not ok:
        return Probe(rate, runs, None, None)
    value = min(values) if rule == "every_seed" else sum(values) / len(values)
    return Probe(rate, runs, value, value >= target)


def ratio(cand: Search, base: Search) -> tuple[float | None, str]:
    """Capacity of `cand` over `base`: a number when both were found, else a bound ("> 2.5x") or n/a."""
    if cand.status == "found" and base.status == "found":
        assert cand.passed is not None and base.passed is not None  # "found": some rate passed
        r = cand.passed / base.passed
        return r, f"{r:.2f}x"
    (c_lo, c_hi), (b_lo, b_hi) = cand.bounds(), base.bounds()
    if cand.status in ("error", "unfinished") or base.status in ("error", "unfinished"):
        return None, "n/a"
    lower = c_lo / b_hi if b_hi < math.inf else 0.0
    upper = c_hi / b_lo if b_lo > 0 else math.inf
    if lower > 0 and upper == math.inf:
        return None, f"> {lower:.2f}x"
    if lower == 0 and upper < math.inf:
        return None, f"< {upper:.2f}x"
    if lower > 0:
        return None, f"{lower:.2f}-{upper:.2f}x"
    return None, "n/a"


def searches_for(config: ExperimentConfig) -> list[Search]:
    """One search per system and other sweep point, in the grid's order."""
    cap = config.capacity
    assert cap is not None
    key = point_key(config)
    out: dict[Any, Search] = {}
    for spec in probe_specs(config, cap.low, key):
        system, rest = group_of(spec, key)
        out.setdefault((system, rest), Search(system, dict(rest), cap.low, cap.high, cap.tolerance))
    return list(out.values())


def baseline_label(config: ExperimentConfig, searches: list[Search]) -> str | None:
    labels = list(dict.fromkeys(s.system for s in searches))
    return config.baseline if config.baseline in labels else (labels[0] if labels else None)


def document(config: ExperimentConfig, searches: list[Search], *, complete: bool,
             baseline: str | None = None) -> dict[str, Any]:
    """What `capacity.json` holds: the search's settings, then one entry per system and point."""
    cap = config.capacity
    assert cap is not None
    baseline = baseline if baseline is not None else baseline_label(config, searches)
    base_at = {tuple(sorted(s.point.items(), key=str)): s for s in searches if s.system == baseline}
    results = []
    for s in searches:
        base = base_at.get(tuple(sorted(s.point.items(), key=str)))
        r, r_text = (1.0, "1.00x") if base is s else ratio(s, base) if base is not None else (None, "n/a")
        results.append({"system": s.system, "point": s.point, "status": s.status, "capacity": s.passed,
                        "capacity_text": s.text(), "passed": s.passed, "failed": s.failed, "ratio": r,
                        "ratio_text": r_text, "error": s.error or None,
                        "probes": [p.to_json() for p in s.probes]})
    return {"schema_version": SCHEMA_VERSION, "experiment": config.name, "complete": complete,
            "param": cap.param, "low": cap.low, "high": cap.high, "attainment": cap.attainment,
            "tolerance": cap.tolerance, "rule": cap.rule, "seeds": list(config.seeds),
            "slo": config.slo.model_dump(), "baseline": baseline, "results": results}


class CapacityInterrupted(KeyboardInterrupt):
    """Ctrl-C during a probe: `grid` is the experiment's GridInterrupted, `document` what is known."""

    def __init__(self, grid: Any, document: dict[str, Any]) -> None:
        super().__init__("interrupted")
        self.grid, self.document = grid, document


def search(config: ExperimentConfig, results_dir: Path, *, jobs: int | Executor = 1, source: Path | None = None,
           on_start: Callable[[RunSpec], None] = lambda s: None,
           on_done: Callable[[RunOutcome], None] = lambda o: None,
           on_round: Callable[[list[Search]], None] = lambda s: None,
           baseline: str | None = None) -> tuple[Path, list[Search], dict[str, Any]]:
    """Run every system's search into `results_dir/<name>/`; all searches probe in lockstep, each
    round's runs in one pool; ratios are against `baseline` (default: the experiment's). Returns
    the experiment dir, the searches and capacity.json's content. Ctrl-C raises
    CapacityInterrupted after writing what is known (`complete: false`)."""
    from harness import runner

    cap = config.capacity
    assert cap is not None
    src = config._source or str(source or "")
    exp_dir = Path(results_dir) / config.name
    searches = searches_for(config)
    key = point_key(config)
    code = runner.current_code()
    try:
        exp_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot write the results there: {exc.strerror or exc}", file=str(exp_dir),
                         field="--results") from None
    points: dict[str, Any] = {}  # run id -> point, in the order the runs were first probed
    with runner.exclusive(exp_dir):
        while True:
            next_rates = [(s, s.next_rate()) for s in searches]
            wanted = [(s, r) for s, r in next_rates if r is not None]
            if not wanted:
                break
            by_rate: dict[float, list[RunSpec]] = {}
            for _, rate in wanted:
                if rate not in by_rate:
                    by_rate[rate] = probe_specs(config, rate, key)
            specs = [spec for s, rate in wanted for spec in by_rate[rate] if group_of(spec, key) ==
                     (s.system, tuple(s.point.items()))]
            workloads_by_id = runner.resolve_workloads(specs, src)
            for spec in specs:
                points.setdefault(spec.run_id, spec.point)
            runner.write_experiment_file(exp_dir, config, source, points)
            try:
                _, outcomes = runner.run_grid(specs, exp_dir, code, workloads_by_id, config.backend, jobs,
                                           on_start, on_done)
            except runner.GridInterrupted as stop:
                doc = document(config, searches, complete=False, baseline=baseline)
                write_json(exp_dir / CAPACITY_FILE, doc)
                raise CapacityInterrupted(stop, doc) from None
            for s, rate in wanted:
                mine = [o for o in outcomes if o.spec.point[key] == rate
                        and group_of(o.spec, key) == (s.system, tuple(s.point.items()))]
                s.record(probe_outcome(rate, mine, cap.attainment, cap.rule))
            write_json(exp_dir / CAPACITY_FILE, document(config, searches, complete=False, baseline=baseline))
            on_round(searches)
    doc = document(config, searches, complete=True, baseline=baseline)
    write_json(exp_dir / CAPACITY_FILE, doc)
    return exp_dir, searches, doc


_WHERE = re.compile(r"^file .*?(, row \d+)?(, field '[^']*')?: ")


def check_bounds(config: ExperimentConfig, source: Path | str | None) -> None:
    """Every run at `low` and at `high` is a valid run (system, options, workload bounds): a rate in
    between then is too. An error names `capacity.low` / `capacity.high`."""
    from harness.validate import check_runs

    cap = config.capacity
    assert cap is not None
    for which, rate in (("low", cap.low), ("high", cap.high)):
        try:
            check_runs(probe_specs(config, rate), source)
        except InputError as exc:
            if exc.field and exc.field.endswith(cap.param.rsplit(".", 1)[-1]):
                message = _WHERE.sub("", str(exc))
                raise InputError(f"{cap.param} = {rate:g} (the search's {which}): {message}",
                                 file=str(source) if source else None, field=f"capacity.{which}") from None
            raise
