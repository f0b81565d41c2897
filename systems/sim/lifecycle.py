"""Instances and prewarms through their lives: start (weights from a prewarm, host memory or SSD),
load, engine init, ready, drain and stop; prewarm, evict; KV resizing.

`Lifecycle` holds the live instances and prewarms of one run and is driven by the core
(core.Simulator), which it calls back for time, events, the policy's hooks and the parked queues.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from systems.sim.engine import BatchEngine
from systems.sim.entities import (
    INIT,
    KV,
    LOADING,
    PREWARMED,
    READY,
    STOPPED,
    WEIGHTS,
    Flow,
    Instance,
    Prewarm,
    SimError,
)
from systems.sim.startup import EngineInit, Loader, engine_init
from systems.sim.startup import loader as loader_named

if TYPE_CHECKING:
    from systems.sim.core import Simulator


class Lifecycle:
    """The run's instances and prewarms, and every operation that starts, loads or stops them."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.memory, self.loads = sim.memory, sim.loads
        self.instances: dict[int, Instance] = {}
        self.by_model: dict[str, list[Instance]] = {}
        self.prewarms: dict[int, Prewarm] = {}
        self.shards: dict[tuple[int, str], Prewarm] = {}    # (gpu, model) -> prewarm holding that shard
        self._init_parts: dict[tuple[Any, int, int], EngineInit] = {}   # (PerfModel, max_num_seqs, budget)

    def _alloc(self, gpu: int, category: str, model: str, nbytes: int) -> None:
        self.memory.alloc(gpu, category, model, nbytes, self.sim.now_s)

    def _check_group(self, gpus: Iterable[int]) -> tuple[int, ...]:
        group = tuple(gpus)
        if not group:
            raise SimError("empty GPU group")
        nodes = {self.memory.gpus[g].node for g in group}
        if len(nodes) != 1 or len(set(group)) != len(group):
            raise SimError(f"GPU group {group} must be distinct GPUs of one node")
        return group

    @staticmethod
    def _loader(name: str | None, default: str) -> Loader:
        try:
            return loader_named(name or default)
        except ValueError as exc:
            raise SimError(str(exc)) from None

    def _from_host(self, node: int, model: str) -> bool:
        """Whether node's host memory caches `model`'s checkpoint (or that of the model it copies)."""
        host = self.memory.host[node]
        return model in host or self.sim.model(model).name in host

    def engine_init_parts(self, model: str, tp: int, gpu: int, max_num_seqs: int,
                          max_num_batched_tokens: int | None = None) -> EngineInit:
        """Derived engine init of `model` on `tp` GPUs of `gpu`'s kind (startup.engine_init), cached;
        the profile run covers `max_num_batched_tokens` (default: the core option)."""
        sim = self.sim
        pm = sim.perf(model, tp, gpu)   # cached per (model, GPU kind, tp): keys this cache too
        budget = int(max_num_batched_tokens or sim.max_batched_tokens)
        key = (pm, max_num_seqs, budget)
        parts = self._init_parts.get(key)
        if parts is None:
            parts = self._init_parts[key] = engine_init(
                pm, max_num_batched_tokens=budget, max_num_seqs=max_num_seqs,
                max_model_len=sim.max_model_len, cuda_graphs=sim.cuda_graphs)
        return parts

    # ------------------------------------------------------------------ instances
    def start_instance(self, model: str, gpus: Iterable[int], *, kv_bytes_per_gpu: int | None = None,
                       max_num_seqs: int | None = None, compute_share: float = 1.0,
                       engine_init_s: float | None = None, already_warm: bool = False,
                       loader: str | None = None, max_num_batched_tokens: int | None = None) -> Instance:
        """Start an engine of `model` on `gpus` (one node). Weights come from a prewarm of the same
        TP on those GPUs, else host memory, else SSD, moved by `loader` (default: the policy's
        `LOADER`; startup.LOADERS); then engine init (`engine_init_s` given here: this start's
        whole init; else the option, else derived); then ready. KV defaults to
        `gpu_memory_utilization * capacity` minus everything else on the GPU. `already_warm` (t = 0
        only): the instance exists before the run (dedicated deployments). `max_num_batched_tokens`:
        the engine's token budget (prefill batches and profile run), default the core option."""
        sim, memory = self.sim, self.memory
        group = self._check_group(gpus)
        spec = sim.model(model)
        tp = len(group)
        if spec.heads % tp:
            raise SimError(f"{model}: {spec.heads} heads do not split over TP {tp}")
        node = memory.gpus[group[0]].node
        inst = Instance(sim.new_id(), model, spec, node, group, self._loader(loader, sim.policy.LOADER))
        inst.started_s = sim.now_s
        engine = inst.engine = BatchEngine(
            inst, sim.perf(model, tp, group[0]), sim, block_size=sim.block_size,
            max_num_seqs=int(max_num_seqs or sim.max_num_seqs),
            # the engine's token budget: its prefill batches and its profile run (None: the core option)
            max_num_batched_tokens=int(max_num_batched_tokens or sim.max_batched_tokens),
            chunk_budget=sim.chunk_budget, compute_share=float(compute_share))
        if inst.loader.no_engine_init:          # sleep-mode wake: the engine process stays up
            inst.init_parts = {"init_s": 0.0}
        elif engine_init_s is not None:         # the policy's own start cost (e.g. warm_engine_init_s)
            inst.init_parts = {"init_s": float(engine_init_s)}
        elif sim.engine_init_s is not None:     # the engine_init_s option replaces the derived init
            inst.init_parts = {"process_s": sim.process_start_s, "init_s": sim.engine_init_s}
        else:
            parts = self.engine_init_parts(model, tp, group[0], engine.max_num_seqs, engine.max_num_batched_tokens)
            inst.init_parts = {"process_s": sim.process_start_s, "init_s": parts.total_s, "fixed_s": parts.fixed_s,
                               "profile_s": parts.profile_s, "graph_capture_s": parts.graph_capture_s}
        inst.engine_init_s = inst.init_parts["init_s"] + inst.init_parts.get("process_s", 0.0)
        if already_warm and sim.now_s > 0:
            raise SimError("already_warm instances exist only at t = 0")
        # weights: take prewarmed shards, allocate the rest
        taken = []
        need = []
        for g in group:
            pw = self.shards.get((g, model))
            if pw is not None and pw.tp == tp:
                taken.append((g, pw))
            else:
                need.append(g)
        for g in need:
            if memory.free_bytes(g) < inst.shard_bytes:
                raise SimError(f"GPU {g} has {memory.free_bytes(g)} bytes free, {model} shard needs {inst.shard_bytes}")
        for g, pw in taken:
            self._take_shard(pw, g, inst)
        for g in need:
            self._alloc(g, WEIGHTS, model, inst.shard_bytes)
        if taken:
            inst.start_kind = "prewarmed"
        # KV
        if kv_bytes_per_gpu is None:
            kv_bytes_per_gpu = min(int(sim.gpu_util * memory.gpus[g].capacity_bytes) - memory.gpus[g].used_bytes
                                   for g in group)
            kv_bytes_per_gpu = min(kv_bytes_per_gpu, min(memory.free_bytes(g) for g in group))
        kv_bytes_per_gpu = int(kv_bytes_per_gpu)
        if kv_bytes_per_gpu < 0 or any(memory.free_bytes(g) < kv_bytes_per_gpu for g in group):
            raise SimError(f"no room for {kv_bytes_per_gpu} KV bytes of {model} on GPUs {group}")
        for g in group:
            self._alloc(g, KV, model, kv_bytes_per_gpu)
        self._set_blocks(inst, kv_bytes_per_gpu)
        self.instances[inst.id] = inst
        self.by_model.setdefault(model, []).append(inst)
        sim.log("instance_start", model, group, fields={"id": inst.id, "kind": inst.start_kind, "tp": tp})
        if already_warm:
            inst.start_kind = "warm"
            self._make_ready(inst)
            return inst
        # loads for the GPUs without a resident shard
        for g in need:
            links, source = self.loads.links(node, g, inst.loader.own_host_copy or self._from_host(node, model))
            inst.sources[source] = inst.sources.get(source, 0) + 1
            self.loads.start(g, inst.shard_bytes, links, inst, source, inst.loader, tp)
        if need:
            sim.log("load_begin", model, need, fields={"id": inst.id, "source": "+".join(sorted(inst.sources)),
                                                       "bytes": inst.shard_bytes * len(need), "loader": inst.loader.name})
        if inst.pending_flows == 0:
            self._begin_init(inst)
        return inst

    def stop_instance(self, inst: Instance, *, drain: bool = True, keep_weights: bool = False) -> None:
        """Stop `inst`. With `drain`, it takes no new requests and stops once its in-flight ones end;
        without, they go back to the parked queue (progress lost, recomputed elsewhere). With
        `keep_weights`, its weights stay on the GPUs as a finished prewarm."""
        if inst.state == STOPPED:
            return
        inst.keep_weights = keep_weights
        if drain and inst.in_flight > 0:
            if not inst.draining:
                inst.draining = True
                self.sim.log("instance_drain", inst.model, inst.gpus, fields={"id": inst.id, "in_flight": inst.in_flight})
            return
        self.finalize_stop(inst)

    def _blocks_to_bytes(self, inst: Instance, blocks: int) -> int:
        return -(-blocks * inst.engine.block_size * inst.spec.kv_bytes_per_token // inst.tp)

    def _set_blocks(self, inst: Instance, kv_bytes_per_gpu: int) -> None:
        inst.kv_bytes_per_gpu = kv_bytes_per_gpu
        engine = inst.engine
        engine.total_blocks = kv_bytes_per_gpu * inst.tp // (engine.block_size * inst.spec.kv_bytes_per_token)

    def kv_needed_bytes(self, inst: Instance) -> int:
        """KV bytes per GPU that the instance's requests hold now plus what its waiting requests'
        prompts and the decode stretch in progress need (conservative block bound)."""
        return self._blocks_to_bytes(inst, inst.engine.needed_blocks())

    def set_kv_bytes(self, inst: Instance, kv_bytes_per_gpu: int) -> int:
        """Resize `inst`'s KV cache per GPU: grow into free memory (SimError if absent), shrink no
        lower than the bytes its requests hold. Returns the size applied."""
        new = max(int(kv_bytes_per_gpu), self.kv_needed_bytes(inst))
        delta = new - inst.kv_bytes_per_gpu
        if delta > 0 and any(self.memory.free_bytes(g) < delta for g in inst.gpus):
            raise SimError(f"cannot grow KV of instance {inst.id} by {delta} bytes: GPUs {inst.gpus} lack room")
        if delta:
            for g in inst.gpus:
                self._alloc(g, KV, inst.model, delta)
            self._set_blocks(inst, new)
            if delta > 0:
                inst.engine.kv_grew()
        return new

    # ------------------------------------------------------------------ prewarms
    def prewarm(self, model: str, gpus: Iterable[int], *, already_loaded: bool = False,
                loader: str | None = None) -> Prewarm:
        """Load `model`'s weights onto `gpus` (TP = len(gpus)) without starting an engine, moved by
        `loader` (default: the policy's `PREWARM_LOADER`).
        `already_loaded` (t = 0 only): the weights were resident before the run, as a deployment
        that was running before the replayed slice would hold them."""
        sim, memory = self.sim, self.memory
        if already_loaded and sim.now_s > 0:
            raise SimError("already_loaded prewarms exist only at t = 0")
        group = self._check_group(gpus)
        spec = sim.model(model)
        tp = len(group)
        pw = Prewarm(sim.new_id(), model, spec, memory.gpus[group[0]].node, group, tp)
        for g in group:
            if (g, model) in self.shards:
                raise SimError(f"{model} is already prewarmed on GPU {g}")
            if memory.free_bytes(g) < pw.shard_bytes:
                raise SimError(f"GPU {g} has {memory.free_bytes(g)} bytes free, {model} shard needs {pw.shard_bytes}")
        pw.started_s = sim.now_s
        pw.clock = sim.clock
        how = self._loader(loader, sim.policy.PREWARM_LOADER)
        self.prewarms[pw.id] = pw
        sources = set()
        for g in group:
            self._alloc(g, PREWARMED, model, pw.shard_bytes)
            self.shards[(g, model)] = pw
            if already_loaded:
                continue
            links, source = self.loads.links(pw.node, g, self._from_host(pw.node, model))
            sources.add(source)
            self.loads.start(g, pw.shard_bytes, links, pw, source, how, tp)
        source = "before-run" if already_loaded else "+".join(sorted(sources))
        sim.log("prewarm", model, group, fields={"id": pw.id, "source": source, "bytes": pw.shard_bytes * tp})
        if already_loaded:
            pw.done_s = sim.now_s
            sim.log("prewarm_done", model, group, fields={"id": pw.id, "load_s": 0.0})
        return pw

    def evict(self, pw: Prewarm) -> None:
        """Drop a prewarm's weights (cancelling its loads); frees its memory at once."""
        if pw.evicted:
            return
        for flow in list(pw.flows.values()):
            self.loads.cancel(flow)
        pw.flows.clear()
        for g in pw.gpus:
            if self.shards.get((g, pw.model)) is pw:
                del self.shards[(g, pw.model)]
                self._alloc(g, PREWARMED, pw.model, -pw.shard_bytes)
        pw.evicted = True
        self.prewarms.pop(pw.id, None)
        if pw.gpus:
            self.sim.log("evict", pw.model, pw.gpus, fields={"id": pw.id})

    def _take_shard(self, pw: Prewarm, gpu: int, inst: Instance) -> None:
        """Move one GPU's prewarmed shard of `pw` into `inst` (an in-flight load continues for it)."""
        del self.shards[(gpu, pw.model)]
        self._alloc(gpu, PREWARMED, pw.model, -pw.shard_bytes)
        self._alloc(gpu, WEIGHTS, inst.model, inst.shard_bytes)
        flow = pw.flows.pop(gpu, None)
        if flow is not None:
            flow.owner = inst
            inst.flows[gpu] = flow
            inst.pending_flows += 1
            inst.sources["prewarm-partial"] = inst.sources.get("prewarm-partial", 0) + 1
        else:
            inst.sources["prewarm"] = inst.sources.get("prewarm", 0) + 1
        pw.gpus = tuple(g for g in pw.gpus if g != gpu)
        if not pw.gpus:
            self.prewarms.pop(pw.id, None)

    # ------------------------------------------------------------------ events: load, init, ready, stop
    def flow_done(self, f: Flow) -> None:
        """A shard finished loading: an instance whose last one it was ends its load (after the
        loader's fixed cost); a prewarm whose last one it was is done."""
        sim, owner = self.sim, f.owner
        if isinstance(owner, Instance):
            owner.pending_flows -= 1
            if owner.pending_flows == 0 and owner.state == LOADING:
                if owner.loader.fixed_s > 0:   # the loader's per-load cost (files, buffers) ends the load
                    sim.push(sim.now_s + owner.loader.fixed_s, self._on_load_done, (owner, owner.version))
                else:
                    self._on_load_done((owner, owner.version))
        elif not owner.flows and not owner.evicted:
            owner.done_s = sim.now_s
            sim.log("prewarm_done", owner.model, owner.gpus, fields={"id": owner.id, "load_s": sim.now_s - owner.started_s})
            sim.policy.on_prewarm_done(sim, owner)

    def _on_load_done(self, arg: tuple[Instance, int]) -> None:
        inst, version = arg
        if version != inst.version or inst.state != LOADING:
            return
        sim = self.sim
        tier = "+".join(sorted(s for s in inst.sources if not s.startswith("prewarm"))) or "prewarm"
        sim.log("load_end", inst.model, inst.gpus, fields={"id": inst.id, "load_s": sim.now_s - inst.started_s,
                                                           "tier": tier, "loader": inst.loader.name})
        self._begin_init(inst)

    def _begin_init(self, inst: Instance) -> None:
        inst.state = INIT
        inst.version += 1
        self.sim.push(self.sim.now_s + inst.engine_init_s, self._on_init_done, (inst, inst.version))

    def _on_init_done(self, arg: tuple[Instance, int]) -> None:
        inst, version = arg
        if version != inst.version or inst.state != INIT:
            return
        self.sim.log("init_done", inst.model, inst.gpus,
                     fields={"id": inst.id, **inst.init_parts, "graphs": self.sim.cuda_graphs})
        self._make_ready(inst)

    def _make_ready(self, inst: Instance) -> None:
        sim = self.sim
        inst.state = READY
        inst.ready_s = sim.now_s
        sim.log("instance_ready", inst.model, inst.gpus,
                fields={"id": inst.id, "kind": inst.start_kind, "startup_s": sim.now_s - inst.started_s})
        for r in inst.engine.waiting:
            r.load_s = sim.now_s - r.dispatch_s
        if inst.engine.waiting:
            inst.engine.kick()
        sim.policy.on_ready(sim, inst)

    def finalize_stop(self, inst: Instance) -> None:
        """Stop `inst` now: cancel its loads, re-park its requests, free (or keep as a prewarm) its memory."""
        sim = self.sim
        was = inst.state
        inst.state = STOPPED
        inst.version += 1
        for f in list(inst.flows.values()):
            self.loads.cancel(f)
        inst.flows.clear()
        inst.pending_flows = 0
        # requests still on it go back to the parked queue
        orphans = inst.engine.clear()
        for r in sorted(orphans, key=lambda r: r.arrival_s, reverse=True):
            r.inst = None
            r.epoch += 1
            r.gen = 0
            r.prefilled = 0
            r.parked = True
            sim.parked(r.model).appendleft(r)
        inst.in_flight = 0
        for g in inst.gpus:
            self._alloc(g, KV, inst.model, -inst.kv_bytes_per_gpu)
        inst.kv_bytes_per_gpu = 0
        if inst.keep_weights and was not in (LOADING,):
            pw = Prewarm(sim.new_id(), inst.model, inst.spec, inst.node, inst.gpus, inst.tp)
            pw.started_s = pw.done_s = sim.now_s
            for g in inst.gpus:
                self._alloc(g, WEIGHTS, inst.model, -inst.shard_bytes)
                if (g, inst.model) in self.shards:
                    raise SimError(f"{inst.model} already prewarmed on GPU {g}")
                self._alloc(g, PREWARMED, inst.model, inst.shard_bytes)
                self.shards[(g, inst.model)] = pw
            self.prewarms[pw.id] = pw
        else:
            for g in inst.gpus:
                self._alloc(g, WEIGHTS, inst.model, -inst.shard_bytes)
        del self.instances[inst.id]
        self.by_model[inst.model].remove(inst)
        sim.log("instance_stop", inst.model, inst.gpus, fields={"id": inst.id, "keep_weights": inst.keep_weights})
        sim.policy.on_stopped(sim, inst)
