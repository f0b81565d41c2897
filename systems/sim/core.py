"""The discrete-event core: virtual time, the event queue, requests, and the cluster API policies use.

A `Simulator` runs one policy (systems/sim/policy.py) over one workload on one cluster; it
implements `policy.ClusterAPI`. Events are (time, seq) ordered, so a run is a pure function of its
inputs. The core owns time, events and requests, and delegates by concern:
- memory.Memory: GPU and host memory, empty GPUs, the memory table's samples;
- loading.LoadNetwork: links and the load flows sharing them;
- lifecycle.Lifecycle: instances and prewarms (start, load, init, ready, stop, evict, KV size);
- engine.BatchEngine: each instance's batch scheduler (`inst.engine`), with its perf model;
- tables.run_result: the RunResult tables.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from heapq import heappush
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from harness.contracts.result import RunResult
from systems.sim.entities import (  # noqa: F401  (re-exported: policies and tests import them from here)
    CATEGORIES,
    INIT,
    KV,
    LOADING,
    PREWARMED,
    READY,
    STOPPED,
    WEIGHTS,
    Flow,
    Gpu,
    Instance,
    Link,
    Prewarm,
    Request,
    SimError,
)
from systems.sim.lifecycle import Lifecycle
from systems.sim.loading import LoadNetwork
from systems.sim.memory import Memory
from systems.sim.perf import PerfModel, coefficients_for
from systems.sim.specs import ClusterSpec, ModelSpec, check_fits, model_spec
from systems.sim.tables import EventFields, EventRow, format_fields, run_result

if TYPE_CHECKING:
    from systems.sim.options import CoreOptions
    from systems.sim.policy import Policy
    from workloads.workload import Workload

class Simulator:
    """Virtual-time cluster driven by one policy; `run()` returns the RunResult tables."""

    def __init__(self, workload: Workload, cluster: ClusterSpec, policy: Policy, *,
                 options: CoreOptions, seed: int = 0, duration_s: float | None = None, debug: bool = False,
                 models: Mapping[str, ModelSpec] | None = None) -> None:
        self.cluster, self.policy = cluster, policy
        self.options = options
        self.seed, self.debug = seed, debug
        self.rng = np.random.default_rng(seed)
        # time and events
        self.now_s = 0.0
        self._heap: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._seq = 0
        self._next_id = 0
        self._events: list[EventRow] = []
        # options the core and its parts read
        self.engine_init_s = options.engine_init_s
        self.process_start_s = options.process_start_s
        self.gpu_util = options.gpu_memory_utilization
        self.block_size = options.block_size
        self.max_num_seqs = options.max_num_seqs
        self.max_batched_tokens = options.max_num_batched_tokens
        self.chunk_budget = options.chunked_prefill_tokens
        self.max_model_len = options.max_model_len
        self.cuda_graphs = options.cuda_graphs
        # resources
        self.memory = Memory(cluster)
        self.gpus: list[Gpu] = self.memory.gpus
        self.loads = LoadNetwork(cluster, self)
        self.life = Lifecycle(self)
        self._models: dict[str, ModelSpec] = dict(models or {})  # workload name -> spec, beyond the presets
        self._perf: dict[tuple[str, str, int], PerfModel] = {}
        # requests
        frame = workload.requests
        if duration_s is not None:
            frame = frame[frame["arrival_s"] < duration_s]
        self.duration_s = float(duration_s) if duration_s is not None else (float(frame["arrival_s"].max()) if len(frame) else 0.0)
        self.horizon_s = self.duration_s + options.max_drain_s
        self._frame = frame.reset_index(drop=True)
        #: what policies see: the workload truncated to the arrivals this run simulates
        self.workload = workload if duration_s is None else replace(workload, requests=self._frame)
        self._requests: list[Request] = list(map(
            Request, range(len(frame)), frame["request_id"].astype("int64").tolist(), frame["model"].astype(str).tolist(),
            frame["arrival_s"].astype("float64").tolist(), frame["input_tokens"].astype("int64").tolist(),
            frame["output_tokens"].astype("int64").tolist()))
        #: models of the (truncated) workload, in order of first arrival
        self.workload_models: list[str] = [str(m) for m in pd.unique(frame["model"])]
        self._parked: dict[str, deque[Request]] = {}
        for m in self.workload_models:
            self.model(m)  # validate names once
            self._parked[m] = deque()
        check_fits({m: self.model(m) for m in self.workload_models}, cluster, self.gpu_util)
        self._next_arrival = 0
        self._finished = 0
        self._open: dict[str, int] = {m: 0 for m in self.workload_models}   # arrived, not finished

    # ------------------------------------------------------------------ cluster API: shape, memory
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
                                             cuda_graphs=self.cuda_graphs, test_slowdown=self.options.test_slowdown)
        return pm

    def node_gpus(self, node: int) -> list[int]:
        """Global GPU ids of `node`, in order (do not mutate)."""
        return self.memory.node_gpus[node]

    def free_bytes(self, gpu: int) -> int:
        """Bytes free on `gpu`."""
        return self.memory.free_bytes(gpu)

    def used_bytes(self, gpu: int, category: str | None = None) -> int:
        """Bytes used on `gpu`, of one category or all."""
        return self.memory.used_bytes(gpu, category)

    def first_free_group(self, tp: int) -> tuple[int, ...] | None:
        """The lowest TP-aligned group of `tp` empty GPUs on one node, or None."""
        return self.memory.first_free_group(tp)

    def host_models(self, node: int) -> list[str]:
        """Checkpoints cached in `node`'s host memory."""
        return list(self.memory.host[node])

    def host_free_bytes(self, node: int) -> int:
        """Host memory of `node` not holding a cached checkpoint."""
        return self.memory.host_free_bytes(node)

    def host_put(self, node: int, model: str) -> None:
        """Record `model`'s checkpoint as cached in node's host memory (raises when it does not fit)."""
        size = self.model(model).weight_bytes
        if self.memory.host_put(node, model, size):
            self._events.append((self.now_s, "host_put", model, node, "", f"bytes={size}", {"bytes": size}))

    def host_evict(self, node: int, model: str) -> None:
        """Drop `model`'s checkpoint from node's host memory."""
        if self.memory.host_evict(node, model):
            self._events.append((self.now_s, "host_evict", model, node, "", "", None))

    # ------------------------------------------------------------------ cluster API: instances, prewarms
    def instances(self, model: str | None = None) -> list[Instance]:
        """Live (not stopped) instances, of one model or all, in creation order."""
        if model is None:
            return list(self.life.instances.values())
        return self.life.by_model.get(model, [])

    def start_instance(self, model: str, gpus: Iterable[int], *, kv_bytes_per_gpu: int | None = None,
                       max_num_seqs: int | None = None, compute_share: float = 1.0,
                       engine_init_s: float | None = None, already_warm: bool = False,
                       loader: str | None = None, max_num_batched_tokens: int | None = None) -> Instance:
        """Start an engine of `model` on `gpus` (lifecycle.Lifecycle.start_instance)."""
        return self.life.start_instance(
            model, gpus, kv_bytes_per_gpu=kv_bytes_per_gpu, max_num_seqs=max_num_seqs, compute_share=compute_share,
            engine_init_s=engine_init_s, already_warm=already_warm, loader=loader,
            max_num_batched_tokens=max_num_batched_tokens)

    def stop_instance(self, inst: Instance, *, drain: bool = True, keep_weights: bool = False) -> None:
        """Stop `inst` (lifecycle.Lifecycle.stop_instance)."""
        self.life.stop_instance(inst, drain=drain, keep_weights=keep_weights)

    def set_kv_bytes(self, inst: Instance, kv_bytes_per_gpu: int) -> int:
        """Resize `inst`'s KV cache per GPU; returns the size applied."""
        return self.life.set_kv_bytes(inst, kv_bytes_per_gpu)

    def kv_needed_bytes(self, inst: Instance) -> int:
        """KV bytes per GPU `inst` holds now plus its waiting prompts and decode stretch need."""
        return self.life.kv_needed_bytes(inst)

    def prewarm(self, model: str, gpus: Iterable[int], *, already_loaded: bool = False,
                loader: str | None = None) -> Prewarm:
        """Load `model`'s weights onto `gpus` without an engine (lifecycle.Lifecycle.prewarm)."""
        return self.life.prewarm(model, gpus, already_loaded=already_loaded, loader=loader)

    def evict(self, pw: Prewarm) -> None:
        """Drop a prewarm's weights (cancelling its loads)."""
        self.life.evict(pw)

    def prewarms(self, model: str | None = None) -> list[Prewarm]:
        """Live prewarms, of one model or all."""
        return [p for p in self.life.prewarms.values() if model is None or p.model == model]

    def prewarms_on(self, gpu: int) -> list[Prewarm]:
        """Prewarms holding a shard on `gpu`."""
        return [p for (g, _), p in self.life.shards.items() if g == gpu]

    # ------------------------------------------------------------------ cluster API: requests, events
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

    def log(self, kind: str, model: str = "", gpus: Iterable[int] = (), detail: str = "",
            fields: EventFields | None = None) -> None:
        """Add a control-plane event at `now_s` (node and GPU indices from `gpus`): `fields` is its
        typed payload, `detail` its text for people (default: the fields as `k=v`)."""
        gpus = tuple(gpus)
        node = self.gpus[gpus[0]].node if gpus else -1
        if fields and not detail:
            detail = format_fields(fields)
        self._events.append((self.now_s, kind, model, node, ",".join(str(self.gpus[g].index) for g in gpus), detail,
                             fields))

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

    # ------------------------------------------------------------------ time and events
    def push(self, t: float, fn: Callable[[Any], None], arg: Any) -> None:
        """Schedule `fn(arg)` at virtual time `t` (after the events already due then)."""
        seq = self._seq = self._seq + 1
        heappush(self._heap, (t, seq, fn, arg))

    def clock(self) -> float:
        """Virtual time now (for objects that read it later, e.g. a prewarm's progress)."""
        return self.now_s

    def new_id(self) -> int:
        """A fresh id: instances, prewarms and flows share one counter."""
        self._next_id += 1
        return self._next_id - 1

    def _on_tick(self, _: Any) -> None:
        self.policy.on_tick(self)
        if not (self._finished == len(self._requests) and self._next_arrival == len(self._requests)):
            self.push(self.now_s + self.policy.tick_s, self._on_tick, None)   # type: ignore[operator]

    def flow_done(self, f: Flow) -> None:
        """A load flow ended (loading.LoadHost): its owner's lifecycle goes on."""
        self.life.flow_done(f)

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
            self.life.finalize_stop(inst)

    def engine_idle(self, inst: Instance) -> None:
        """`inst`'s engine has nothing to run: a draining instance stops now."""
        if inst.draining and inst.in_flight == 0:
            self.life.finalize_stop(inst)

    def _check_invariants(self) -> None:
        self.memory.check(self.now_s)
        for inst in self.life.instances.values():
            inst.engine.check(self.now_s, inst.in_flight)

    def _result(self) -> RunResult:
        return run_result(self._requests, self._frame, self._events, self.memory.rows(), {
            "simulated_s": self.now_s, "requests": len(self._requests), "finished": int(self._finished),
        })
