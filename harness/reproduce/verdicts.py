"""How a claim is judged: the verdict rules, the table row they fill, and reading the runs they judge.

Verdict rules (stated in the report):
- a ratio claim ("up to 50.8x", "2.5x"): reproduced when ours is within a factor REPRODUCED_FACTOR
  of the paper's, same direction when ours is on the same side of 1 (WarmServe better), else not;
- a share claim (ablation, % of TTFT < 100 ms): reproduced within SHARE_TOLERANCE_PP percentage
  points; same direction when the variant is at least MIN_DROP_PP below full WarmServe in ours,
  as it is below in the paper;
- the window claim: reproduced when 5 min has the highest fast share on both traces; same
  direction when it beats both 3 and 40 min there; else not reproduced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.report.load import RunInfo, load_runs

#: Reproduced: ours within this factor of the paper's ratio (either way).
REPRODUCED_FACTOR = 2.0
#: Reproduced: a share within this many percentage points of the paper's.
SHARE_TOLERANCE_PP = 10.0
#: Same direction: a variant at least this many points below full WarmServe (smaller moves are
#: within the run-to-run noise of one seed: see the seed spreads in the table).
MIN_DROP_PP = 1.0
REPRODUCED, SAME, NOT_REPRODUCED, NOT_CHECKABLE, NOT_EXPRESSIBLE, NO_DATA = (
    "reproduced", "same direction", "not reproduced", "not checkable", "not expressible", "no data")


@dataclass
class Row:
    """One line of the reproduction table."""

    claim: str
    what: str
    paper: str
    ours: str
    ratio: str
    verdict: str
    why: str
    #: Numbers behind the text, for tests, sensitivity and figures.
    paper_value: float | None = None
    ours_value: float | None = None
    spread: tuple[float, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- verdict rules

def ratio_verdict(paper: float, ours: float | None, factor: float = REPRODUCED_FACTOR) -> str:
    """Reproduced within `factor` of the paper's ratio; same direction on the same side of 1."""
    if ours is None or not math.isfinite(ours) or ours <= 0:
        return NO_DATA
    if 1.0 / factor <= ours / paper <= factor:
        return REPRODUCED
    if (ours > 1.0) == (paper > 1.0) and ours != 1.0:
        return SAME
    return NOT_REPRODUCED


def share_verdict(paper_pp: float, ours_pp: float | None, paper_full_pp: float, ours_full_pp: float | None,
                  tolerance_pp: float = SHARE_TOLERANCE_PP) -> str:
    """Reproduced within `tolerance_pp`; same direction when the variant sits on the same side of
    full WarmServe as in the paper (for full itself: when it is at least every variant's share)."""
    if ours_pp is None or ours_full_pp is None:
        return NO_DATA
    if abs(ours_pp - paper_pp) <= tolerance_pp:
        return REPRODUCED
    if paper_pp == paper_full_pp:  # the full row: handled by the caller with every variant known
        return NOT_REPRODUCED
    if paper_pp < paper_full_pp and ours_pp <= ours_full_pp - MIN_DROP_PP:
        return SAME
    if paper_pp > paper_full_pp and ours_pp >= ours_full_pp + MIN_DROP_PP:
        return SAME
    return NOT_REPRODUCED


def fmt_x(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.2f}x"


def fmt_spread(lo: float, hi: float, unit: str = "x") -> str:
    return f" (seeds {lo:.2f}-{hi:.2f}{unit})" if hi > lo else ""


# ---------------------------------------------------------------- reading runs

def complete_runs(exp_dir: Path | None) -> list[RunInfo]:
    """The experiment's complete runs; none when it did not run (None) or holds no run yet (every
    one failed before writing)."""
    if exp_dir is None or not exp_dir.is_dir() or not any(exp_dir.glob("*/manifest.json")):
        return []
    return [r for r in load_runs(exp_dir) if r.complete]


def param(run: RunInfo, name: str, tables: tuple[str, ...] = ("workload_params", "options")) -> Any:
    """A run's resolved value of a workload parameter or option (the point holds only swept keys);
    `tables` says where to look first (`window_s` is both the workload's history bin and WarmServe's
    forecast window)."""
    cfg = run.manifest.get("config") or {}
    for table in tables:
        if name in (cfg.get(table) or {}):
            return cfg[table][name]
    return cfg.get(name)


def metric(run: RunInfo, name: str, model: str = "all") -> float | None:
    value = (run.summary.get(model) or {}).get(name)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def per_model_ratios(runs: list[RunInfo], base: str, cand: str, name: str = "p99_ttft_paper_s",
                     ) -> dict[int, dict[str, float]]:
    """seed -> model (and "all") -> base / candidate of `name` (higher: the candidate is better)."""
    by_seed: dict[int, dict[str, RunInfo]] = {}
    for r in runs:
        by_seed.setdefault(int(r.point.get("seed", r.manifest.get("seed", 0))), {})[r.system] = r
    out: dict[int, dict[str, float]] = {}
    for seed, systems in by_seed.items():
        if base not in systems or cand not in systems:
            continue
        b, c = systems[base], systems[cand]
        ratios = {}
        for model in b.summary:
            vb, vc = metric(b, name, model), metric(c, name, model)
            if vb is not None and vc:
                ratios[model] = vb / vc
        out[seed] = ratios
    return out
