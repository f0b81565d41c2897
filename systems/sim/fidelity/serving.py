"""Re-simulate a serving row of the validation table: `batch` requests of `input_tokens` in /
`output_tokens` out, all arriving at t = 0, on one warm instance of the model at the row's TP on
the row's GPU (`dedicated` on a one-node cluster of exactly `tp` GPUs), read the row's metric
from the run's request table with harness.metrics. The value comes from the simulator, never from
the table.

Other engines (TensorRT-LLM, LMDeploy's TurboMind) are simulated as a vLLM-like engine in their
mode: a static batch is what the engine does with requests that arrive together, and their C++
runtimes launch no Python per step, which is the graph-mode cost (`eager` in engine_mode selects
eager mode). They are judged in a wider band and never fitted to. One difference of output is
modelled because it changes what a client measures: TurboMind's context decoding covers the first
`context_length - 1` prompt tokens and its first decode step takes the last one (LlamaBatch:
`context_count = h_context_length - 1`, the last prompt token moved into the decode input), so its
first token leaves after the prefill *and* one decode step (`FIRST_TOKEN_AFTER_DECODE_STEP`).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import numpy as np

from harness import metrics as M
from harness.errors import WarmbenchError
from systems.sim.entities import SimError
from systems.sim.fidelity.table import UNITS, NotSimulated, Row
from systems.sim.specs import GPUS, MODELS, ClusterSpec, NodeSpec, base_model_name

_METRIC = re.compile(r"^(e2e|ttft|tpot)(?:_(mean|p\d{1,2}(?:\.\d+)?))?$")
_MOE = re.compile(r"(-a\d+(\.\d+)?b\b|moe|mixtral|deepseek-v[23])", re.IGNORECASE)
_FP8 = re.compile(r"fp8", re.IGNORECASE)
_SERIES = {"e2e": M.e2e_s, "ttft": M.ttft_s, "tpot": M.tpot_s}
#: Engines whose prefill leaves the last prompt token to the first decode step (module docstring;
#: InternLM/lmdeploy src/turbomind/models/llama/LlamaBatch.cc).
FIRST_TOKEN_AFTER_DECODE_STEP: frozenset[str] = frozenset({"lmdeploy-turbomind"})


def unsupported(row: Row) -> str | None:
    """Why the simulator cannot express this row's model or GPU (None when it can)."""
    if _FP8.search(row.model) or _FP8.search(row.engine_mode):
        return "FP8 weights (the simulator models fp16/bf16 only)"
    if _MOE.search(row.model):
        return "MoE model (the simulator models dense decoders only)"
    if row.gpu not in GPUS:
        return f"unknown GPU {row.gpu!r} (presets: {', '.join(sorted(set(g.name for g in GPUS.values())))})"
    if base_model_name(row.model) not in MODELS:
        return f"model {row.model!r} is not a preset"
    return None


def cuda_graphs_of(row: Row) -> bool:
    """The row's engine mode: eager only when it says so (vLLM's default captures CUDA graphs)."""
    return "eager" not in row.engine_mode.lower()


def metric_of(row: Row, requests: Any) -> float:
    """The row's metric (e2e / ttft / tpot, mean or a percentile) in seconds over the run's requests."""
    m = _METRIC.match(row.metric)
    if m is None:
        raise NotSimulated(f"unknown metric {row.metric!r} (known: e2e, ttft, tpot with _mean or _pNN)")
    kind, stat = m.group(1), m.group(2) or "mean"
    values = _SERIES[kind](requests)
    value = M.mean(values) if stat == "mean" else M.percentile(values, float(stat[1:]))
    if not np.isfinite(value):
        ok = int((requests["status"] == "ok").sum()) if len(requests) else 0
        why = (f"{len(requests) - ok} of {len(requests)} requests did not finish in the simulated run "
               "(prompt + output beyond the KV cache?)" if ok < len(requests) else "output_tokens < 2")
        raise NotSimulated(f"no simulated {kind}: {why}")
    return float(value)


def simulate_serving_row(row: Row, coefficients: tuple[tuple[str, str, float], ...] = (),
                         cuda_graphs: bool | None = None) -> float:
    """The simulator's value of the row's metric, in the row's unit; NotSimulated when it cannot say.

    `coefficients` are (gpu, coefficient, value) overrides as a cluster TOML gives them (calibrate
    uses them to try a fit); `cuda_graphs` overrides the row's engine mode.
    """
    from systems.sim import simulate
    from workloads.workload import Workload, canonical_frame

    why = unsupported(row)
    if why:
        raise NotSimulated(why)
    if row.input_tokens is None or row.output_tokens is None or row.batch is None:
        raise NotSimulated("no input_tokens / output_tokens / batch")
    batch: int = row.batch   # narrowed here: the closure below cannot see the check
    spec = replace(MODELS[base_model_name(row.model)], tp=row.tp)
    cluster = ClusterSpec(f"fidelity-{row.gpu}-tp{row.tp}", (NodeSpec(GPUS[row.gpu], gpus_per_node=row.tp),),
                          coefficients)
    options = {"max_model_len": 0, "cuda_graphs": cuda_graphs_of(row) if cuda_graphs is None else cuda_graphs,
                "max_num_seqs": max(256, row.batch)}

    def run(input_tokens: int, output_tokens: int) -> Any:
        n = batch
        frame = canonical_frame(np.zeros(n), spec.name, np.full(n, input_tokens), np.full(n, output_tokens))
        try:
            return simulate(Workload(frame, {"source": f"fidelity:{row.id}"}), cluster, "dedicated",
                            options=options, models={spec.name: spec}).requests
        except (WarmbenchError, SimError) as exc:   # the model does not fit the GPU, heads do not split, ...
            raise NotSimulated(str(exc)) from None

    if row.engine in FIRST_TOKEN_AFTER_DECODE_STEP and row.input_tokens > 1:
        # the engine prefills input - 1 tokens; the client's first token is the engine's second
        requests = run(row.input_tokens - 1, row.output_tokens + 1).copy()
        second = run(row.input_tokens - 1, 2).set_index("request_id")["end_s"]
        requests["first_token_s"] = requests["request_id"].map(second).to_numpy()
        requests["output_tokens"] = row.output_tokens
        requests["received_tokens"] = row.output_tokens
    else:
        requests = run(row.input_tokens, row.output_tokens)
    return metric_of(row, requests) / UNITS[row.unit]
