"""Sensitivity: each assumption the paper leaves open, varied one at a time around the base point.

For the headline (largest per-model SLLM-GPU / WarmServe P99 ratio) and the ablation (full
WarmServe's share of TTFT < 100 ms, and for each variant its drop below full, in percentage
points; all from the same runs), one experiment per assumption sweeps its plausible values (the
base value is the base experiment, run once). The report shows how far each moves our number (table + tornado) and, for a claim we
do not reproduce, whether any value in range would close it: computed from these runs, not argued.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.report.load import RunInfo
from harness.reproduce import claims as C
from harness.reproduce import verdicts as V


@dataclass(frozen=True)
class Assumption:
    """An assumption, its base value (as text), the values tried and how to set one in a raw config."""

    key: str
    label: str
    base: str
    values: tuple[Any, ...]
    apply: Callable[[dict[str, Any], tuple[Any, ...], Path], None]
    source: str


def _workload(name: str) -> Callable[[dict[str, Any], tuple[Any, ...], Path], None]:
    def apply(raw: dict[str, Any], values: tuple[Any, ...], root: Path) -> None:
        raw["workload"]["params"][name] = list(values)
    return apply


def _options(name: str) -> Callable[[dict[str, Any], tuple[Any, ...], Path], None]:
    def apply(raw: dict[str, Any], values: tuple[Any, ...], root: Path) -> None:
        raw["options"][name] = list(values)
    return apply


def _system_option(system: str, name: str) -> Callable[[dict[str, Any], tuple[Any, ...], Path], None]:
    def apply(raw: dict[str, Any], values: tuple[Any, ...], root: Path) -> None:
        raw["systems"] = [{"name": s, "options": {name: list(values)}} if s == system else s for s in raw["systems"]]
    return apply


def _cluster(raw: dict[str, Any], values: tuple[Any, ...], root: Path) -> None:
    raw["cluster"] = list(values)


def _ssd(raw: dict[str, Any], values: tuple[Any, ...], root: Path) -> None:
    paths = []
    for v in values:  # an H100 cluster file per SSD speed (its bytes are part of the run identity)
        path = root / "clusters" / f"h100-ssd-{v:g}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = f'name = "h100-ssd-{v:g}"\n[[nodes]]\ncount = 2\ngpu = "H100-80GB"\nssd_gb_per_s = {float(v)!r}\n'
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
        paths.append(str(path))
    raw["cluster"] = paths


GPU = Assumption("gpu", "GPU type", "H100", ("paper-16gpu",), _cluster,
                 "paper: NVLink 4.0 (Hopper); A100 is the other 80 GB-class GPU of the period")
WARM_INIT = Assumption("warm_engine_init_s", "WarmServe prewarmed start (warm_engine_init_s)", "0.5 s", (0.2, 2.0),
                       _system_option("warmserve", "warm_engine_init_s"),
                       "policy assumption; 0.2 s CUDA-VMM map of 10 GB (docs/paper.md s.2) to a full engine init")
ENGINE_INIT = Assumption("engine_init_s", "engine init of a cold start (engine_init_s)", "auto (3.6 s + profile)",
                         (2.0, 10.0), _options("engine_init_s"), "vllm-pr-11005: 14 s with graphs, ~4 s eager")
PROCESS = Assumption("process_start_s", "engine process start (process_start_s)", "0 s (pre-spawned)", (2.0, 5.0),
                     _options("process_start_s"), "python + torch import, CUDA context: seconds when not pre-spawned")
SSD = Assumption("ssd_gb_per_s", "node SSD speed (GB/s)", "6", (2.0, 12.0), _ssd,
                 "single NVMe Gen4 ~2-7 GB/s, RAID of NVMe ~12 GB/s")
KEEP_ALIVE = Assumption("keep_alive_s", "SLLM-GPU keep-alive (s)", "30", (5.0, 300.0),
                        _system_option("serverlessllm", "keep_alive_s"), "ServerlessLLM deployments: seconds to minutes")
HOST_CACHE = Assumption("host_memory_bytes", "SLLM-GPU host checkpoint cache", "node memory (1 TiB)", (0,),
                        _system_option("serverlessllm", "host_memory_bytes"), "0: SSD only (SLLM without its cache)")
SLLM_TICK = Assumption("tick_s", "SLLM-GPU keep-alive check period (tick_s)", "1 s", (0.25, 5.0),
                       _system_option("serverlessllm", "tick_s"), "controller cadence, sub-second to seconds")
WS_TICK = Assumption("tick_s", "WarmServe controller period (tick_s)", "0.5 s (paper)", (0.25, 2.0),
                     _system_option("warmserve", "tick_s"), "around the paper's 0.5 s")
CV_H = Assumption("cv", "burstiness (Gamma CV of arrivals)", "trace's own", (2.0, 4.0), _workload("cv"),
                  "the paper's recipe reshapes to a target CV optionally")
CV_A = Assumption("cv", "burstiness (Gamma CV of arrivals)", "4", (2.0, 8.0), _workload("cv"),
                  "around the ablation preset's CV 4")
RATE_H = Assumption("total_rps", "total rate (req/s)", "15 (paper)", (5.0, 10.0, 20.0, 25.0), _workload("total_rps"),
                    "the paper's headline grid")
RATE_A = Assumption("total_rps", "total rate (req/s)", "25", (15.0, 35.0), _workload("total_rps"),
                    "around the ablation preset's 25 req/s")

HEADLINE = [GPU, WARM_INIT, ENGINE_INIT, PROCESS, SSD, KEEP_ALIVE, HOST_CACHE, SLLM_TICK, CV_H, RATE_H]
ABLATION = [GPU, WARM_INIT, ENGINE_INIT, PROCESS, SSD, WS_TICK, CV_A, RATE_A]


@dataclass(frozen=True)
class Study:
    """One sensitivity study: the claim row it explains, its base experiment, its number."""

    name: str
    row: str
    number: str
    paper: float
    unit: str
    base: Callable[[], dict[str, Any]]
    assumptions: list[Assumption]
    measure: Callable[[list[RunInfo]], float | None]
    #: Does a value close the gap? (reproduced by the claim's rule)
    closes: Callable[[float], bool]


def _headline_base() -> dict[str, Any]:
    raw = C._base("sens-headline", "sensitivity base: headline point on the conversation week",
                  ["warmserve", "serverlessllm"], C.TRACES[0],
                  {"total_rps": 15.0, "alpha": 0.5, "duration_s": 1200.0}, [0, 1, 2],
                  {"workload.params.duration_s": 300.0, "seeds": [0]})
    return raw


def _ablation_base() -> dict[str, Any]:
    return C._base("sens-ablation", "sensitivity base: the ablation load on the conversation week",
                   [entry for _, entry, _ in C.ABLATION], C.TRACES[0], dict(C.ABLATION_PARAMS), [0, 1, 2],
                   {"workload.params.duration_s": 300.0, "seeds": [0]})


def headline_measure(runs: list[RunInfo]) -> float | None:
    return C.headline_number(runs)[0]


def ablation_measure(variant: str | None) -> Callable[[list[RunInfo]], float | None]:
    """Full WarmServe's fast share (variant None), or full minus the variant's, in points."""
    def measure(runs: list[RunInfo]) -> float | None:
        shares = C.fast_shares(runs)
        if "warmserve" not in shares or (variant is not None and variant not in shares):
            return None
        full = statistics.fmean(shares["warmserve"])
        return full if variant is None else full - statistics.fmean(shares[variant])
    return measure


def _within(paper: float) -> Callable[[float], bool]:
    return lambda v: abs(v - paper) <= V.SHARE_TOLERANCE_PP


def _ablation_studies() -> list[Study]:
    out = [Study("ablation-full", "ablation: full", "full WarmServe's share of TTFT < 100 ms (%)", 100.0, " %",
                 _ablation_base, ABLATION, ablation_measure(None), _within(100.0))]
    for label, entry, paper in C.ABLATION[1:]:
        name = C._label(entry)
        out.append(Study(f"ablation-{name.removeprefix('warmserve-')}", f"ablation: {label}",
                         f"drop below full, {label} (pp)", 100.0 - paper, " pp", _ablation_base, ABLATION,
                         ablation_measure(name), _within(100.0 - paper)))
    return out


STUDIES: dict[str, Study] = {s.name: s for s in (
    Study("headline", "headline-ttft", "max per-model P99 ratio SLLM-GPU / WarmServe", 50.79, "x", _headline_base,
          HEADLINE, headline_measure, lambda v: V.ratio_verdict(50.79, v) == V.REPRODUCED),
    *_ablation_studies(),
)}
#: Which studies a claim's `--claims` selection runs (the ablation's share one set of runs).
FOR_CLAIM = {"headline-ttft": ["headline"], "ablation": [n for n in STUDIES if n.startswith("ablation")]}


def experiments(study: Study, root: Path, quick: bool) -> list[tuple[Assumption | None, dict[str, Any]]]:
    """The base experiment, then one per assumption (its values as a sweep axis). `--quick` keeps
    the extreme values only."""
    base = study.base()
    out: list[tuple[Assumption | None, dict[str, Any]]] = [(None, base)]
    for a in study.assumptions:
        raw = copy.deepcopy(base)
        raw["name"] = f"{base['name']}-{a.key}"
        values = a.values if not quick or len(a.values) <= 2 else (a.values[0], a.values[-1])
        a.apply(raw, values, root)
        out.append((a, raw))
    return out


def value_of(run: RunInfo, a: Assumption, values: tuple[Any, ...]) -> Any:
    """Which tried value a run belongs to; None when the run does not depend on it (a system whose
    own option is not swept, shared by every value)."""
    if a.apply is _cluster or a.apply is _ssd:
        cluster = str((run.manifest.get("config") or {}).get("cluster", ""))
        for v in values:
            if (a.apply is _cluster and cluster == v) or (a.apply is _ssd and cluster.endswith(f"-ssd-{v:g}.toml")):
                return v
        return None
    short = a.key
    return run.point.get(short)


@dataclass
class Effect:
    assumption: Assumption
    points: list[tuple[Any, float | None]]  # value -> our number


def effects(study: Study, base_runs: list[RunInfo], per_assumption: list[tuple[Assumption, list[RunInfo]]],
            quick: bool) -> tuple[float | None, list[Effect]]:
    """Our number at the base point and at each tried value of each assumption."""
    base = study.measure(base_runs)
    out = []
    for a, runs in per_assumption:
        values = a.values if not quick or len(a.values) <= 2 else (a.values[0], a.values[-1])
        pts = []
        for v in values:
            chosen = [r for r in runs if value_of(r, a, values) in (v, None)]
            pts.append((v, study.measure(chosen) if chosen else None))
        out.append(Effect(a, pts))
    return base, out


def closing(study: Study, base: float | None, found: list[Effect]) -> str:
    """Which assumption, within its range, would close the gap (by the claim's reproduced rule)."""
    closers = [(e.assumption.label, v, n) for e in found for v, n in e.points if n is not None and study.closes(n)]
    if base is not None and study.closes(base):
        return "reproduced at the base point"
    # values that carry our number past the paper's without landing in the band: the gap is crossed
    crossers = [(e.assumption.label, v, n) for e in found for v, n in e.points
                if n is not None and base is not None and not study.closes(n) and (n - study.paper) * (base - study.paper) < 0]
    crossed = ("; crossed beyond the band by: " + "; ".join(f"{lbl} = {v} gives {n:.2f}{study.unit}"
                                                             for lbl, v, n in crossers)) if crossers else ""
    if closers:
        return "closed by: " + "; ".join(f"{lbl} = {v:g} gives {n:.2f}{study.unit}" if isinstance(v, (int, float))
                                         else f"{lbl} = {v} gives {n:.2f}{study.unit}" for lbl, v, n in closers) + crossed
    if crossers:
        return f"no value lands in the band (base {base:.2f}{study.unit}, paper {study.paper:g}{study.unit})" + crossed
    moves = [(abs(n - study.paper), e.assumption.label, v, n) for e in found for v, n in e.points
             if n is not None and base is not None and math.isfinite(n)]
    if not moves:
        return "no sensitivity data"
    _, lbl, v, n = min(moves, key=lambda m: m[0])
    return (f"no single assumption in its range closes it (the paper's {study.paper:g}{study.unit}); the closest "
            f"is {lbl} = {v} giving {n:.2f}{study.unit} (base {base:.2f}{study.unit})")
