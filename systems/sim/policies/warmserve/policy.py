"""`warmserve`: CSP-forecast prewarming of universal workers, evict-aware placement, KV lending.

Models: per-window CSP forecasts, prewarm replicas placed evict-aware (re-planned each window and
after changes), starts from a prewarmed replica (engine init, or the rest of a partial load) that
evict what overlaps, idle KV lent to prewarms and reclaimed first, the reference autoscaler and router.
Leaves out: CUDA VMM mapping costs and NCCL prewarming (folded into `warm_engine_init_s`), multi-node TP.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from systems.sim.autoscale import Autoscaler
from systems.sim.options import SimOptions
from systems.sim.policies.warmserve.load import ConcurrencyTracker, kv_reserved_bytes
from systems.sim.policies.warmserve.options import WarmServeOptions
from systems.sim.policies.warmserve.placement import (
    Demand,
    Replica,
    align_up,
    place,
    place_round_robin,
    rescore,
)
from systems.sim.policy import Policy
from workloads.forecast import Forecast, history_series, predict, rebin_is_exact

if TYPE_CHECKING:
    from systems.sim.entities import Instance, Prewarm, Request
    from systems.sim.policy import ClusterAPI

#: Score that makes a running instance's GPUs the last choice for prewarms lent inside its KV.
INSTANCE_SCORE = 1e9


class WarmServe(Policy):
    """The full system; the ablations switch off `prewarm`, `kv_prewarm` or `placement`."""

    #: Weights not already on the GPU are copied from pinned host memory: the reference's
    #: pre-created workers load state dicts that `load_model.py` (MemoryModelLoader) keeps in pinned
    #: shared memory (`use_loaded_model`), for prewarms and for starts on free workers alike.
    LOADER = "pinned"
    PREWARM_LOADER = "pinned"

    Options = WarmServeOptions
    options: WarmServeOptions

    def __init__(self, options: SimOptions | Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        o = self.options
        self.window_s = o.window_s
        self.capacity = o.capacity
        self.tick_s = o.tick_s
        self.init_s = o.warm_engine_init_s
        self.prewarm_on = o.prewarm
        self.kv_on = o.kv_prewarm and self.prewarm_on
        self.placement_on = o.placement
        self.host_cache = o.host_cache
        self.replan_s = o.replan_s
        self.n_recent = o.n_recent
        self.warm_start = o.warm_start
        self.scaler = Autoscaler(capacity=self.capacity)
        self.trackers: dict[str, ConcurrencyTracker] = {}
        self.history: dict[str, dict[int, tuple[float, float]]] = {}
        self.observed: dict[str, dict[int, tuple[float, float]]] = {}
        self.forecast: dict[str, Forecast | None] = {}
        self.window = 0
        self.full_kv: dict[int, int] = {}
        self.scores: dict[int, float] = {}     # prewarm id -> current score
        self.dirty = True
        self.last_plan_s = -math.inf
        self.busy: set[int] = set()             # GPUs held by instances
        self.free_per_node: list[int] = []
        self.free_gpus = 0
        self.forecasting = False                # any model has a forecast (else: purely reactive)

    # ---- setup and forecasting ------------------------------------------------------------
    def setup(self, sim: ClusterAPI) -> None:
        models = sim.workload_models
        self.free_per_node = [len(sim.node_gpus(n)) for n in range(len(sim.cluster.nodes))]
        self.free_gpus = sum(self.free_per_node)
        self.trackers = {m: ConcurrencyTracker() for m in models}
        self.observed = {m: {} for m in models}
        if self.host_cache:
            for node in range(len(sim.cluster.nodes)):
                for m in sorted(models, key=lambda m: sim.model(m).weight_bytes):
                    if sim.model(m).weight_bytes <= sim.host_free_bytes(node):
                        sim.host_put(node, m)
        if self.prewarm_on:
            hist_w = float(sim.workload.meta.get("window_s", 300.0) or 300.0)
            self.history = history_series(sim.workload.history, hist_w, self.window_s)
            if self.history and not rebin_is_exact(hist_w, self.window_s):
                # e.g. a 3-minute window over 5-minute history: peaks are those of the coarser windows
                sim.log("forecast", "", (), f"approximate history: {hist_w:g} s windows re-binned to "
                                            f"{self.window_s:g} s; give the workload window_s that divides it",
                        fields={"approximate_history": True, "history_window_s": hist_w, "window_s": self.window_s})
            self._predict(sim)
            self._plan(sim)

    def _predict(self, sim: ClusterAPI) -> None:
        for m in sim.workload_models:
            f = predict(self.history.get(m, {}), self.observed[m], self.window, window_s=self.window_s,
                        n_recent=self.n_recent)
            self.forecast[m] = f
            self.forecasting = self.forecasting or f is not None
            if f is None:
                sim.log("forecast", m, (), "reactive (no history)", fields={"reactive": True})
            else:
                sim.log("forecast", m, (), f"window={self.window} mean={f.mean:.2f} peak={f.peak:.2f}",
                        fields={"window": self.window, "mean": f.mean, "peak": f.peak})

    def _roll_window(self, sim: ClusterAPI) -> None:
        while sim.now_s >= (self.window + 1) * self.window_s - 1e-9:
            end = (self.window + 1) * self.window_s
            for m, t in self.trackers.items():
                self.observed[m][self.window] = t.close_window(end)
            self.window += 1
            self.dirty = True
            if self.prewarm_on:
                self._predict(sim)

    # ---- prewarm planning -----------------------------------------------------------------
    def _plan(self, sim: ClusterAPI) -> None:
        """Re-score existing prewarms and place the missing replicas (reference `Scheduler.prewarm`)."""
        self.dirty = False
        self.last_plan_s = sim.now_s
        demands = []
        for m in sim.workload_models:
            f = self.forecast.get(m)
            if f is None:
                continue
            spec = sim.model(m)
            n = sum(1 for i in sim.instances(m) if i.accepting)
            demands.append(Demand(m, spec.weight_bytes, spec.tp, f.mean, f.peak, n))
        pws = sorted(sim.prewarms(), key=lambda p: p.id)
        existing = [Replica(p.model, p.tp, align_up(p.shard_bytes), 0.0, p.gpus) for p in pws]
        existing, new = rescore(existing, demands, self.capacity)
        self.scores = {p.id: r.score for p, r in zip(pws, existing)}
        if not new:
            return
        placed = self._place(sim, new, existing)
        before_run = self.warm_start and sim.now_s == 0.0
        for r in placed:
            pw = sim.prewarm(r.model, r.gpus, already_loaded=before_run)
            self.scores[pw.id] = r.score
        if len(placed) < len(new):
            self._displace(sim, [r for r in new if not any(p is r or (p.model == r.model and p.score == r.score) for p in placed)])

    def _displace(self, sim: ClusterAPI, unplaced: list[Replica]) -> None:
        """Memory is short: a replica may evict lower-scored prewarms on universal GPUs, lowest
        first, until it fits (the reference leaves eviction for room as a TODO)."""
        for r in sorted(unplaced, key=lambda r: -r.score):
            for _ in range(16):
                victims = [p for p in sim.prewarms() if self.scores.get(p.id, 0.0) < r.score
                           and p.model != r.model and not self._on_instance_gpus(sim, p)]
                if not victims:
                    break
                victim = min(victims, key=lambda p: (self.scores.get(p.id, 0.0), p.id))
                sim.evict(victim)
                self.scores.pop(victim.id, None)
                pws = sorted(sim.prewarms(), key=lambda p: p.id)
                existing = [Replica(p.model, p.tp, align_up(p.shard_bytes), self.scores.get(p.id, 0.0), p.gpus) for p in pws]
                done = self._place(sim, [r], existing)
                if done:
                    pw = sim.prewarm(done[0].model, done[0].gpus)
                    self.scores[pw.id] = done[0].score
                    break

    def _place(self, sim: ClusterAPI, new: list[Replica], existing: list[Replica]) -> list[Replica]:
        free = [self._prewarm_free(sim, g.id) for g in sim.gpus]
        occupied = [Replica(i.model, i.tp, 0, INSTANCE_SCORE, i.gpus) for i in sim.instances()]
        per_node = [n.gpus_per_node for n in sim.cluster.nodes]
        if self.placement_on:
            return place(new, free, per_node, existing + occupied)
        return place_round_robin(new, free, per_node, existing + occupied)

    def _prewarm_free(self, sim: ClusterAPI, gpu: int) -> int:
        """Memory a prewarm may take on `gpu`: up to the utilisation cap; on an instance's GPU only
        the KV it lent (none without KV prewarming)."""
        cap = int(sim.gpu_util * sim.gpus[gpu].capacity_bytes)
        if not self.kv_on and sim.used_bytes(gpu, "weights") > 0:
            return 0
        return max(0, min(cap - sim.used_bytes(gpu), sim.free_bytes(gpu)))

    @staticmethod
    def _on_instance_gpus(sim: ClusterAPI, pw: Prewarm) -> bool:
        return any(sim.used_bytes(g, "weights") > 0 for g in pw.gpus)

    # ---- instance start (reference `_get_available_workers`) -------------------------------
    def start(self, sim: ClusterAPI, model: str) -> Instance | None:
        tp = sim.model(model).tp
        if self.free_gpus < tp:
            return None
        busy = self.busy
        group = None
        if self.prewarm_on:
            mine = [p for p in sim.prewarms(model) if p.tp == tp and len(p.gpus) == tp and not busy & set(p.gpus)]
            done = [p for p in mine if p.done]
            loading = sorted((p for p in mine if not p.done), key=lambda p: -p.progress)
            if done or loading:
                group = (done or loading)[0].gpus
        if group is None:
            group = self._free_workers(sim, tp, busy)
        if group is None:
            return None
        keep = set(group)
        for pw in list(sim.prewarms()):
            if keep & set(pw.gpus) and not (pw.model == model and set(pw.gpus) == keep):
                sim.evict(pw)
                self.scores.pop(pw.id, None)
        inst = sim.start_instance(model, group, engine_init_s=self.init_s)
        self.full_kv[inst.id] = inst.kv_bytes_per_gpu
        self.busy.update(group)
        self.free_per_node[inst.node] -= len(group)
        self.free_gpus -= len(group)
        self.dirty = True
        return inst

    def _free_workers(self, sim: ClusterAPI, tp: int, busy: set[int]) -> tuple[int, ...] | None:
        """`tp` free GPUs of one node with the fewest prewarmed models on them."""
        for node, n_free in enumerate(self.free_per_node):
            if n_free < tp:
                continue
            ids = [g for g in sim.node_gpus(node) if g not in busy]
            if len(ids) > tp and self.prewarm_on and self.placement_on:
                ids = sorted(ids, key=lambda g: (len(sim.prewarms_on(g)), g))
            return tuple(sorted(ids[:tp]))
        return None

    # ---- routing and autoscaling ----------------------------------------------------------
    def on_request(self, sim: ClusterAPI, req: Request) -> None:
        self.trackers[req.model].change(sim.now_s, +1)
        self.route(sim, req)

    def dispatched(self, sim: ClusterAPI, inst: Instance) -> None:
        if self.kv_on:
            self._ensure_kv(sim, inst)

    def on_finished(self, sim: ClusterAPI, req: Request, inst: Instance) -> None:
        self.trackers[req.model].change(sim.now_s, -1)
        if sim.parked(req.model):
            self.serve_parked(sim)

    def on_ready(self, sim: ClusterAPI, inst: Instance) -> None:
        if sim.parked(inst.model):
            self.serve_parked(sim)

    def on_stopped(self, sim: ClusterAPI, inst: Instance) -> None:
        self.full_kv.pop(inst.id, None)
        self.busy.difference_update(inst.gpus)
        self.free_per_node[inst.node] += len(inst.gpus)
        self.free_gpus += len(inst.gpus)
        self.dirty = True
        self.serve_parked(sim)

    def on_prewarm_done(self, sim: ClusterAPI, pw: Prewarm) -> None:
        if sim.parked(pw.model):
            self.serve_parked(sim)

    def on_tick(self, sim: ClusterAPI) -> None:
        self._roll_window(sim)
        for model in sim.workload_models:
            self._autoscale(sim, model, self.scaler.sample(sim, model))
        if self.kv_on and self.forecasting:
            self._reserve_kv(sim)   # lent KV only serves prewarms, which need a forecast
        if self.prewarm_on and self.dirty and sim.now_s - self.last_plan_s >= self.replan_s:
            self._plan(sim)

    def _autoscale(self, sim: ClusterAPI, model: str, mean: float) -> None:
        """Reference `_check_engines`: create ceil(load / 0.8 / B) - n instances above 0.8 x capacity,
        stop n - ceil(load / 0.5 / B) of the least loaded ones older than 5 s below 0.5 x."""
        start, stop = self.scaler.decide(sim, model, mean)
        if start:
            started = 0
            for _ in range(start):
                if self.start(sim, model) is None:
                    break
                started += 1
            if started:
                sim.log("scale_up", model, (), f"mean_in_flight={mean:.2f} started={started}",
                        fields={"mean_in_flight": mean, "started": started})
                self.serve_parked(sim)
        else:
            for inst in stop:
                sim.log("scale_down", model, inst.gpus, f"id={inst.id} mean_in_flight={mean:.2f}",
                        fields={"id": inst.id, "mean_in_flight": mean})
                sim.stop_instance(inst, drain=True, keep_weights=self.prewarm_on)
                self.dirty = True

    # ---- KV reservation and lending -------------------------------------------------------
    def _reserve_kv(self, sim: ClusterAPI) -> None:
        """Shrink each ready instance's KV to what it is predicted to need, lending the rest to
        prewarms; `on_kv_full` takes it back (evicting lent prewarms) when requests need it."""
        for inst in sim.instances():
            if not inst.ready:
                continue
            full = self.full_kv.get(inst.id, inst.kv_bytes_per_gpu)
            target = kv_reserved_bytes(full, inst.in_flight, sim.kv_needed_bytes(inst), self.capacity)
            if inst.kv_bytes_per_gpu - target > full // 4:
                before = inst.kv_bytes_per_gpu
                after = sim.set_kv_bytes(inst, target)
                sim.log("kv_lend", inst.model, inst.gpus, fields={"id": inst.id, "kv_bytes": after, "lent_bytes": before - after})
                self.dirty = True

    def on_kv_full(self, sim: ClusterAPI, inst: Instance) -> None:
        """The engine needs blocks it lent: evict lent prewarms and give it all its KV back."""
        full = self.full_kv.get(inst.id, inst.kv_bytes_per_gpu)
        if self.kv_on and inst.kv_bytes_per_gpu < full:
            self._grow_kv(sim, inst, full)

    def _ensure_kv(self, sim: ClusterAPI, inst: Instance) -> None:
        """After a dispatch: keep the reservation max(C*Q/B, T + C/B) ahead of the new load."""
        full = self.full_kv.get(inst.id)
        if full is None or inst.kv_bytes_per_gpu >= full:
            return
        target = kv_reserved_bytes(full, inst.in_flight, sim.kv_needed_bytes(inst), self.capacity)
        if target > inst.kv_bytes_per_gpu:
            self._grow_kv(sim, inst, min(full, target + full // 8))

    def _grow_kv(self, sim: ClusterAPI, inst: Instance, want: int) -> None:
        delta = want - inst.kv_bytes_per_gpu
        lent = sorted({p.id: p for g in inst.gpus for p in sim.prewarms_on(g)}.values(),
                      key=lambda p: (self.scores.get(p.id, 0.0), p.id))
        for pw in lent:   # lowest-scored lent prewarms go first
            if all(sim.free_bytes(g) >= delta for g in inst.gpus):
                break
            sim.evict(pw)
            self.scores.pop(pw.id, None)
            self.dirty = True
        room = min(sim.free_bytes(g) for g in inst.gpus)
        before = inst.kv_bytes_per_gpu
        after = sim.set_kv_bytes(inst, before + max(0, min(delta, room)))
        if after != before:
            sim.log("kv_reclaim", inst.model, inst.gpus,
                    fields={"id": inst.id, "kv_bytes": after, "reclaimed_bytes": after - before})
