"""Calibrate the perf model from a live run: make the simulator reproduce what a real server did.

The live run's successful requests are replayed in the simulator (`dedicated`: one warm
instance per model, as the live servers were) at the times they were sent, with the tokens
they received. Each request is then timed twice, live and simulated, and two multipliers
of the GPU's coefficients are fitted so that the median paired ratio is 1: `prefill_scale`
on TTFT (from the send: what the server and network took, not the client's lag) and
`decode_scale` on TPOT. They absorb what the roofline leaves out (engine version, kernels,
HTTP and tokenizer time) on that GPU; the result is a cluster TOML the simulator reads.

Engine starts are measured, not fitted: each server's `instance_start` -> `instance_ready`
in the run's events (the vllm adapter logs both, in either mode), reported per model with the
`engine_init_s` they imply once the simulator's own weight load (host memory over PCIe) is
taken out. Not fitted: the KV capacity, and anything per model beyond the two scales (the
per-model errors after the fit say how much that matters).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.contracts.errors import WarmbenchError
from systems.sim import simulate
from systems.sim.perf import coefficients_for
from systems.sim.specs import GPUS, MODELS, ClusterSpec, ModelSpec, NodeSpec, base_model_name, model_spec_from_config
from workloads.workload import Workload

#: Stop when both median paired ratios are within this of 1 (or further steps move less than 0.01%).
TOLERANCE = 0.005
MAX_ITERATIONS = 20


@dataclass
class LiveFit:
    """Fitted multipliers and how well the simulator matches the live run before and after."""

    gpu: str
    prefill_scale: float
    decode_scale: float
    converged: bool
    iterations: int
    requests: int
    source: str
    #: model -> {"requests", live / sim-before / sim-after medians of TTFT and TPOT in seconds,
    #: and the median |sim / live - 1| of each after the fit}
    models: dict[str, dict[str, float]] = field(default_factory=dict)
    #: model -> {"starts", "start_p50_s", "engine_init_s"}: measured engine starts (none: no events)
    starts: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def engine_init_s(self) -> float | None:
        """Median over models of the engine_init_s their starts imply; None when no start was logged."""
        values = [s["engine_init_s"] for s in self.starts.values()]
        return float(np.median(values)) if values else None

    def to_json(self) -> dict[str, Any]:
        return {"gpu": self.gpu, "prefill_scale": self.prefill_scale, "decode_scale": self.decode_scale,
                "converged": self.converged, "iterations": self.iterations, "requests": self.requests,
                "source": self.source, "models": self.models, "starts": self.starts,
                "engine_init_s": self.engine_init_s}


def live_specs(models: list[str], sources: Mapping[str, str]) -> dict[str, ModelSpec]:
    """Spec of each live model: its source in `sources` (a preset name or a model directory; the
    harness merges --model over the directories the run served), else the preset of the same name."""
    out = {}
    for m in models:
        source = sources.get(m)
        if source is None and base_model_name(m) in MODELS:
            source = base_model_name(m)
        if source is None:
            raise WarmbenchError(f"no model shape for live model {m!r}: give --model {m}=PRESET_OR_DIR "
                                 f"(presets: {', '.join(MODELS)}, or a Hugging Face directory with config.json)")
        spec = MODELS.get(base_model_name(source)) if not Path(source).exists() else model_spec_from_config(source, m)
        if spec is None:
            raise WarmbenchError(f"--model {m}={source}: neither a preset ({', '.join(MODELS)}) nor a directory")
        out[m] = replace(spec, name=m)
    return out


def usable_requests(requests: pd.DataFrame) -> pd.DataFrame:
    """Successful streamed requests with a first token, an end and at least two tokens (a TPOT)."""
    q = requests
    received = pd.to_numeric(q["received_tokens"], errors="coerce")
    ok = ((q["status"] == "ok") & q["sent_s"].notna() & q["first_token_s"].notna() & q["end_s"].notna()
          & (received >= 2))
    q = q[ok].copy()
    q["received_tokens"] = received[ok].astype("int64")
    q["ttft_s"] = q["first_token_s"] - q["sent_s"]
    q["tpot_s"] = (q["end_s"] - q["first_token_s"]) / (q["received_tokens"] - 1)
    return q[(q["ttft_s"] > 0) & (q["tpot_s"] > 0)]


def _workload(q: pd.DataFrame) -> Workload:
    t0 = float(q["sent_s"].min())
    frame = pd.DataFrame({"request_id": q["request_id"].astype("int64").to_numpy(),
                          "arrival_s": (q["sent_s"] - t0).to_numpy(np.float64),
                          "model": q["model"].astype(str).to_numpy(object),
                          "input_tokens": q["input_tokens"].astype("int64").to_numpy(),
                          "output_tokens": q["received_tokens"].to_numpy()})
    frame = frame.sort_values("arrival_s", kind="stable").reset_index(drop=True)
    return Workload(frame, {"source": "live run (calibration)"})


def fit_cluster(gpu: str, specs: Mapping[str, ModelSpec], prefill_scale: float = 1.0,
                decode_scale: float = 1.0) -> ClusterSpec:
    """One node with a GPU per TP rank of every model, the two scales on that GPU kind."""
    n_gpus = sum(s.tp for s in specs.values())
    name = GPUS[gpu].name
    return ClusterSpec(f"calibration-{name}", (NodeSpec(GPUS[gpu], gpus_per_node=max(n_gpus, 1)),),
                       ((name, "prefill_scale", prefill_scale), (name, "decode_scale", decode_scale)))


def _simulated(workload: Workload, cluster: ClusterSpec, specs: Mapping[str, ModelSpec]) -> pd.DataFrame:
    result = simulate(workload, cluster, "dedicated", options={"max_model_len": 0}, models=specs)
    r = result.requests.set_index("request_id")
    out = pd.DataFrame({"sim_ttft_s": r["first_token_s"] - r["scheduled_s"],
                        "sim_tpot_s": (r["end_s"] - r["first_token_s"]) / (r["output_tokens"] - 1)})
    return out[(r["status"] == "ok") & (out["sim_ttft_s"] > 0) & (out["sim_tpot_s"] > 0)]


def _paired(q: pd.DataFrame, sim: pd.DataFrame) -> pd.DataFrame:
    return q.set_index("request_id")[["model", "ttft_s", "tpot_s"]].join(sim, how="inner")


def fit_live_run(requests: pd.DataFrame, gpu: str, model_sources: Mapping[str, str] | None = None,
                 source: str = "", events: pd.DataFrame | None = None) -> LiveFit:
    """Fit prefill_scale and decode_scale on `gpu` so the simulated run matches the live one
    (`requests`: its requests table); measure engine starts from `events` (the run's
    control-plane events) where given. `model_sources`: see `live_specs`."""
    if gpu not in GPUS:
        raise WarmbenchError(f"unknown GPU {gpu!r}; presets: {', '.join(GPUS)}")
    q = usable_requests(requests)
    if len(q) < 10:
        raise WarmbenchError(f"calibration needs at least 10 successful streamed requests with 2+ tokens; "
                             f"the run has {len(q)}")
    specs = live_specs(sorted(q["model"].astype(str).unique()), model_sources or {})
    workload = _workload(q)
    base = coefficients_for(GPUS[gpu])
    scales = [base.prefill_scale, base.decode_scale]
    steps = [1.0, 1.0]        # damping of each scale's step: halved whenever its error changes sign
    last = [0.0, 0.0]
    before = after = None
    prefill, decode = scales
    converged, iterations = False, 0
    for iterations in range(1, MAX_ITERATIONS + 1):  # noqa: B007 - read after the loop: how many ran
        prefill, decode = scales  # the fit reported is the last one simulated
        after = _paired(q, _simulated(workload, fit_cluster(gpu, specs, *scales), specs))
        before = after if before is None else before
        # log(live / sim) of the median pair, for TTFT (prefill) and TPOT (decode)
        errors = [math.log(float(np.median(after["ttft_s"] / after["sim_ttft_s"]))),
                  math.log(float(np.median(after["tpot_s"] / after["sim_tpot_s"])))]
        if all(abs(e) < math.log1p(TOLERANCE) for e in errors):
            converged = True
            break
        # times are close to proportional to their scale, so a full multiplicative step lands near
        # the fixed point; a median over few requests moves in jumps, so a step that overshoots
        # (the error changes sign) is halved, and steps that no longer move anything end the fit
        for i, e in enumerate(errors):
            if e * last[i] < 0:
                steps[i] *= 0.5
            last[i] = e
        if all(abs(e) < math.log1p(TOLERANCE) or step * abs(e) < 1e-4 for e, step in zip(errors, steps)):
            converged = True
            break
        scales = [s * math.exp(step * e) for s, step, e in zip(scales, steps, errors)]
    return LiveFit(GPUS[gpu].name, prefill, decode, converged, iterations, len(q), source,
                   _per_model(before, after), engine_starts(events, specs, gpu))


def engine_starts(events: pd.DataFrame | None, specs: Mapping[str, ModelSpec], gpu: str) -> dict[str, dict[str, float]]:
    """Per model: how many starts completed, their median seconds, and the engine_init_s that
    leaves once a load of the model's shard from host memory over `gpu`'s node PCIe is taken out (>= 0)."""
    if events is None or len(events) == 0:
        return {}
    pcie_bytes_per_s = NodeSpec(GPUS[gpu]).pcie_bytes_per_s
    out = {}
    for model, rows in events.sort_values("time_s", kind="stable").groupby("model", sort=True):
        if str(model) not in specs:
            continue
        durations, begun = [], None
        for kind, t in zip(rows["kind"], rows["time_s"]):
            if kind == "instance_start":
                begun = float(t)
            elif kind == "instance_ready" and begun is not None:
                durations.append(float(t) - begun)
                begun = None
            elif kind in ("instance_failed", "instance_exit"):
                begun = None
        if durations:
            spec = specs[str(model)]
            start = float(np.median(durations))
            out[str(model)] = {"starts": len(durations), "start_p50_s": start,
                               "engine_init_s": max(start - spec.shard_bytes() / pcie_bytes_per_s, 0.0)}
    return out


def _per_model(before: pd.DataFrame, after: pd.DataFrame) -> dict[str, dict[str, float]]:
    out = {}
    for model, a in after.groupby("model", sort=True):
        b = before[before["model"] == model]
        out[str(model)] = {
            "requests": int(len(a)),
            "live_ttft_p50_s": float(a["ttft_s"].median()), "live_tpot_p50_s": float(a["tpot_s"].median()),
            "sim_ttft_p50_before_s": float(b["sim_ttft_s"].median()),
            "sim_tpot_p50_before_s": float(b["sim_tpot_s"].median()),
            "sim_ttft_p50_after_s": float(a["sim_ttft_s"].median()),
            "sim_tpot_p50_after_s": float(a["sim_tpot_s"].median()),
            "ttft_error_before": float((b["sim_ttft_s"] / b["ttft_s"] - 1).abs().median()),
            "ttft_error_after": float((a["sim_ttft_s"] / a["ttft_s"] - 1).abs().median()),
            "tpot_error_before": float((b["sim_tpot_s"] / b["tpot_s"] - 1).abs().median()),
            "tpot_error_after": float((a["sim_tpot_s"] / a["tpot_s"] - 1).abs().median()),
        }
    return out


def cluster_toml(fit: LiveFit, nodes: int = 1, gpus_per_node: int = 8) -> str:
    """A cluster TOML of `nodes` nodes of the fitted GPU carrying the fitted coefficients."""
    lines = [f"# Calibrated from {fit.source or 'a live run'}: {fit.requests} requests, "
             f"{'converged' if fit.converged else 'NOT converged'} in {fit.iterations} rounds.",
             "# Median |sim / live - 1| per model after the fit (before):"]
    for model, m in fit.models.items():
        lines.append(f"#   {model}: TTFT {m['ttft_error_after']:.1%} ({m['ttft_error_before']:.1%}), "
                     f"TPOT {m['tpot_error_after']:.1%} ({m['tpot_error_before']:.1%})")
    for model, st in fit.starts.items():
        lines.append(f"# Engine start of {model}: {st['start_p50_s']:.2f} s median over {st['starts']} "
                     f"(engine_init_s {st['engine_init_s']:.2f} s after the weight load).")
    if fit.engine_init_s is not None:
        lines.append(f"# Simulate with --option engine_init_s={fit.engine_init_s:.3g} to use the measured starts.")
    lines += cluster_body(fit.gpu, nodes, gpus_per_node, _num(fit.prefill_scale), _num(fit.decode_scale))
    return "\n".join(lines)


def cluster_body(gpu: str, nodes: int, gpus_per_node: int, prefill_scale: str, decode_scale: str) -> list[str]:
    """The TOML lines of a calibrated cluster: `nodes` nodes of `gpu` carrying the fitted scales
    (given as TOML number literals), after a caller's comment header."""
    return [f'name = "calibrated-{gpu}"', "", "[[nodes]]", f"count = {nodes}", f'gpu = "{gpu}"',
            f"gpus_per_node = {gpus_per_node}", "", f'[coefficients."{gpu}"]',
            f"prefill_scale = {prefill_scale}", f"decode_scale = {decode_scale}", ""]


def _num(value: float) -> str:
    return repr(float(f"{value:.6g}")) if math.isfinite(value) else "nan"
