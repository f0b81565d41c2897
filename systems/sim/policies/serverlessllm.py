"""`serverlessllm`: ServerlessLLM-style autoscaling on GPUs (the paper's SLLM-GPU baseline).

Models: scale from zero per model, a keep-alive (instances beyond ceil(load / capacity) stop after
it), checkpoints in each node's host memory (LRU within `host_memory_bytes`: PCIe speed, else SSD),
placement preferring a node caching the checkpoint. Leaves out: live migration, loader pipelining.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from systems.sim.options import MIN_TICK_S, Count, Integer, Seconds, SimOptions
from systems.sim.policy import BATCH_CAPACITY, Policy
from systems.sim.registry import register
from systems.sim.startup import vllm_default_batched_tokens

if TYPE_CHECKING:
    from systems.sim.entities import Instance, Request
    from systems.sim.policy import ClusterAPI


class ServerlessLLMOptions(SimOptions):
    """Options of `serverlessllm`."""

    keep_alive_s: Seconds = Field(30.0, le=1e7)
    """Surplus (or idle) instances stop after this long."""
    host_memory_bytes: Integer = Field(-1, ge=-1, le=2**50)
    """Checkpoint cache per node; < 0: the node's host memory."""
    capacity: Count = Field(BATCH_CAPACITY, ge=1, le=1_000_000)
    """Concurrent requests per instance."""
    tick_s: Seconds = Field(1.0, ge=MIN_TICK_S, le=3600.0)
    """Keep-alive check period."""
    engine_max_num_batched_tokens: Count = Field(0, ge=0, le=10**9)
    """Its engines' max_num_batched_tokens (prefill budget and profile-run tokens); 0: vLLM's default,
    max(max_model_len, 2048), as ServerlessLLM's vLLM backend passes no budget (ServerlessLLM
    sllm/backends/vllm_backend.py: only max_model_len, TP, gpu_memory_utilization, enforce_eager,
    prefix caching, dtype) and the paper ran ServerlessLLM itself (the reference's
    trace-generator/request_generator.py SERVERLESSLLM path), not the reference's engine args."""


class ServerlessLLM(Policy):
    #: its own checkpoint format and loader (sllm-store): from the host-memory pool it caches
    #: checkpoints in, else from SSD (systems/sim/startup.py)
    LOADER = "serverlessllm"
    Options = ServerlessLLMOptions
    options: ServerlessLLMOptions

    def __init__(self, options: SimOptions | Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        o = self.options
        self.keep_alive_s = o.keep_alive_s
        self.host_budget = o.host_memory_bytes
        self.capacity = o.capacity
        self.tick_s = o.tick_s
        self.engine_budget = o.engine_max_num_batched_tokens
        self.idle_since: dict[int, float] = {}
        self._reclaiming = False
        self.surplus_since: dict[str, float] = {}
        self.lru: list[dict[str, float]] = []

    # ---- host-memory checkpoint cache ------------------------------------------------------
    def _budget(self, sim: ClusterAPI, node: int) -> int:
        own = sim.cluster.nodes[node].host_memory_bytes
        return own if self.host_budget < 0 else min(own, self.host_budget)

    def _cache(self, sim: ClusterAPI, node: int, model: str) -> None:
        """Keep `model`'s checkpoint in node's host memory, evicting least recently used ones."""
        size = sim.model(model).weight_bytes
        budget = self._budget(sim, node)
        lru = self.lru[node]
        if model in lru:
            lru[model] = sim.now_s
            return
        if size > budget:
            return
        used = sum(sim.model(m).weight_bytes for m in sim.host_models(node))
        for victim in sorted(lru, key=lambda m: lru[m]):
            if used + size <= budget:
                break
            sim.host_evict(node, victim)
            used -= sim.model(victim).weight_bytes
            del lru[victim]
        if used + size <= budget:
            sim.host_put(node, model)
            lru[model] = sim.now_s

    def setup(self, sim: ClusterAPI) -> None:
        self.lru = [{} for _ in sim.cluster.nodes]
        counts = sim.workload.requests["model"].value_counts()
        popular = sorted(sim.workload_models, key=lambda m: (-int(counts.get(m, 0)), m))
        for node in range(len(sim.cluster.nodes)):
            for m in popular:   # checkpoints that fit are cached before the run (most requested first)
                size = sim.model(m).weight_bytes
                used = sum(sim.model(x).weight_bytes for x in sim.host_models(node))
                if used + size <= self._budget(sim, node):
                    sim.host_put(node, m)
                    self.lru[node][m] = 0.0

    # ---- placement -------------------------------------------------------------------------
    def _free_group(self, sim: ClusterAPI, node: int, tp: int) -> tuple[int, ...] | None:
        ids = sim.node_gpus(node)
        for start in range(0, len(ids) - tp + 1, tp):
            group = tuple(ids[start:start + tp])
            if all(sim.used_bytes(g) == 0 for g in group):
                return group
        return None

    def start(self, sim: ClusterAPI, model: str) -> Instance | None:
        """Locality first: a node caching the checkpoint, else any node (SSD); idle instances
        of other models are stopped to make room when no group is free."""
        tp = sim.model(model).tp
        nodes = range(len(sim.cluster.nodes))
        order = sorted(nodes, key=lambda n: (model not in sim.host_models(n), n))
        for n in order:
            group = self._free_group(sim, n, tp)
            if group is not None:
                return self._launch(sim, model, group)
        idle: dict[int, list[Instance]] = {}
        for i in sim.instances():
            if i.ready and i.accepting and i.in_flight == 0:   # a draining one stops by itself
                idle.setdefault(i.node, []).append(i)
        for n in order:
            if n not in idle:
                continue
            self._reclaiming = True
            try:
                freed = self._reclaim(sim, n, tp, idle[n])
            finally:
                self._reclaiming = False
            if freed:
                group = self._free_group(sim, n, tp)
                if group is not None:
                    return self._launch(sim, model, group)
        return None

    def _launch(self, sim: ClusterAPI, model: str, group: tuple[int, ...]) -> Instance:
        node = sim.gpus[group[0]].node
        cached = model in sim.host_models(node)
        budget = self.engine_budget or vllm_default_batched_tokens(sim.max_model_len)
        inst = sim.start_instance(model, group, max_num_batched_tokens=budget)
        sim.log("placement", model, group, fields={"id": inst.id, "locality": "host" if cached else "ssd"})
        self._cache(sim, node, model)  # the loader stages the checkpoint through host memory
        return inst

    def _reclaim(self, sim: ClusterAPI, node: int, tp: int, idle: list[Instance]) -> bool:
        """Stop idle instances on `node` (longest idle first) until an aligned group of `tp` is free."""
        for inst in sorted(idle, key=lambda i: (self.idle_since.get(i.id, i.ready_s), i.id)):
            sim.log("keep_alive_evict", inst.model, inst.gpus, fields={"id": inst.id, "reason": "room"})
            self._stop(sim, inst)
            if self._free_group(sim, node, tp) is not None:
                return True
        return False

    def _stop(self, sim: ClusterAPI, inst: Instance) -> None:
        self.idle_since.pop(inst.id, None)
        if inst.accepting:
            sim.stop_instance(inst, drain=True)

    # ---- routing and keep-alive ------------------------------------------------------------
    def on_request(self, sim: ClusterAPI, req: Request) -> None:
        self.route(sim, req)

    def dispatched(self, sim: ClusterAPI, inst: Instance) -> None:
        self.idle_since.pop(inst.id, None)

    def on_finished(self, sim: ClusterAPI, req: Request, inst: Instance) -> None:
        if inst.in_flight == 0:
            self.idle_since[inst.id] = sim.now_s
        if sim.parked(req.model) or any(sim.parked(m) for m in sim.parked_models()):
            self.serve_parked(sim)

    def on_ready(self, sim: ClusterAPI, inst: Instance) -> None:
        if inst.in_flight == 0:
            self.idle_since[inst.id] = sim.now_s
        self.serve_parked(sim)

    def on_stopped(self, sim: ClusterAPI, inst: Instance) -> None:
        self.idle_since.pop(inst.id, None)
        if not self._reclaiming:   # a stop made to free room is followed by the start that wanted it
            self.serve_parked(sim)

    def on_tick(self, sim: ClusterAPI) -> None:
        """Keep-alive: a model holding more instances than ceil(load / capacity) for `keep_alive_s`
        drains its least loaded one (so a model with no load scales to zero)."""
        now = sim.now_s
        for model in sim.workload_models:
            insts = [i for i in sim.instances(model) if i.accepting]
            if not insts:
                self.surplus_since.pop(model, None)
                continue
            load = sum(i.in_flight for i in insts) + len(sim.parked(model))
            if len(insts) <= -(-load // self.capacity):
                self.surplus_since.pop(model, None)
                continue
            since = self.surplus_since.setdefault(model, now)
            ready = [i for i in insts if i.ready]
            if now - since >= self.keep_alive_s and ready:
                victim = min(ready, key=lambda i: (i.in_flight, -i.id))
                sim.log("keep_alive_evict", model, victim.gpus, f"id={victim.id} surplus_s={now - since:.1f}",
                        fields={"id": victim.id, "reason": "surplus", "surplus_s": now - since})
                self.surplus_since[model] = now
                self._stop(sim, victim)


register("serverlessllm", ServerlessLLM)
