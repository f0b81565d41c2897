"""`warmbench bench gate`: the statistical gate's false-alarm rate and power on simulated nights.

A night is one nightly-sized comparison: the nightly preset's shape (its systems, models, cluster
and workload; the [quick] duration, to stay fast) with `seeds` seeds on each side (default: the
preset's own, not its [quick] smoke-test seed), decided by the
same code as `compare` (harness/report/gate.py, with compare's trust checks) under the nightly
recipe's bounds. Scenarios, each over `nights` nights:

- unchanged, fresh seeds: base and an unchanged candidate on *different* seeds (fresh workload
  draws, paired by position): every difference is noise. A fail here is a false alarm. This is the
  honest noise model for a gate: the simulator is deterministic, so a rerun on the *same* seeds
  is identical and cannot alarm (checked as its own scenario);
- planted 5% / 20%, fresh seeds: the candidate's PLANTED_SYSTEM runs with the core option
  `test_slowdown` (every engine iteration slower by that factor; factors chosen so that its P99
  TTFT rises about 5% / 20%, the measured rise is reported). A fail is a catch: the gate's power;
- planted 5% / 20%, same seeds: what a simulated nightly sees (the previous revision ran the same
  seeds): the same draws on both sides, paired.

Nights use disjoint seeds, so they are independent. Every simulation of a seed (the systems, and
the planted system slowed) runs in one task of a process pool.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from harness.contracts.errors import WarmbenchError
from harness.metrics import ALL_MODELS, Slo, summarize
from harness.nightly import DEFAULT_BOUNDS  # the nightly recipe's bounds: the gate measured is its gate
from harness.report import gate
from harness.report.compare import Bound, known_metrics, parse_bound, problems
from harness.report.load import RunInfo

#: The preset a night has the shape of.
PRESET = "nightly"
#: The system the planted regression slows: the one the paper proposes.
PLANTED_SYSTEM = "warmserve"
#: test_slowdown factors for a ~5% and a ~20% P99 TTFT rise of PLANTED_SYSTEM on the nightly shape
#: (measured by this bench: it prints the rise each factor gave, geometric mean over its seeds).
PLANTED: dict[str, float] = {"5%": 1.05, "20%": 1.20}
DEFAULT_NIGHTS = 20
QUICK_NIGHTS = 3


def run_cli(args: argparse.Namespace) -> int:
    """`bench gate [--nights N] [--seeds N] [--fail-if B ...] [--quick] [--json]`; 0 unless bad input."""
    import json

    from harness.contracts.files import strict

    nights = args.nights or (QUICK_NIGHTS if args.quick else DEFAULT_NIGHTS)
    result = run(nights=nights, seeds=args.seeds, bounds=args.fail_if or list(DEFAULT_BOUNDS),
                 jobs=args.jobs or os.cpu_count() or 1)
    if args.json:
        print(json.dumps(strict(result), indent=2))
    else:
        render(result, Console())
    return 0


def run(*, nights: int, seeds: int | None = None, bounds: Sequence[str] = DEFAULT_BOUNDS, jobs: int = 1,
        confidence: float = gate.DEFAULT_CONFIDENCE) -> dict[str, Any]:
    """Simulate 2 x nights x seeds seeds of the nightly shape; the gate's outcome shares per scenario."""
    from harness import experiment

    config, _ = experiment.load(PRESET, quick=True)  # the [quick] duration; the seeds of the full preset
    n = seeds or len(experiment.load(PRESET)[0].seeds)
    if n < 1 or nights < 1:
        raise WarmbenchError("bench gate: --nights and --seeds must be at least 1")
    parsed = [parse_bound(b, known_metrics([])) for b in bounds]  # bad input before minutes of simulation
    specs = [s for s in experiment.grid(config) if s.seed == config.seeds[0]]
    if PLANTED_SYSTEM not in {s.point["system"] for s in specs}:
        raise WarmbenchError(f"bench gate: the {PRESET} preset has no {PLANTED_SYSTEM} to plant a regression in")
    started = time.perf_counter()
    tasks = [(specs, seed) for seed in range(2 * n * nights)]
    with ProcessPoolExecutor(max(1, min(jobs, len(tasks)))) as pool:
        bank = dict(zip(range(len(tasks)), pool.map(_simulate_seed, tasks, chunksize=1)))
    sim_s = time.perf_counter() - started

    scenarios: dict[str, list[str]] = {}
    for night in range(nights):
        base_seeds = range(2 * n * night, 2 * n * night + n)
        fresh_seeds = range(2 * n * night + n, 2 * n * (night + 1))
        base = _side(bank, specs, base_seeds, None)
        for name, factor, seeds_of in [("unchanged, fresh seeds", None, fresh_seeds),
                                       ("unchanged, same seeds", None, base_seeds),
                                       *[(f"planted {pct}, fresh seeds", f, fresh_seeds) for pct, f in PLANTED.items()],
                                       *[(f"planted {pct}, same seeds", f, base_seeds) for pct, f in PLANTED.items()]]:
            cand = _side(bank, specs, seeds_of, factor)
            scenarios.setdefault(name, []).append(_night(base, cand, parsed, confidence))
    rises = {pct: _rise(bank, f) for pct, f in PLANTED.items()}
    return {
        "preset": PRESET, "nights": nights, "seeds_per_side": n, "bounds": [str(b) for b in parsed],
        "confidence": confidence, "planted_system": PLANTED_SYSTEM, "planted_factors": PLANTED,
        "planted_p99_ttft_rise": rises, "simulations": len(bank) * (len(specs) + len(PLANTED)),
        "sim_wall_s": round(sim_s, 1),
        "scenarios": {name: {"fail": outs.count(gate.FAIL) / nights, "inconclusive": outs.count(gate.INCONCLUSIVE) / nights,
                             "pass": outs.count(gate.PASS) / nights} for name, outs in scenarios.items()},
    }


def render(result: dict[str, Any], console: Console) -> None:
    rise = ", ".join(f"test_slowdown {result['planted_factors'][k]:g} -> P99 TTFT {v * 100:+.1f}%"
                     for k, v in result["planted_p99_ttft_rise"].items())
    table = Table(title=f"gate over {result['nights']} nights of the {result['preset']} shape, {result['seeds_per_side']} "
                        f"seed(s) a side, {result['confidence']:.0%} interval, bounds {' '.join(result['bounds'])}; "
                        f"planted in {result['planted_system']}: {rise}", title_justify="left")
    for col in ("scenario", "fail (exit 1)", "inconclusive (exit 3)", "pass (exit 0)"):
        table.add_column(col, justify="left" if col == "scenario" else "right")
    for name, shares in result["scenarios"].items():
        table.add_row(name, *(f"{shares[k]:.0%}" for k in ("fail", "inconclusive", "pass")))
    console.print(table)
    console.print(f"false-alarm rate (unchanged, fresh seeds, fail): {result['scenarios']['unchanged, fresh seeds']['fail']:.0%}; "
                  f"power (planted, fresh seeds, fail): 5% {result['scenarios']['planted 5%, fresh seeds']['fail']:.0%}, "
                  f"20% {result['scenarios']['planted 20%, fresh seeds']['fail']:.0%}; {result['simulations']} simulations "
                  f"in {result['sim_wall_s']:.0f} s", highlight=False)


def _labels(specs: list) -> list[str]:
    return [s.point["system"] for s in specs]


def _simulate_seed(task: tuple[list, int]) -> dict[tuple[str, float], RunInfo]:
    """Every system of the night's shape on workload draw `seed`, and PLANTED_SYSTEM slowed by each factor."""
    from harness import runner
    from harness.store import is_mostly_failed, requests_summary
    from systems.sim import simulate

    specs, seed = task
    out: dict[tuple[str, float], RunInfo] = {}
    workload = None
    for spec in specs:
        label = spec.point["system"]
        for factor in (1.0, *(PLANTED.values() if label == PLANTED_SYSTEM else ())):
            run = replace(spec, seed=seed, point={**spec.point, "seed": seed},
                          options={**spec.options, **({"test_slowdown": factor} if factor != 1.0 else {})})
            workload = workload or runner.resolve_workload(run)
            result = simulate(workload, run.cluster, run.system, options=run.options, seed=seed,
                              duration_s=run.duration_s)
            counts = requests_summary(result.requests)
            manifest = {"status": "complete", "requests_summary": counts, "mostly_failed": is_mostly_failed(counts)}
            slo = Slo(**{k: float(v) for k, v in (run.slo or {}).items() if k in ("ttft_s", "tpot_s")})
            summary = summarize(result.requests, slo)  # as the store's summary_of
            out[(label, factor)] = RunInfo(Path(run.run_id), run.run_id, label, run.point, manifest, summary)
    return out


def _side(bank: dict[int, dict], specs: list, seeds: range, factor: float | None) -> list[RunInfo]:
    """One side of a night: the runs of `seeds`, renumbered 0..n-1 so both sides pair by position."""
    out = []
    for i, seed in enumerate(seeds):
        for label in _labels(specs):
            run = bank[seed][(label, factor if factor and label == PLANTED_SYSTEM else 1.0)]
            out.append(replace(run, point={**run.point, "seed": i}, run_id=f"{label}_seed-{i}"))
    return out


def _night(base: list[RunInfo], cand: list[RunInfo], bounds: list[Bound], confidence: float) -> str:
    found = problems(base, cand, bounds)
    return gate.outcome(len(found), gate.decisions(base, cand, bounds, confidence=confidence))


def _rise(bank: dict[int, dict], factor: float) -> float:
    """Geometric mean over every seed of PLANTED_SYSTEM's P99 TTFT slowed / not slowed, minus 1."""
    logs = [math.log(runs[(PLANTED_SYSTEM, factor)].summary[ALL_MODELS]["p99_ttft_s"]
                     / runs[(PLANTED_SYSTEM, 1.0)].summary[ALL_MODELS]["p99_ttft_s"]) for runs in bank.values()]
    return math.exp(sum(logs) / len(logs)) - 1
