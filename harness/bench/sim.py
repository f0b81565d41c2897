"""`bench sim`: simulator speed on two fixed, self-generated scenarios (no files needed).

(a) `paper-16gpu`: 2 x 8 A100, four models (7B, 7B, 13B TP2, 70B TP4), 15 req/s for 20 min.
(b) `sim-512gpu`: 64 x 8 A100, 64 models, 300 req/s for one hour.
Targets on one core: (a) < 2 s, (b) < 60 s. Each system of BENCH_SYSTEMS that is registered
runs each scenario; `--quick` shortens both to a smoke check. Also reports the roofline
model's error against Vidur's measured operator profiles (`profile_error`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from harness import metrics as M
from workloads.workload import Workload, canonical_frame

if TYPE_CHECKING:
    from rich.console import Console

BENCH_SYSTEMS: tuple[str, ...] = ("vllm-ondemand", "warmserve")
TARGETS_S = {"a": 2.0, "b": 60.0}
PRESET_CYCLE = ("llama-2-7b", "llama-3.1-8b", "qwen2.5-7b", "llama-2-13b", "qwen2.5-14b",
                "qwen2.5-32b", "llama-2-70b", "llama-3.1-70b", "qwen2.5-72b")


@dataclass(frozen=True)
class Scenario:
    key: str
    cluster: str
    models: tuple[str, ...]
    rate_per_s: float
    duration_s: float
    alpha: float = 0.5
    burst_cv: float = 2.0


def scenarios(quick: bool) -> list[Scenario]:
    paper = ("llama-2-7b", "llama-2-7b#1", "llama-2-13b", "llama-2-70b")
    many = tuple(f"{PRESET_CYCLE[i % len(PRESET_CYCLE)]}#{i // len(PRESET_CYCLE)}" for i in range(64))
    scale = 0.05 if quick else 1.0
    return [
        Scenario("a", "paper-16gpu", paper, 15.0, 1200.0 * scale),
        Scenario("b", "sim-512gpu", many, 300.0, 3600.0 * scale),
    ]


def generate(sc: Scenario, seed: int = 0) -> Workload:
    """Bursty arrivals (Gamma inter-arrival times with CV `burst_cv`) split over models by a power
    law `(rank+1)^-alpha`; Azure-conv-like lengths (input <= 1024, output 3..1023)."""
    rng = np.random.default_rng(seed)
    shares = (np.arange(len(sc.models)) + 1.0) ** -sc.alpha
    shares /= shares.sum()
    n_total = int(sc.rate_per_s * sc.duration_s)
    shape = 1.0 / sc.burst_cv ** 2
    gaps = rng.gamma(shape, 1.0 / (sc.rate_per_s * shape), n_total)
    arrival = np.cumsum(gaps)
    arrival = arrival[arrival < sc.duration_s]
    n = len(arrival)
    model = np.asarray(sc.models, dtype=object)[rng.choice(len(sc.models), n, p=shares)]
    inp = np.clip(rng.lognormal(6.5, 0.8, n), 8, 1024).astype(np.int64)
    out = np.clip(rng.lognormal(5.0, 0.9, n), 3, 1023).astype(np.int64)
    meta = {"source": f"bench-sim-{sc.key}", "seed": seed, "rate_per_s": sc.rate_per_s,
            "duration_s": sc.duration_s, "alpha": sc.alpha, "burst_cv": sc.burst_cv}
    return Workload(canonical_frame(arrival, model, inp, out), meta)


def run(quick: bool = False) -> dict[str, Any]:
    from systems.sim import SYSTEMS, simulate
    from systems.sim.calibrate import allreduce_error, profile_error

    entries = []
    for sc in scenarios(quick):
        wl = generate(sc)
        for system in BENCH_SYSTEMS:
            if system not in SYSTEMS:
                continue
            started, cpu0 = time.perf_counter(), time.process_time()
            result = simulate(wl, sc.cluster, system)
            wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
            req = result.requests
            p99_ttft_s = M.percentile(M.ttft_s(req), 99)  # as summary.json's p99_ttft_s
            entries.append({
                "scenario": sc.key, "system": system, "cluster": sc.cluster, "models": len(sc.models),
                "rate_per_s": sc.rate_per_s, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
                "simulated_s": round(float(result.manifest["simulated_s"]), 3),
                "requests": int(len(req)),
                "requests_per_wall_s": round(len(req) / wall, 1) if wall > 0 else math.nan,
                "ok": int((req["status"] == "ok").sum()),
                "p99_ttft_s": p99_ttft_s if math.isfinite(p99_ttft_s) else None,
                "target_wall_s": None if quick else TARGETS_S[sc.key],
            })
    return {"quick": quick, "scenarios": entries, "profile_error": profile_error(),
            "allreduce_error": allreduce_error()}


COLUMNS = {"requests": ("reqs", "{:,}"), "simulated_s": ("sim s", "{:.0f}"), "wall_s": ("wall s", "{:.2f}"),
           "cpu_s": ("cpu s", "{:.2f}"), "requests_per_wall_s": ("req/s", "{:,.0f}"),
           "p99_ttft_s": ("P99 TTFT", "{:.2f}")}


def render(result: dict[str, Any], console: Console) -> None:
    from rich import box
    from rich.table import Table

    table = Table(title="bench sim" + (" (quick)" if result["quick"] else "") + " (targets: a < 2 s, b < 60 s wall)",
                  box=box.SIMPLE, padding=(0, 1), show_edge=False)
    table.add_column("scenario", no_wrap=True)
    for head, _ in COLUMNS.values():
        table.add_column(head, justify="right", no_wrap=True)
    for e in result["scenarios"]:
        table.add_row(f"{e['scenario']} {e['system']}",
                      *("-" if e[k] is None else fmt.format(e[k]) for k, (_, fmt) in COLUMNS.items()))
    console.print(table)
    pe = result.get("profile_error")
    if pe:
        t2 = Table(title="roofline vs Vidur linear-layer profiles: median |error| % by tokens",
                   box=box.SIMPLE, padding=(0, 1), show_edge=False)
        t2.add_column("profile", no_wrap=True)
        buckets = list(pe["buckets"])
        for b in buckets:
            t2.add_column(b, justify="right")
        t2.add_column("all", justify="right")
        for name, row in pe["profiles"].items():
            t2.add_row(name, *(f"{row['by_tokens'].get(b, float('nan')):.1f}" for b in buckets), f"{row['all']:.1f}")
        console.print(t2)
    ar = result.get("allreduce_error")
    if ar:
        t3 = Table(title="all-reduce model vs Vidur DGX profiles: median |error| %", box=box.SIMPLE)
        for col in ("group", "< 1 MB", ">= 1 MB"):
            t3.add_column(col, justify="right", no_wrap=True)
        for name, row in ar.items():
            t3.add_row(name, f"{row['under_1MB']:.1f}", f"{row['from_1MB']:.1f}")
        console.print(t3)
