"""Re-simulate a serving row of the validation table: `batch` requests of `input_tokens` in /
`output_tokens` out, all arriving at t = 0, on one warm instance of the model at the row's TP on
the row's GPU (`dedicated` on a one-node cluster of exactly `tp` GPUs), and return the run's
request table. The row's metric is read from that table by the harness (harness/bench/fidelity.py,
with harness.metrics): the value comes from the simulator, never from the table.

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
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from harness.contracts.errors import WarmbenchError
from systems.sim import simulate
from systems.sim.entities import SimError
from systems.sim.fidelity.table import NotSimulated, Row
from systems.sim.specs import GPUS, MODELS, ClusterSpec, NodeSpec, base_model_name
from workloads.workload import Workload, canonical_frame

_MOE = re.compile(r"(-a\d+(\.\d+)?b\b|moe|mixtral|deepseek-v[23])", re.IGNORECASE)
_FP8 = re.compile(r"fp8", re.IGNORECASE)
#: (gpu, coefficient, value) overrides, as a cluster TOML gives them.
Coefficients = tuple[tuple[str, str, float], ...]
#: The simulator's value of a row's metric in the row's unit under coefficient overrides; the fits
#: (calibrate, calibrate_table) get it from the harness (harness.bench.fidelity.serving_value),
#: which owns the metric definitions.
RowValue = Callable[[Row, Coefficients], float]
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


def simulate_serving_requests(row: Row, coefficients: Coefficients = (),
                              cuda_graphs: bool | None = None) -> pd.DataFrame:
    """The simulated requests table of the row's setup (as a client would see it: TurboMind's first
    token after one decode step); NotSimulated when the simulator cannot express the row.

    `coefficients` are (gpu, coefficient, value) overrides as a cluster TOML gives them (calibrate
    uses them to try a fit); `cuda_graphs` overrides the row's engine mode.
    """
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
    return requests
