"""Re-simulate the start-cost rows of a validation table (weight-load, engine-start, sleep-wake).

Each row runs the simulator on its own setup: a one-node cluster of the row's GPU (host link of
that GPU's servers, SSD at the row's NVMe speed), one request at t = 0 for the row's model at its
TP, sent to a cold instance started by the row's loader (`loader=NAME` in engine_mode; vLLM's
default, safetensors, otherwise; `sleep_level_1` wakes a sleeping engine), in the row's engine
mode (cuda_graphs / eager). The value is read from the run's events: `load_end` (load_s),
`init_done` (init_s) or `instance_ready` (startup_s), in the row's unit. It is never read from
the table. A row the simulator cannot express raises NotSimulated with the reason.

Decisions (each says so in the result's note):
- An unnamed GPU ("unknown") is simulated on STAND_IN_GPU: a load depends on the drive and the
  PCIe link, an engine init on the GPU only through its profile run (0.2-0.6 s of vllm-pr-11005's
  14.2 s), so the stand-in moves these metrics by a few percent at most.
- A model outside the presets is simulated only for a transfer (load or wake) and only where its
  checkpoint size is known (CHECKPOINT_BYTES): those move bytes, nothing else of the model
  matters. Its engine init or cold start is not simulated (an MoE's profile run and vLLM 0.11's
  torch.compile step are not modelled). FP8 weights are not simulated.
- The drive: "NVMe X GB/s" in the row's note, else the source's machine (SOURCE_NVME_BYTES_PER_S),
  else the node's default SSD speed (an assumption; the note says so).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from harness.contracts.result import event_fields
from systems.sim.fidelity.table import UNITS, NotSimulated, Row
from systems.sim.policy import Policy
from systems.sim.specs import GPUS, MODELS, ClusterSpec, ModelSpec, NodeSpec, base_model_name
from systems.sim.startup import LOADERS, PR_10647_NVME_BYTES_PER_S

START_GROUPS = ("weight-load", "engine-start", "sleep-wake")

#: GPU an "unknown" GPU's row is simulated on (see the module docstring).
STAND_IN_GPU = "A100-80GB"

#: Host link of each GPU kind's servers, one direction, x16 (NVIDIA datasheets): A100 on PCIe 4.0,
#: H100 / H200 SXM on PCIe 5.0. The cluster presets keep the paper's 32 GB/s for every GPU.
HOST_LINK_BYTES_PER_S: dict[str, float] = {"A100-80GB": 32e9, "H100-80GB": 64e9, "H200": 64e9}

#: Drive of a source's machine when a row's note does not state it: vllm-pr-10647's A100 machine
#: (derived, startup.py says how); sllm-store-bench's H100 machine (stated: NVMe 29.4 GB/s).
SOURCE_NVME_BYTES_PER_S: dict[str, float] = {"vllm-pr-10647": PR_10647_NVME_BYTES_PER_S,
                                             "sllm-store-bench": 29.4e9}

#: Checkpoint bytes of models outside the presets (bf16, 2 bytes per parameter of the model card):
#: Qwen3-Coder-30B-A3B 30.5 B parameters, 61.0 GB; Qwen3-32B (dense) 32.8 B, 65.6 GB; Qwen3-0.6B
#: 0.596 B (28 layers, hidden 1024, tied 151936-token embedding: 0.44 B + 0.16 B), 1.19 GB;
#: Phi-3-vision-128k-instruct 4.2 B, 8.4 GB. Rows of the held-out set (sllm-store-bench,
#: vllm-sleep-blog) use the last three.
CHECKPOINT_BYTES: dict[str, int] = {"qwen3-coder-30b-a3b": 61_000_000_000, "qwen3-32b": 65_600_000_000,
                                    "qwen3-0.6b": 1_192_000_000, "phi-3-vision-128k-instruct": 8_400_000_000}

#: vLLM's defaults for the 8k-context Llama-3-8B of vllm-pr-11005 (vLLM V0: no chunked prefill
#: below 32k context, so the token budget is max_model_len): the profile run's budget.
VLLM_8K_DEFAULTS = {"max_num_batched_tokens": 8192, "max_model_len": 8192, "max_num_seqs": 256}

_NVME = re.compile(r"NVMe\s+([0-9]+(?:\.[0-9]+)?)\s*GB/s", re.IGNORECASE)
_FP8 = re.compile(r"fp8", re.IGNORECASE)
_LOADER = re.compile(r"loader\s*=\s*([A-Za-z0-9_.-]+)")
_SLEEP = re.compile(r"sleep[_-]?level[_-]?(\d)", re.IGNORECASE)


@dataclass(frozen=True)
class StartSimulation:
    """A start row's simulated value (row's unit), how it was set up, and the start's parts (s)."""

    value: float
    note: str
    components: dict[str, float] = field(default_factory=dict)


def simulate_start_row(row: Row | Mapping[str, Any]) -> float:
    """The row's metric as the simulator gives it for the row's setup, in the row's unit; raises
    NotSimulated when the setup is outside what the simulator expresses."""
    return simulate_start_row_detail(row).value


def simulate_start_row_detail(row: Row | Mapping[str, Any]) -> StartSimulation:
    """simulate_start_row, with the setup note (stand-ins, drive) and the start's components."""
    r = _as_row(row)
    if r.group not in START_GROUPS:
        raise NotSimulated(f"not a start row (group {r.group!r}; start groups: {', '.join(START_GROUPS)})")
    if _FP8.search(r.model) or _FP8.search(r.engine_mode):
        raise NotSimulated("FP8 weights (the simulator models fp16/bf16 only)")
    notes: list[str] = []
    gpu = r.gpu
    if gpu not in GPUS:
        gpu = STAND_IN_GPU
        notes.append(f"GPU {r.gpu!r} not named: simulated on {STAND_IN_GPU}")
    gpu = GPUS[gpu].name
    mode = r.engine_mode.strip()
    sleep = _SLEEP.search(mode)
    loader_match = _LOADER.search(mode)
    if sleep:
        if sleep.group(1) != "1":
            raise NotSimulated(f"sleep level {sleep.group(1)} (only level 1, weights kept in host memory, is modelled)")
        loader_name = "vllm-sleep-l1"
    else:
        loader_name = loader_match.group(1) if loader_match else "safetensors"
    if loader_name not in LOADERS:
        raise NotSimulated(f"loader {loader_name!r} is not modelled (known: {', '.join(LOADERS)})")
    metric = r.metric.strip().lower()
    transfer = metric in ("load", "wake")
    if metric not in ("load", "wake", "engine_init", "cold_start"):
        raise NotSimulated(f"metric {r.metric!r} of a start row (known: load, wake, engine_init, cold_start)")
    spec, stand_in = _model(r.model, r.tp, transfer)
    if stand_in:
        notes.append(stand_in)
    ssd = _nvme_bytes_per_s(r)
    if ssd is None:
        ssd = NodeSpec(GPUS[gpu]).ssd_bytes_per_s
        if metric in ("load", "cold_start") and not sleep:   # only these read the drive
            notes.append(f"drive speed not stated: node default {ssd / 1e9:g} GB/s (an assumption)")
    options: dict[str, Any] = {"cuda_graphs": "eager" not in mode.lower()}
    if metric in ("engine_init", "cold_start"):
        options.update(VLLM_8K_DEFAULTS)
    events = _run_cold_start(spec, r.tp, gpu, ssd, loader_name, options)
    parts = _components(events)
    key = {"load": "load_s", "wake": "startup_s", "engine_init": "init_s", "cold_start": "startup_s"}[metric]
    if key not in parts:
        raise NotSimulated(f"the run logged no {key} for this start")
    return StartSimulation(parts[key] / UNITS[r.unit], "; ".join(notes), parts)


# ------------------------------------------------------------------------------ internals
def _as_row(row: Row | Mapping[str, Any]) -> Row:
    """A Row from a Row or a mapping with published.csv's columns (values as read from CSV, or typed)."""
    if isinstance(row, Row):
        return row

    def text(key: str) -> str:
        value = row.get(key, "")
        return "" if value is None else str(value).strip()

    try:
        tp = int(float(text("tp"))) if text("tp") else 1
        value = float(text("value"))
    except ValueError as exc:
        raise NotSimulated(f"row {text('id')!r}: {exc}") from None
    unit = text("unit") or "s"
    if unit not in UNITS:
        raise NotSimulated(f"unknown unit {unit!r}")
    return Row(id=text("id"), group=text("group"), source=text("source"), gpu=text("gpu"), model=text("model"),
               tp=max(tp, 1), engine=text("engine"), engine_mode=text("engine_mode"), input_tokens=None,
               output_tokens=None, batch=None, metric=text("metric"), value=value, unit=unit, note=text("note"))


def _model(name: str, tp: int, transfer: bool) -> tuple[ModelSpec, str]:
    """The row's model spec and a stand-in note ("" for a preset)."""
    base = base_model_name(name).lower()
    if base in MODELS:
        return replace(MODELS[base], tp=tp), ""
    if base in CHECKPOINT_BYTES and transfer:
        # only its bytes move; the shape is a placeholder that splits over any TP up to 8
        spec = ModelSpec(base, 48, 2048, 32, 8, 6144, 151936, CHECKPOINT_BYTES[base], tp)
        return spec, f"{name} not a preset: simulated as its checkpoint's {CHECKPOINT_BYTES[base] / 1e9:.1f} GB " \
                     "(a transfer moves bytes only)"
    if base in CHECKPOINT_BYTES:
        moe = "MoE model " if re.search(r"-a\d+(\.\d+)?b\b", base) else ""
        raise NotSimulated(f"{moe}{name} not in presets: only its checkpoint's bytes are known, so only a transfer "
                           "(load / wake) is simulated; its engine init (for an MoE: profile run, torch.compile "
                           "in vLLM 0.11) is not modelled")
    raise NotSimulated(f"model {name!r} not in presets")


def _nvme_bytes_per_s(row: Row) -> float | None:
    m = _NVME.search(row.note)
    if m:
        return float(m.group(1)) * 1e9
    return SOURCE_NVME_BYTES_PER_S.get(row.source)


class _ColdStart(Policy):
    """One instance of the model, started by the row's loader when its request arrives."""

    capacity = 1 << 30

    def __init__(self, loader: str, tp: int) -> None:
        super().__init__({})
        self.loader, self.tp = loader, tp

    def on_request(self, sim: Any, req: Any) -> None:
        insts = sim.instances(req.model)
        inst = insts[0] if insts else sim.start_instance(req.model, sim.node_gpus(0)[:self.tp], loader=self.loader)
        sim.dispatch(req, inst)


def _run_cold_start(spec: ModelSpec, tp: int, gpu: str, ssd_bytes_per_s: float, loader: str,
                    options: dict[str, Any]) -> Any:
    from systems.sim.core import Simulator
    from systems.sim.options import CoreOptions
    from workloads.workload import Workload, canonical_frame

    node = NodeSpec(GPUS[gpu], gpus_per_node=max(tp, 1), ssd_bytes_per_s=ssd_bytes_per_s,
                    pcie_bytes_per_s=HOST_LINK_BYTES_PER_S.get(gpu, NodeSpec(GPUS[gpu]).pcie_bytes_per_s))
    cluster = ClusterSpec(f"fidelity-{gpu}", (node,))
    frame = canonical_frame(np.zeros(1), spec.name, np.array([16]), np.array([1]))
    opts = CoreOptions.model_validate(options)
    sim = Simulator(Workload(frame, {"source": "fidelity"}), cluster, _ColdStart(loader, tp), options=opts,
                    models={spec.name: spec})
    return sim.run().events


def _components(events: Any) -> dict[str, float]:
    """The first start's parts from its events' typed fields: load_s, init_s (and its split), startup_s."""
    out: dict[str, float] = {}
    for kind in ("load_end", "init_done", "instance_ready"):
        rows = events[events["kind"] == kind]
        if len(rows):
            out.update({k: float(v) for k, v in event_fields(rows.iloc[:1]).iloc[0].items() if k.endswith("_s")})
    return out
