"""The discrete-event core: virtual time, GPUs, links, instances (engines), and the cluster API.

A `Simulator` owns all state; a `Policy` (systems/sim/policy.py) drives it through the public
methods below. Events are (time, seq) ordered, so a run is a pure function of its inputs.

The batch scheduler of each instance (continuous batching in decode stretches) is its own
`engine.BatchEngine`, reached through `inst.engine`; the entities are in `entities.py`.

Loading: a load moves each GPU's shard over links: the GPU's PCIe link (host memory) and,
from SSD, the node's SSD link too; concurrent flows share each link equally, and a flow's rate is
what its loader reaches on its fair shares (systems/sim/startup.py: safetensors alternates the
disk read and a CPU copy, pipelined loaders run at the slower link), recomputed whenever a flow
starts or ends. A policy declares its loaders (`Policy.LOADER`, `Policy.PREWARM_LOADER`).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import replace
from operator import attrgetter
from heapq import heappush
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from harness.result import EVENT_COLUMNS, MEMORY_COLUMNS, REQUEST_COLUMNS, RunResult
from systems.sim.engine import BatchEngine
from systems.sim.entities import (  # noqa: F401  (re-exported: policies import them from here)
    CATEGORIES, INIT, KV, LOADING, PREWARMED, READY, STOPPED, WEIGHTS, Flow, Gpu, Instance, Link, Prewarm,
    Request, SimError,
)
from systems.sim.perf import PerfModel, coefficients_for
from systems.sim.specs import ClusterSpec, ModelSpec, check_fits, model_spec
from systems.sim.startup import EngineInit, Loader, engine_init, loader as loader_named

if TYPE_CHECKING:
    from systems.sim.policy import Policy
    from workloads.workload import Workload

#: Options the core itself reads (policies declare theirs in Policy.OPTIONS).
CORE_OPTIONS: dict[str, Any] = {
    # engine init after the weights are resident; None: derived from its parts (startup.py: fixed
    # + profile run + CUDA graph capture, grounded in vllm-pr-11005); a number replaces that
    "engine_init_s": None,
    # engine process start (Python, imports) before init: 0, as the WarmServe paper pre-spawns
    # engine processes and CUDA contexts for every system it compares (PAPER.md s.2)
    "process_start_s": 0.0,
    "gpu_memory_utilization": 0.9,   # share of GPU memory an instance may use (weights + KV) by default
    "block_size": 16,                # KV block size in tokens
    "max_num_seqs": 256,             # engine batch limit
    # prefill token budget per iteration, and the tokens of vLLM's profile run at engine init
    # (startup.profile_tokens): the WarmServe reference starts every engine with
    # --max-num-batched-tokens=100000 (LLMServe/WarmServe prewarm_manager.py create_engine,
    # muxserve_utils.py); a system whose engines run with other args declares its own budget
    # (start_instance(max_num_batched_tokens=), e.g. serverlessllm: vLLM's default)
    "max_num_batched_tokens": 100_000,
    "chunked_prefill_tokens": 0,     # > 0: chunked prefill with this token budget per iteration
    # prompt + output limit, as vLLM's --max-model-len (the paper's setting, and the live vllm
    # adapter's default): a longer request is rejected on arrival, as vLLM answers HTTP 400; 0 = none
    "max_model_len": 2048,
    "max_drain_s": 600.0,            # after the last arrival, how long to let requests finish
    # engine mode: decode steps replay CUDA graphs (vLLM's default; its published latency tests run
    # so) or run eager (`--enforce-eager`, the WarmServe paper's setting): systems/sim/perf.py
    "cuda_graphs": True,
}


class Simulator:
    """Virtual-time cluster driven by one policy; `run()` returns the RunResult tables."""

    def __init__(self, workload: "Workload", cluster: ClusterSpec, policy: "Policy", *,
                 options: dict[str, Any], seed: int = 0, duration_s: float | None = None, debug: bool = False,
                 models: Mapping[str, ModelSpec] | None = None) -> None:
        self.cluster, self.policy = cluster, policy
        self.options = options
        self.seed, self.debug = seed, debug
        self.rng = np.random.default_rng(seed)
        self.now_s = 0.0
        self._heap: list = []
        self._seq = 0
        self.gpus: list[Gpu] = []
        self._node_gpus: list[list[int]] = []
        self._pcie: list[Link] = []
        self._ssd: list[Link] = []
        for n, node in enumerate(cluster.nodes):
            ids = []
            for i in range(node.gpus_per_node):
                gid = len(self.gpus)
                self.gpus.append(Gpu(gid, n, i, node.gpu.memory_bytes, {}))
                self._pcie.append(Link(f"pcie{gid}", node.pcie_bytes_per_s))
                ids.append(gid)
            self._node_gpus.append(ids)
            self._ssd.append(Link(f"ssd{n}", node.ssd_bytes_per_s))
        self._host: list[dict[str, int]] = [{} for _ in cluster.nodes]
        #: per node, GPUs holding nothing at all (kept up to date by _alloc)
        self._empty: list[set[int]] = [set(ids) for ids in self._node_gpus]
        self._empty_count = len(self.gpus)
        #: bumps whenever a GPU becomes empty: lets placement helpers cache "no free group" answers
        self.empty_epoch = 0
        self._free_group_misses: dict[int, int] = {}   # tp -> empty_epoch of its last miss
        self._instances: dict[int, Instance] = {}
        self._by_model: dict[str, list[Instance]] = {}
        self._prewarms: dict[int, Prewarm] = {}
        self._shards: dict[tuple[int, str], Prewarm] = {}    # (gpu, model) -> prewarm holding that shard
        self._parked: dict[str, deque[Request]] = {}
        self._models: dict[str, ModelSpec] = dict(models or {})  # workload name -> spec, beyond the presets
        self._perf: dict[tuple, PerfModel] = {}
        self._next_id = 0
        self._events: list[tuple] = []
        self._memory: dict[tuple[float, int], list[tuple]] = {}   # (time, gpu) -> last snapshot then
        init = options.get("engine_init_s")
        self.engine_init_s = None if init is None else float(init)
        self.process_start_s = float(options.get("process_start_s", 0.0))
        self._init_parts: dict[tuple, EngineInit] = {}   # (PerfModel, max_num_seqs, budget)
        self.gpu_util = float(options["gpu_memory_utilization"])
        self.block_size = int(options["block_size"])
        self.max_num_seqs = int(options["max_num_seqs"])
        self.max_batched_tokens = int(options["max_num_batched_tokens"])
        self.chunk_budget = int(options["chunked_prefill_tokens"])
        self.max_model_len = int(options["max_model_len"])
        self.cuda_graphs = bool(options["cuda_graphs"])
        frame = workload.requests
        if duration_s is not None:
            frame = frame[frame["arrival_s"] < duration_s]
        self.duration_s = float(duration_s) if duration_s is not None else (float(frame["arrival_s"].max()) if len(frame) else 0.0)
        self.horizon_s = self.duration_s + float(options["max_drain_s"])
        self._frame = frame.reset_index(drop=True)
        #: what policies see: the workload truncated to the arrivals this run simulates
        self.workload = workload if duration_s is None else replace(workload, requests=self._frame)
        self._requests: list[Request] = list(map(
            Request, range(len(frame)), frame["request_id"].astype("int64").tolist(), frame["model"].astype(str).tolist(),
            frame["arrival_s"].astype("float64").tolist(), frame["input_tokens"].astype("int64").tolist(),
            frame["output_tokens"].astype("int64").tolist()))
        #: models of the (truncated) workload, in order of first arrival
        self.workload_models: list[str] = [str(m) for m in pd.unique(frame["model"])]
        for m in self.workload_models:
            self.model(m)  # validate names once
            self._parked[m] = deque()
        check_fits({m: self.model(m) for m in self.workload_models}, cluster, self.gpu_util)
        self._next_arrival = 0
        self._finished = 0
        self._open: dict[str, int] = {m: 0 for m in self.workload_models}   # arrived, not finished

    # ------------------------------------------------------------------ queries
    def model(self, name: str) -> ModelSpec:
        """Spec of a workload model name (cached)."""
        spec = self._models.get(name)
        if spec is None:
            spec = self._models[name] = model_spec(name)
        return spec

    def perf(self, model: str, tp: int | None = None, gpu: int = 0) -> PerfModel:
        """Performance model of `model` on `tp` GPUs of the kind of GPU `gpu`."""
        spec = self.model(model)
        tp = tp or spec.tp
        gspec = self.cluster.nodes[self.gpus[gpu].node].gpu
        key = (spec.name.split("#")[0], gspec.name, tp)
        pm = self._perf.get(key)
        if pm is None:
            pm = self._perf[key] = PerfModel(spec, gspec, tp, coefficients_for(gspec, self.cluster.coefficients),
                                             cuda_graphs=self.cuda_graphs)
        return pm

    def node_gpus(self, node: int) -> list[int]:
        """Global GPU ids of `node`, in order (do not mutate)."""
        return self._node_gpus[node]

    def instances(self, model: str | None = None) -> list[Instance]:
        """Live (not stopped) instances, of one model or all, in creation order."""
        if model is None:
            return [i for i in self._instances.values()]
        return self._by_model.get(model, [])

    def empty_gpus(self, node: int | None = None) -> int | set[int]:
        """GPUs with nothing on them: the set of one node's (do not mutate), or the cluster's count."""
        return self._empty_count if node is None else self._empty[node]

    def first_free_group(self, tp: int) -> tuple[int, ...] | None:
        """The lowest TP-aligned group of `tp` empty GPUs on one node, or None (O(1) while no GPU has
        emptied since the last miss for this `tp`)."""
        if self._free_group_misses.get(tp) == self.empty_epoch or self._empty_count < tp:
            return None
        for node, ids in enumerate(self._node_gpus):
            empty = self._empty[node]
            if len(empty) < tp:
                continue
            for start in range(0, len(ids) - tp + 1, tp):
                group = tuple(ids[start:start + tp])
                if all(g in empty for g in group):
                    return group
        self._free_group_misses[tp] = self.empty_epoch
        return None

    def prewarms(self, model: str | None = None) -> list[Prewarm]:
        return [p for p in self._prewarms.values() if model is None or p.model == model]

    def prewarms_on(self, gpu: int) -> list[Prewarm]:
        return [p for (g, _), p in self._shards.items() if g == gpu]

    def free_bytes(self, gpu: int) -> int:
        g = self.gpus[gpu]
        return g.capacity_bytes - g.used_bytes

    def used_bytes(self, gpu: int, category: str | None = None) -> int:
        g = self.gpus[gpu]
        if category is None:
            return g.used_bytes
        return sum(b for (c, _), b in g.usage.items() if c == category)

    def parked(self, model: str) -> deque[Request]:
        """Requests of `model` waiting for an instance, oldest first (live view; do not mutate)."""
        q = self._parked.get(model)
        if q is None:
            q = self._parked[model] = deque()
        return q

    def open_requests(self, model: str) -> int:
        """Requests of `model` that arrived and have not finished (parked or on an instance)."""
        return self._open.get(model, 0)

    def parked_models(self) -> list[str]:
        """Models with parked requests, oldest parked request first."""
        return sorted((m for m, q in self._parked.items() if q), key=lambda m: self._parked[m][0].arrival_s)

    def host_models(self, node: int) -> list[str]:
        return list(self._host[node])

    def host_free_bytes(self, node: int) -> int:
        return self.cluster.nodes[node].host_memory_bytes - sum(self._host[node].values())

    def kv_needed_bytes(self, inst: Instance) -> int:
        """KV bytes per GPU that the instance's requests hold now plus what its waiting requests'
        prompts need (conservative block bound)."""
        return self._blocks_to_bytes(inst, inst.engine.needed_blocks())

    def _clock(self) -> float:
        return self.now_s

    # ------------------------------------------------------------------ control-plane ops
    def log(self, kind: str, model: str = "", gpus: Iterable[int] = (), detail: str = "") -> None:
        gpus = tuple(gpus)
        node = self.gpus[gpus[0]].node if gpus else -1
        self._events.append((self.now_s, kind, model, node, ",".join(str(self.gpus[g].index) for g in gpus), detail))

    def host_put(self, node: int, model: str) -> None:
        """Record `model`'s checkpoint as cached in node's host memory (raises when it does not fit)."""
        if model in self._host[node]:
            return
        size = self.model(model).weight_bytes
        if size > self.host_free_bytes(node):
            raise SimError(f"host memory of node {node} is full ({self.host_free_bytes(node)} bytes free, {model} needs {size})")
        self._host[node][model] = size
        self._events.append((self.now_s, "host_put", model, node, "", f"bytes={size}"))

    def host_evict(self, node: int, model: str) -> None:
        if self._host[node].pop(model, None) is not None:
            self._events.append((self.now_s, "host_evict", model, node, "", ""))

    def _check_group(self, gpus: Iterable[int]) -> tuple[int, ...]:
        group = tuple(gpus)
        if not group:
            raise SimError("empty GPU group")
        nodes = {self.gpus[g].node for g in group}
        if len(nodes) != 1 or len(set(group)) != len(group):
            raise SimError(f"GPU group {group} must be distinct GPUs of one node")
        return group

    def engine_init_parts(self, model: str, tp: int, gpu: int, max_num_seqs: int,
                          max_num_batched_tokens: int | None = None) -> EngineInit:
        """Derived engine init of `model` on `tp` GPUs of `gpu`'s kind (startup.engine_init), cached;
        the profile run covers `max_num_batched_tokens` (default: the core option)."""
        pm = self.perf(model, tp, gpu)   # cached per (model, GPU kind, tp): keys this cache too
        budget = int(max_num_batched_tokens or self.max_batched_tokens)
        key = (pm, max_num_seqs, budget)
        parts = self._init_parts.get(key)
        if parts is None:
            parts = self._init_parts[key] = engine_init(
                pm, max_num_batched_tokens=budget, max_num_seqs=max_num_seqs,
                max_model_len=self.max_model_len, cuda_graphs=self.cuda_graphs)
        return parts

    def _links(self, node: int, gpu: int, model: str, own_host_copy: bool = False) -> tuple[list[Link], str]:
        if own_host_copy or model in self._host[node] or self.model(model).name in self._host[node]:
            return [self._pcie[gpu]], "host"
        return [self._ssd[node], self._pcie[gpu]], "ssd"

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
        group = self._check_group(gpus)
        spec = self.model(model)
        tp = len(group)
        if spec.heads % tp:
            raise SimError(f"{model}: {spec.heads} heads do not split over TP {tp}")
        node = self.gpus[group[0]].node
        inst = Instance(self._new_id(), model, spec, node, group, self._loader(loader, self.policy.LOADER))
        inst.started_s = self.now_s
        engine = inst.engine = BatchEngine(
            inst, self.perf(model, tp, group[0]), self, block_size=self.block_size,
            max_num_seqs=int(max_num_seqs or self.max_num_seqs),
            # the engine's token budget: its prefill batches and its profile run (None: the core option)
            max_num_batched_tokens=int(max_num_batched_tokens or self.max_batched_tokens),
            chunk_budget=self.chunk_budget, compute_share=float(compute_share))
        if inst.loader.no_engine_init:          # sleep-mode wake: the engine process stays up
            inst.init_parts = {"init_s": 0.0}
        elif engine_init_s is not None:         # the policy's own start cost (e.g. warm_engine_init_s)
            inst.init_parts = {"init_s": float(engine_init_s)}
        elif self.engine_init_s is not None:    # the engine_init_s option replaces the derived init
            inst.init_parts = {"process_s": self.process_start_s, "init_s": self.engine_init_s}
        else:
            parts = self.engine_init_parts(model, tp, group[0], engine.max_num_seqs, engine.max_num_batched_tokens)
            inst.init_parts = {"process_s": self.process_start_s, "init_s": parts.total_s, "fixed_s": parts.fixed_s,
                               "profile_s": parts.profile_s, "graph_capture_s": parts.graph_capture_s}
        inst.engine_init_s = inst.init_parts["init_s"] + inst.init_parts.get("process_s", 0.0)
        if already_warm and self.now_s > 0:
            raise SimError("already_warm instances exist only at t = 0")
        # weights: take prewarmed shards, allocate the rest
        taken = []
        need = []
        for g in group:
            pw = self._shards.get((g, model))
            if pw is not None and pw.tp == tp:
                taken.append((g, pw))
            else:
                need.append(g)
        for g in need:
            if self.free_bytes(g) < inst.shard_bytes:
                raise SimError(f"GPU {g} has {self.free_bytes(g)} bytes free, {model} shard needs {inst.shard_bytes}")
        for g, pw in taken:
            self._take_shard(pw, g, inst)
        for g in need:
            self._alloc(g, WEIGHTS, model, inst.shard_bytes)
        if taken:
            inst.start_kind = "prewarmed"
        # KV
        if kv_bytes_per_gpu is None:
            kv_bytes_per_gpu = min(int(self.gpu_util * self.gpus[g].capacity_bytes) - self.gpus[g].used_bytes for g in group)
            kv_bytes_per_gpu = min(kv_bytes_per_gpu, min(self.free_bytes(g) for g in group))
        kv_bytes_per_gpu = int(kv_bytes_per_gpu)
        if kv_bytes_per_gpu < 0 or any(self.free_bytes(g) < kv_bytes_per_gpu for g in group):
            raise SimError(f"no room for {kv_bytes_per_gpu} KV bytes of {model} on GPUs {group}")
        for g in group:
            self._alloc(g, KV, model, kv_bytes_per_gpu)
        self._set_blocks(inst, kv_bytes_per_gpu)
        self._instances[inst.id] = inst
        self._by_model.setdefault(model, []).append(inst)
        self.log("instance_start", model, group, f"id={inst.id} kind={inst.start_kind} tp={tp}")
        if already_warm:
            inst.start_kind = "warm"
            self._make_ready(inst)
            return inst
        # loads for the GPUs without a resident shard
        for g in need:
            links, source = self._links(node, g, model, inst.loader.own_host_copy)
            inst.sources[source] = inst.sources.get(source, 0) + 1
            self._start_flow(g, inst.shard_bytes, links, inst, source, inst.loader, tp)
        if need:
            self.log("load_begin", model, need, f"id={inst.id} source={'+'.join(sorted(inst.sources))} "
                                                f"bytes={inst.shard_bytes * len(need)} loader={inst.loader.name}")
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
                self.log("instance_drain", inst.model, inst.gpus, f"id={inst.id} in_flight={inst.in_flight}")
            return
        self._finalize_stop(inst)

    def prewarm(self, model: str, gpus: Iterable[int], *, already_loaded: bool = False,
                loader: str | None = None) -> Prewarm:
        """Load `model`'s weights onto `gpus` (TP = len(gpus)) without starting an engine, moved by
        `loader` (default: the policy's `PREWARM_LOADER`).
        `already_loaded` (t = 0 only): the weights were resident before the run, as a deployment
        that was running before the replayed slice would hold them."""
        if already_loaded and self.now_s > 0:
            raise SimError("already_loaded prewarms exist only at t = 0")
        group = self._check_group(gpus)
        spec = self.model(model)
        tp = len(group)
        pw = Prewarm(self._new_id(), model, spec, self.gpus[group[0]].node, group, tp)
        for g in group:
            if (g, model) in self._shards:
                raise SimError(f"{model} is already prewarmed on GPU {g}")
            if self.free_bytes(g) < pw.shard_bytes:
                raise SimError(f"GPU {g} has {self.free_bytes(g)} bytes free, {model} shard needs {pw.shard_bytes}")
        pw.started_s = self.now_s
        pw.clock = self._clock
        how = self._loader(loader, self.policy.PREWARM_LOADER)
        self._prewarms[pw.id] = pw
        sources = set()
        for g in group:
            self._alloc(g, PREWARMED, model, pw.shard_bytes)
            self._shards[(g, model)] = pw
            if already_loaded:
                continue
            links, source = self._links(pw.node, g, model)
            sources.add(source)
            self._start_flow(g, pw.shard_bytes, links, pw, source, how, tp)
        source = "before-run" if already_loaded else "+".join(sorted(sources))
        self.log("prewarm", model, group, f"id={pw.id} source={source} bytes={pw.shard_bytes * tp}")
        if already_loaded:
            pw.done_s = self.now_s
            self.log("prewarm_done", model, group, f"id={pw.id} load_s=0.000000")
        return pw

    def evict(self, pw: Prewarm) -> None:
        """Drop a prewarm's weights (cancelling its loads); frees its memory at once."""
        if pw.evicted:
            return
        for g, flow in list(pw.flows.items()):
            self._cancel_flow(flow)
        pw.flows.clear()
        for g in pw.gpus:
            if self._shards.get((g, pw.model)) is pw:
                del self._shards[(g, pw.model)]
                self._alloc(g, PREWARMED, pw.model, -pw.shard_bytes)
        pw.evicted = True
        self._prewarms.pop(pw.id, None)
        if pw.gpus:
            self.log("evict", pw.model, pw.gpus, f"id={pw.id}")

    def set_kv_bytes(self, inst: Instance, kv_bytes_per_gpu: int) -> int:
        """Resize `inst`'s KV cache per GPU: grow into free memory (SimError if absent), shrink no
        lower than the bytes its requests hold. Returns the size applied."""
        new = max(int(kv_bytes_per_gpu), self.kv_needed_bytes(inst))
        delta = new - inst.kv_bytes_per_gpu
        if delta > 0 and any(self.free_bytes(g) < delta for g in inst.gpus):
            raise SimError(f"cannot grow KV of instance {inst.id} by {delta} bytes: GPUs {inst.gpus} lack room")
        if delta:
            for g in inst.gpus:
                self._alloc(g, KV, inst.model, delta)
            self._set_blocks(inst, new)
            if delta > 0:
                inst.engine.kv_grew()
        return new

    def dispatch(self, req: Request, inst: Instance) -> None:
        """Send a parked request to `inst` (ready or still starting; not draining or stopped)."""
        if not inst.accepting:
            raise SimError(f"instance {inst.id} is {inst.state} and takes no requests")
        if req.inst is not None:
            raise SimError(f"request {req.id} is already dispatched")
        if inst.model != req.model:
            raise SimError(f"request {req.id} for {req.model} sent to an instance of {inst.model}")
        if req.parked:
            q = self._parked[req.model]
            if q and q[0] is req:
                q.popleft()
            else:
                q.remove(req)
            req.parked = False
        now = self.now_s
        req.inst = inst
        req.dispatch_s = now
        if inst.state == READY:
            req.start_kind = "warm" if now == req.arrival_s else "queued"
            req.load_s = 0.0
        else:
            req.start_kind = inst.start_kind
        inst.in_flight += 1
        inst.engine.add(req)

    # ------------------------------------------------------------------ run
    def run(self) -> RunResult:
        policy = self.policy
        policy.setup(self)
        tick = policy.tick_s
        if tick:
            self.push(0.0, self._on_tick, None)
        reqs = self._requests
        n = len(reqs)
        arrivals = [r.arrival_s for r in reqs]
        arrivals.append(math.inf)
        heap = self._heap
        heappop = heapq.heappop
        horizon = self.horizon_s
        debug = self.debug
        open_ = self._open
        parked = self._parked
        na = 0
        max_len = self.max_model_len
        while True:
            next_arr = arrivals[na]
            if heap and heap[0][0] <= next_arr:
                t, _, fn, arg = heappop(heap)
                if t > horizon:
                    break
                self.now_s = t
                fn(arg)
            elif na < n:
                if next_arr > horizon:
                    break
                self.now_s = next_arr
                req = reqs[na]
                na = self._next_arrival = na + 1
                if max_len and req.input_tokens + req.output_tokens > max_len:
                    self._reject_too_long(req)
                else:
                    req.parked = True
                    open_[req.model] += 1
                    parked[req.model].append(req)
                    policy.on_request(self, req)
            else:
                break
            if debug:
                self._check_invariants()
            if self._finished == n and na == n:
                break
        return self._result()

    # ------------------------------------------------------------------ events internals
    def push(self, t: float, fn: Callable[[Any], None], arg: Any) -> None:
        """Schedule `fn(arg)` at virtual time `t` (after the events already due then)."""
        seq = self._seq = self._seq + 1
        heappush(self._heap, (t, seq, fn, arg))

    # engine host (engine.EngineHost)
    def kv_full(self, inst: Instance) -> None:
        """The engine of `inst` lacks KV blocks: the policy may grow its cache."""
        self.policy.on_kv_full(self, inst)

    def request_done(self, inst: Instance, req: Request) -> None:
        """`req` left `inst`'s engine (finished or failed): count it, tell the policy, stop a drained instance."""
        inst.in_flight -= 1
        self._finished += 1
        self._open[req.model] -= 1
        self.policy.on_finished(self, req, inst)
        if inst.draining and inst.in_flight == 0 and not inst.engine.busy:
            self._finalize_stop(inst)

    def engine_idle(self, inst: Instance) -> None:
        """`inst`'s engine has nothing to run: a draining instance stops now."""
        if inst.draining and inst.in_flight == 0:
            self._finalize_stop(inst)

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _on_tick(self, _: Any) -> None:
        self.policy.on_tick(self)
        if not (self._finished == len(self._requests) and self._next_arrival == len(self._requests)):
            self.push(self.now_s + self.policy.tick_s, self._on_tick, None)

    # memory
    def _alloc(self, gpu: int, category: str, model: str, nbytes: int) -> None:
        g = self.gpus[gpu]
        if nbytes > 0 and g.used_bytes + nbytes > g.capacity_bytes:
            raise SimError(f"GPU {gpu} over capacity: {g.used_bytes} + {nbytes} > {g.capacity_bytes} ({category} {model})")
        key = (category, model)
        val = g.usage.get(key, 0) + nbytes
        if val < 0:
            raise SimError(f"GPU {gpu}: negative {category} bytes for {model}")
        if val:
            g.usage[key] = val
        else:
            g.usage.pop(key, None)
        was = g.used_bytes
        g.used_bytes += nbytes
        if was == 0 and g.used_bytes:
            self._empty[g.node].discard(gpu)
            self._empty_count -= 1
        elif was and g.used_bytes == 0:
            self._empty[g.node].add(gpu)
            self._empty_count += 1
            self.empty_epoch += 1
        self._sample(g)

    def _sample(self, g: Gpu) -> None:
        """Snapshot one GPU (every category and model, plus free); the last one per instant wins."""
        t = self.now_s
        rows = [(t, g.node, g.index, cat, model, b) for (cat, model), b in g.usage.items()]
        rows.append((t, g.node, g.index, "free", "", g.capacity_bytes - g.used_bytes))
        self._memory[(t, g.id)] = rows

    def _blocks_to_bytes(self, inst: Instance, blocks: int) -> int:
        return -(-blocks * inst.engine.block_size * inst.spec.kv_bytes_per_token // inst.tp)

    def _set_blocks(self, inst: Instance, kv_bytes_per_gpu: int) -> None:
        inst.kv_bytes_per_gpu = kv_bytes_per_gpu
        engine = inst.engine
        engine.total_blocks = kv_bytes_per_gpu * inst.tp // (engine.block_size * inst.spec.kv_bytes_per_token)

    # flows
    def _loader(self, name: str | None, default: str) -> Loader:
        try:
            return loader_named(name or default)
        except ValueError as exc:
            raise SimError(str(exc)) from None

    def _start_flow(self, gpu: int, nbytes: float, links: list[Link], owner: Any, source: str,
                    how: Loader, tp: int) -> None:
        f = Flow(self._new_id(), gpu, float(nbytes), links, owner, source, self.now_s)
        f.loader, f.tp = how, tp
        owner.flows[gpu] = f
        if isinstance(owner, Instance):
            owner.pending_flows += 1
        for link in links:
            link.flows[f.id] = f
        self._reflow(links)

    def _reflow(self, links: list[Link]) -> None:
        now = self.now_s
        affected: dict[int, Flow] = {}
        for link in links:
            affected.update(link.flows)
        for fid in sorted(affected):
            f = affected[fid]
            f.bytes_left = max(0.0, f.bytes_left - f.rate * (now - f.last_s))
            f.last_s = now
        for fid in sorted(affected):
            f = affected[fid]
            links = f.links   # [ssd, pcie] from SSD, [pcie] from host memory
            pcie = links[-1].bytes_per_s / len(links[-1].flows)
            ssd = links[0].bytes_per_s / len(links[0].flows) if len(links) > 1 else None
            f.rate = f.loader.rate_bytes_per_s(ssd, pcie, f.tp)
            f.version += 1
            self.push(now + f.bytes_left / f.rate, self._on_flow_done, (f, f.version))

    def _cancel_flow(self, f: Flow) -> None:
        for link in f.links:
            link.flows.pop(f.id, None)
        f.version += 1
        self._reflow(f.links)

    def _on_flow_done(self, arg: tuple) -> None:
        f, version = arg
        if version != f.version:
            return
        f.bytes_left = 0.0
        f.version += 1
        for link in f.links:
            link.flows.pop(f.id, None)
        self._reflow(f.links)
        owner = f.owner
        owner.flows.pop(f.gpu, None)
        if isinstance(owner, Instance):
            owner.pending_flows -= 1
            if owner.pending_flows == 0 and owner.state == LOADING:
                if owner.loader.fixed_s > 0:   # the loader's per-load cost (files, buffers) ends the load
                    self.push(self.now_s + owner.loader.fixed_s, self._on_load_done, (owner, owner.version))
                else:
                    self._on_load_done((owner, owner.version))
        elif not owner.flows and not owner.evicted:
            owner.done_s = self.now_s
            self.log("prewarm_done", owner.model, owner.gpus, f"id={owner.id} load_s={self.now_s - owner.started_s:.6f}")
            self.policy.on_prewarm_done(self, owner)

    def _take_shard(self, pw: Prewarm, gpu: int, inst: Instance) -> None:
        """Move one GPU's prewarmed shard of `pw` into `inst` (an in-flight load continues for it)."""
        del self._shards[(gpu, pw.model)]
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
            self._prewarms.pop(pw.id, None)

    # lifecycle
    def _on_load_done(self, arg: tuple) -> None:
        inst, version = arg
        if version != inst.version or inst.state != LOADING:
            return
        tier = "+".join(sorted(s for s in inst.sources if not s.startswith("prewarm"))) or "prewarm"
        self.log("load_end", inst.model, inst.gpus, f"id={inst.id} load_s={self.now_s - inst.started_s:.6f} "
                                                    f"tier={tier} loader={inst.loader.name}")
        self._begin_init(inst)

    def _begin_init(self, inst: Instance) -> None:
        inst.state = INIT
        inst.version += 1
        self.push(self.now_s + inst.engine_init_s, self._on_init_done, (inst, inst.version))

    def _on_init_done(self, arg: tuple) -> None:
        inst, version = arg
        if version != inst.version or inst.state != INIT:
            return
        parts = " ".join(f"{k}={v:.6f}" for k, v in inst.init_parts.items())
        self.log("init_done", inst.model, inst.gpus, f"id={inst.id} {parts} graphs={self.cuda_graphs}")
        self._make_ready(inst)

    def _make_ready(self, inst: Instance) -> None:
        inst.state = READY
        inst.ready_s = self.now_s
        self.log("instance_ready", inst.model, inst.gpus,
                 f"id={inst.id} kind={inst.start_kind} startup_s={self.now_s - inst.started_s:.6f}")
        for r in inst.engine.waiting:
            r.load_s = self.now_s - r.dispatch_s
        if inst.engine.waiting:
            inst.engine.kick()
        self.policy.on_ready(self, inst)

    def _finalize_stop(self, inst: Instance) -> None:
        was = inst.state
        inst.state = STOPPED
        inst.version += 1
        for f in list(inst.flows.values()):
            self._cancel_flow(f)
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
            self.parked(r.model).appendleft(r)
        inst.in_flight = 0
        for g in inst.gpus:
            self._alloc(g, KV, inst.model, -inst.kv_bytes_per_gpu)
        inst.kv_bytes_per_gpu = 0
        if inst.keep_weights and was not in (LOADING,):
            pw = Prewarm(self._new_id(), inst.model, inst.spec, inst.node, inst.gpus, inst.tp)
            pw.started_s = pw.done_s = self.now_s
            for g in inst.gpus:
                self._alloc(g, WEIGHTS, inst.model, -inst.shard_bytes)
                if (g, inst.model) in self._shards:
                    raise SimError(f"{inst.model} already prewarmed on GPU {g}")
                self._alloc(g, PREWARMED, inst.model, inst.shard_bytes)
                self._shards[(g, inst.model)] = pw
            self._prewarms[pw.id] = pw
        else:
            for g in inst.gpus:
                self._alloc(g, WEIGHTS, inst.model, -inst.shard_bytes)
        del self._instances[inst.id]
        self._by_model[inst.model].remove(inst)
        self.log("instance_stop", inst.model, inst.gpus, f"id={inst.id} keep_weights={inst.keep_weights}")
        self.policy.on_stopped(self, inst)

    # ------------------------------------------------------------------ checks and output
    def _check_invariants(self) -> None:
        for g in self.gpus:
            total = sum(g.usage.values())
            if total != g.used_bytes or g.used_bytes > g.capacity_bytes or any(v < 0 for v in g.usage.values()):
                raise SimError(f"t={self.now_s}: GPU {g.id} memory inconsistent: {g.usage} used={g.used_bytes} cap={g.capacity_bytes}")
        for inst in self._instances.values():
            inst.engine.check(self.now_s, inst.in_flight)

    def fail_parked(self, model: str, reason: str) -> int:
        """Fail every parked request of `model` with `reason` (status error): for a policy that
        finds mid-run it can never serve the model, so its requests do not sit "unfinished"
        without a word. Returns how many were failed."""
        queue = self.parked(model)
        failed = len(queue)
        while queue:
            req = queue.popleft()
            req.parked = False
            req.end_s = self.now_s
            req.error = reason
        self._finished += failed
        self._open[model] -= failed
        return failed

    def _reject_too_long(self, req: Request) -> None:
        """Fail a request over max_model_len on arrival: no instance, no policy sees it."""
        req.end_s = self.now_s
        req.error = (f"{req.input_tokens} prompt + {req.output_tokens} output tokens exceed max_model_len "
                     f"{self.max_model_len} (the core option max_model_len raises it; zero turns it off)")
        self._finished += 1

    def _result(self) -> RunResult:
        reqs = self._requests
        n = len(reqs)
        frame = self._frame
        if n:
            first, end, load, prefill, err, kind, insts = zip(*map(attrgetter(
                "first_token_s", "end_s", "load_s", "prefill_s", "error", "start_kind", "inst"), reqs))
        else:
            first = end = load = prefill = err = kind = insts = ()
        end = np.array(end, dtype=np.float64)
        first = np.array(first, dtype=np.float64)
        load = np.array(load, dtype=np.float64)
        prefill = np.array(prefill, dtype=np.float64)
        err = np.array(err, dtype=object)
        status = np.where(np.isnan(end), "unfinished", "ok").astype(object)
        status[err != ""] = "error"
        arrival = frame["arrival_s"].to_numpy(np.float64)
        output = frame["output_tokens"].to_numpy(np.int64)
        received = np.where(status == "ok", output, 0).astype(np.int64)
        queue = (first - arrival) - np.nan_to_num(load) - prefill
        requests = pd.DataFrame({
            "request_id": frame["request_id"].to_numpy(np.int64),
            "model": pd.Series(frame["model"].astype(str).to_numpy(dtype=object), dtype=object),
            "scheduled_s": arrival,
            "sent_s": arrival.copy(),
            "first_token_s": first,
            "end_s": end,
            "input_tokens": frame["input_tokens"].to_numpy(np.int64),
            "output_tokens": output,
            "received_tokens": received,
            "status": pd.Series(status, dtype=object),
            "error": pd.Series(err, dtype=object),
            "start_kind": pd.Series(np.array(kind, dtype=object), dtype=object),
            "queue_s": queue,
            "load_s": load,
            "prefill_s": prefill,
        }, columns=list(REQUEST_COLUMNS))
        requests["instance"] = np.array([i.id if i is not None else -1 for i in insts], dtype=np.int64)
        requests["node"] = np.array([i.node if i is not None else -1 for i in insts], dtype=np.int64)
        events = pd.DataFrame(self._events, columns=list(EVENT_COLUMNS))
        events = events.astype({"time_s": "float64", "node": "int64"}) if len(events) else events
        memory = pd.DataFrame([row for rows in self._memory.values() for row in rows], columns=list(MEMORY_COLUMNS))
        if len(memory):
            memory = memory.astype({"time_s": "float64", "node": "int64", "gpu": "int64", "bytes": "int64"})
        return RunResult(requests=requests, events=events, memory=memory, manifest={
            "simulated_s": self.now_s, "requests": n, "finished": int(self._finished),
        })
