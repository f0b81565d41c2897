"""MuxServe-style GPU sharing: models colocated for the whole run on shared GPU groups.

Models: static placement (by compute demand, on the group keeping load most even), MPS-like compute
shares stretching each model's iterations, KV split so colocated models hold equal tokens, bounded
max_num_seqs, no cold starts. Leaves out: per-iteration prefill/decode multiplexing, mixed mesh sizes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import Field

from harness.contracts.errors import WarmbenchError
from systems.sim.options import Count, Fraction, SimOptions
from systems.sim.policy import BATCH_CAPACITY, Policy
from systems.sim.registry import register

if TYPE_CHECKING:
    from systems.sim.entities import Request
    from systems.sim.policy import ClusterAPI


@dataclass(frozen=True)
class MuxModel:
    """A model to colocate: weights, KV per token, smallest TP it fits, and compute demand (any unit)."""

    name: str
    weight_bytes: int
    kv_bytes_per_token: int
    min_tp: int
    demand: float


@dataclass(frozen=True)
class MuxGroup:
    """GPUs (global ids, one node) that a set of models share, each model TP = len(gpus)."""

    gpus: tuple[int, ...]
    models: tuple[str, ...] = ()


def split_groups(gpus_per_node: Sequence[int], group_size: int) -> list[tuple[int, ...]]:
    """Cut every node into groups of `group_size` GPUs (a node's remainder forms a smaller group)."""
    groups: list[tuple[int, ...]] = []
    base = 0
    for n in gpus_per_node:
        for start in range(0, n, group_size):
            groups.append(tuple(range(base + start, base + min(start + group_size, n))))
        base += n
    return groups


def default_group_size(n_models: int, max_tp: int, gpus_per_node: Sequence[int], heads: Sequence[int]) -> int:
    """Largest TP any model needs, doubled while there are more groups than models (so no GPU
    sits idle) and every model's heads still split over the group."""
    size = max_tp
    while (sum(n // size for n in gpus_per_node) > n_models and size * 2 <= max(gpus_per_node)
           and all(h % (size * 2) == 0 for h in heads)):
        size *= 2
    return size


def place_models(models: Sequence[MuxModel], groups: Sequence[tuple[int, ...]], usable_bytes_per_gpu: int,
                 min_kv_fraction: float = 0.1) -> tuple[list[MuxGroup], list[str]]:
    """Greedy MuxServe placement: largest demand first, onto the fitting group that leaves the
    highest per-GPU load lowest (ties: the least loaded group). Returns (groups, unplaced models).

    A group fits a model if its TP is large enough and all weights on it leave at least
    `min_kv_fraction` of the usable memory for KV cache.
    """
    load = [0.0] * len(groups)
    weights = [0] * len(groups)
    members: list[list[str]] = [[] for _ in groups]
    unplaced: list[str] = []
    budget = usable_bytes_per_gpu * (1.0 - min_kv_fraction)
    for m in sorted(models, key=lambda m: (-m.demand, m.name)):
        best: tuple[float, float, int] | None = None
        for i, g in enumerate(groups):
            size = len(g)
            if size < m.min_tp or weights[i] + -(-m.weight_bytes // size) > budget:
                continue
            after = (load[i] + m.demand) / size
            worst = max([after] + [load[j] / len(groups[j]) for j in range(len(groups)) if j != i])
            key = (worst, after, i)
            if best is None or key < best:
                best = key
        if best is None:
            unplaced.append(m.name)
            continue
        i = best[2]
        load[i] += m.demand
        weights[i] += -(-m.weight_bytes // len(groups[i]))
        members[i].append(m.name)
    return [MuxGroup(g, tuple(ms)) for g, ms in zip(groups, members)], unplaced


def compute_shares(models: Sequence[MuxModel], floor: float = 0.05) -> dict[str, float]:
    """MPS-like compute share per colocated model, proportional to demand (at least `floor`), summing to 1."""
    if not models:
        return {}
    total = sum(max(m.demand, 0.0) for m in models)
    raw = {m.name: (max(m.demand, 0.0) / total if total > 0 else 1.0 / len(models)) for m in models}
    raw = {k: max(v, floor) for k, v in raw.items()}
    s = sum(raw.values())
    return {k: v / s for k, v in raw.items()}


def kv_split(models: Sequence[MuxModel], tp: int, free_bytes_per_gpu: int) -> dict[str, int]:
    """KV bytes per GPU for each colocated model, split so that all hold the same token count."""
    per_token = {m.name: -(-m.kv_bytes_per_token // tp) for m in models}
    total = sum(per_token.values())
    if total == 0:
        return {m.name: 0 for m in models}
    tokens = max(free_bytes_per_gpu, 0) // total
    return {name: tokens * b for name, b in per_token.items()}


def model_demand(sim: ClusterAPI, model: str) -> float:
    """Compute demand of a model over the workload: requests x tokens x weight bytes (FLOPs ~ 2 x params x tokens)."""
    frame = sim.workload.requests
    rows = frame[frame["model"] == model]
    tokens = float((rows["input_tokens"] + rows["output_tokens"]).sum())
    return tokens * sim.model(model).weight_bytes


class MuxServeOptions(SimOptions):
    """Options of `muxserve`."""

    group_size: Count = Field(0, ge=0, le=4096)
    """GPUs per shared group; 0: see default_group_size."""
    model_max_num_seqs: Count = Field(BATCH_CAPACITY, ge=1, le=1_000_000)
    """Per model engine (bounded, as MuxServe's configs set it)."""
    min_kv_fraction: Fraction = Field(0.1, lt=1.0)
    """A group must keep this share of usable memory for KV."""


class MuxServe(Policy):
    """Every model on its group for the whole run: warm at t = 0, compute and KV shared."""

    #: vLLM's default; never used here: no cold starts, the instances exist before t = 0
    LOADER = "safetensors"

    Options = MuxServeOptions
    options: MuxServeOptions

    def __init__(self, options: SimOptions | Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        self.max_num_seqs = self.options.model_max_num_seqs
        self.capacity = self.max_num_seqs
        self.unplaced: dict[str, str] = {}

    def setup(self, sim: ClusterAPI) -> None:
        models = [MuxModel(m, sim.model(m).weight_bytes, sim.model(m).kv_bytes_per_token, sim.model(m).tp,
                           model_demand(sim, m)) for m in sim.workload_models]
        per_node = [n.gpus_per_node for n in sim.cluster.nodes]
        size = self.options.group_size or default_group_size(
            len(models), max([m.min_tp for m in models] or [1]), per_node, [sim.model(m.name).heads for m in models])
        size = min(size, max(per_node))
        usable = int(sim.gpu_util * min(n.gpu.memory_bytes for n in sim.cluster.nodes))
        groups, unplaced = place_models(models, split_groups(per_node, size), usable,
                                        self.options.min_kv_fraction)
        self.unplaced = {m: f"muxserve: model {m} fits no group of {size} GPUs beside the others "
                            f"(min_kv_fraction {self.options.min_kv_fraction:g}; try option group_size)"
                         for m in unplaced}
        if unplaced:
            sim.log("placement", fields={"unplaced": ",".join(unplaced)})
        by_name = {m.name: m for m in models}
        for g in groups:
            if not g.models:
                continue
            tp = len(g.gpus)
            members = [by_name[n] for n in g.models]
            for m in members:
                if sim.model(m.name).heads % tp:
                    raise WarmbenchError(f"muxserve: {m.name} cannot run with TP {tp}; set option group_size")
            weights = sum(-(-m.weight_bytes // tp) for m in members)
            kv = kv_split(members, tp, usable - weights)
            shares = compute_shares(members)
            for m in members:
                sim.start_instance(m.name, g.gpus, kv_bytes_per_gpu=kv[m.name], max_num_seqs=self.max_num_seqs,
                                   compute_share=shares[m.name], already_warm=True)
            sim.log("placement", ",".join(g.models), g.gpus,
                    " ".join(f"{n}:share={shares[n]:.2f},kv_gib={kv[n] / 2**30:.1f}" for n in g.models),
                    fields={**{f"share:{n}": shares[n] for n in g.models}, **{f"kv_bytes:{n}": kv[n] for n in g.models}})

    def on_request(self, sim: ClusterAPI, req: Request) -> None:
        if req.model in self.unplaced:
            sim.fail_parked(req.model, self.unplaced[req.model])
            return
        if len(sim.parked(req.model)) > 1:
            return
        inst = self.pick_instance(sim, req.model)
        if inst is not None:
            sim.dispatch(req, inst)


register("muxserve", MuxServe)
