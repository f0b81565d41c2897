"""The statistical gate: decide a `--fail-if` bound on the paired interval over seeds.

Per (system, sweep point without the seed, model, the bound's metric) the runs of both sides with
the same seed pair (the same workload draw); each pair gives a ratio candidate / base; their
interval is the report's paired ratio CI (`harness.metrics.paired_ratio_ci`: a Student t interval
on the mean log ratio) at the chosen confidence. For a rise bound METRIC:+PCT, limit L = 1 + PCT/100:

- fail: the whole interval lies above L (low > L): worse than the bound allows, decided;
- pass: the whole interval lies at or below L (high <= L): no worse than PCT, decided;
- inconclusive: the interval straddles L, fewer pairs than the minimum, or a ratio with no log
  (0 or a negative value on one side only): the seeds cannot decide.

A fall bound METRIC:-PCT mirrors it (L = 1 - PCT/100; fail when high < L, pass when low >= L).
Seeds where either side has no value are left out: a value the candidate lost is compare's
`unmeasurable` problem, one the base never had is nothing to hold against. Pairs equal on both
sides (0 and 0 included) are a ratio of 1. The gate's outcome: a trust problem or a fail anywhere
fails; else an inconclusive row anywhere is inconclusive; else it passes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from harness.contracts.errors import WarmbenchError
from harness.metrics import paired_ratio_ci
from harness.report.compare import Bound, pair_runs
from harness.report.load import RunInfo

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
#: Two-sided confidence of the interval unless --confidence says otherwise (the report's ± is 95% too).
DEFAULT_CONFIDENCE = 0.95
#: Fewest paired seeds a decision takes: a t interval needs two.
MIN_SEEDS = 2


@dataclass(frozen=True)
class Interval:
    """What the seeds say about one ratio: n pairs, geometric mean ratio, its interval, a decision."""

    n: int
    ratio: float | None  # exp(mean log ratio), the geometric mean ratio: the interval's centre
    low: float | None
    high: float | None
    decision: str | None      # pass | fail | inconclusive; None without a bound
    why: str


@dataclass(frozen=True)
class Decision:
    """One row of the gate: where, which bound, over which seeds, and what the interval decided."""

    system: str
    point: dict[str, Any]     # the sweep point without its seed
    model: str
    metric: str
    bound: str | None
    seeds: list[Any]
    base_mean: float
    candidate_mean: float
    n: int
    ratio: float | None       # geometric mean of candidate / base over the seeds
    low: float | None
    high: float | None
    decision: str | None
    why: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(base: list[float], candidate: list[float], bound: Bound | None, *,
           confidence: float = DEFAULT_CONFIDENCE, min_seeds: int = MIN_SEEDS) -> Interval:
    """The paired interval of candidate / base over seeds (same order) and, given a bound, its decision."""
    pairs = [(1.0, 1.0) if b == c else (b, c) for b, c in zip(base, candidate) if _finite(b) and _finite(c)]
    n = len(pairs)
    if n == 0:
        return Interval(0, None, None, None, INCONCLUSIVE if bound else None, "no seed measured on both sides")
    no_log = sum(1 for b, c in pairs if b <= 0 or c <= 0)
    if no_log:
        return Interval(n, None, None, None, INCONCLUSIVE if bound else None,
                        f"{no_log} of {n} seed(s) have no ratio (0 or negative on one side only); "
                        "try --mode per-seed")
    centre = math.exp(sum(math.log(c / b) for b, c in pairs) / n)
    need = max(MIN_SEEDS, min_seeds)
    if n < need:
        return Interval(n, centre, None, None, INCONCLUSIVE if bound else None,
                        f"{n} paired seed(s); an interval needs at least {need} (--min-seeds)")
    ci = paired_ratio_ci([c for _, c in pairs], [b for b, _ in pairs], confidence=confidence)
    assert ci is not None  # n >= 2 positive finite pairs always have one
    low, high = ci
    if bound is None:
        return Interval(n, centre, low, high, None, "")
    limit = 1 + bound.pct / 100 if bound.sign == "+" else 1 - bound.pct / 100
    span = f"the {confidence:.0%} interval [{low:.3f}, {high:.3f}] over {n} seeds"
    if (low > limit) if bound.sign == "+" else (high < limit):
        return Interval(n, centre, low, high, FAIL, f"{span} lies wholly beyond {limit:.3f}")
    if (high <= limit) if bound.sign == "+" else (low >= limit):
        return Interval(n, centre, low, high, PASS, f"{span} lies within {limit:.3f}")
    return Interval(n, centre, low, high, INCONCLUSIVE,
                    f"{span} straddles {limit:.3f}: the seeds cannot decide (more seeds narrow it)")


def decisions(base: list[RunInfo], candidate: list[RunInfo], bounds: list[Bound], metrics: Sequence[str] = (), *,
              confidence: float = DEFAULT_CONFIDENCE, min_seeds: int = MIN_SEEDS) -> list[Decision]:
    """A Decision per (system, point, model, bound) and an undecided row per other metric in `metrics`."""
    by_metric: dict[str, list[Bound | None]] = {}
    for rule in bounds:
        by_metric.setdefault(rule.metric, []).append(rule)
    for metric in metrics:
        by_metric.setdefault(metric, [None])
    out = []
    for pairs in _groups(pair_runs(base, candidate)):
        first = pairs[0][0]
        point = {k: v for k, v in first.point.items() if k != "seed"}
        models = list(dict.fromkeys(m for b, c in pairs for m in b.summary if m in c.summary))
        for model in models:
            for metric, metric_bounds in by_metric.items():
                seeds, bv, cv = [], [], []
                for b, c in pairs:
                    if model in b.summary and model in c.summary:
                        seeds.append(b.point.get("seed"))
                        bv.append(b.summary[model].get(metric, math.nan))
                        cv.append(c.summary[model].get(metric, math.nan))
                if not any(_finite(v) for v in bv):
                    continue  # the base never measured it: nothing to hold the candidate to
                both = [(b, c) for b, c in zip(bv, cv) if _finite(b) and _finite(c)]
                base_mean, cand_mean = _mean([b for b, _ in both]), _mean([c for _, c in both])
                for bound in metric_bounds:
                    iv = decide(bv, cv, bound, confidence=confidence, min_seeds=min_seeds)
                    out.append(Decision(first.system, point, model, metric, str(bound) if bound else None, seeds,
                                        base_mean, cand_mean, iv.n, iv.ratio, iv.low, iv.high, iv.decision, iv.why))
    return out


def outcome(problem_count: int, rows: list[Decision]) -> str:
    """fail on any trust problem or failed bound; else inconclusive on any undecided bound; else pass."""
    if problem_count or any(d.decision == FAIL for d in rows):
        return FAIL
    return INCONCLUSIVE if any(d.decision == INCONCLUSIVE for d in rows) else PASS


def select_seeds(runs: list[RunInfo], seeds: list[int], side: str) -> list[RunInfo]:
    """The runs of the listed seeds; a listed seed that `side` never ran is bad input."""
    have = {r.point.get("seed") for r in runs}
    absent = [s for s in seeds if s not in have]
    if absent:
        shown = ", ".join(str(s) for s in sorted(have, key=str)) or "none"
        raise WarmbenchError(f"--seeds: seed(s) {', '.join(map(str, absent))} not among the {side}'s runs "
                             f"(its seeds: {shown})")
    return [r for r in runs if r.point.get("seed") in seeds]


def _groups(pairs: list[tuple[RunInfo, RunInfo]]) -> list[list[tuple[RunInfo, RunInfo]]]:
    """Pairs by system and sweep point without the seed, in first-seen order."""
    out: dict[str, list[tuple[RunInfo, RunInfo]]] = {}
    for b, c in pairs:
        key = json.dumps({"system": b.system, **{k: v for k, v in b.point.items() if k != "seed"}},
                         sort_keys=True, default=str)
        out.setdefault(key, []).append((b, c))
    return list(out.values())


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan
