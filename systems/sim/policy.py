"""The base class of a simulated serving system: hooks the simulator calls, over the cluster API.

A system is a `Policy` subclass in one module of `systems/sim/policies/` that registers
itself: `registry.register("name", MyPolicy)` (the class is the factory; its `OPTIONS` declare
the options it takes). The core knows
nothing of any policy. All hooks receive `sim` (a `systems.sim.core.Simulator`) and run at
`sim.now_s`; none may block. Requests (`core.Request`) and instances (`core.Instance`) are
read-only to a policy except through the operations below.

Hooks (override what you need; defaults route least-in-flight-with-room and retry parked):
- `setup(sim)`: once at t = 0, before any arrival (place fixed instances, initial prewarms).
- `on_request(sim, req)`: an arrival. Call `sim.dispatch(req, inst)` (any instance that is
  not stopping, ready or still starting: the request then waits for it) or leave it parked
  (it already is: `sim.parked(model)`), e.g. after starting an instance.
- `on_tick(sim)`: every `tick_s` seconds of virtual time (class/instance attribute; None =
  never), from t = 0 until the last request is done.
- `on_finished(sim, req, inst)`: a request completed on `inst`.
- `on_ready(sim, inst)`: an instance finished loading and engine init; it now serves.
- `on_prewarm_done(sim, pw)`: a prewarm load completed (weights resident on its GPUs).
- `on_stopped(sim, inst)`: an instance stopped (memory freed or kept as prewarmed).
- `on_kv_full(sim, inst)`: the engine needs KV blocks it lacks (admission blocked or about to
  preempt); the policy may evict prewarmed weights and `sim.set_kv_bytes(inst, ...)`.

Cluster operations (methods of `sim`; see core.Simulator for signatures and details):
- time and shape: `now_s`, `cluster` (ClusterSpec), `gpus` (list of core.Gpu: `id`, `node`,
  `index`, `capacity_bytes`), `node_gpus(node)`, `model(name) -> ModelSpec`, `perf(model, tp)`,
  `workload`, `options`, `rng` (seeded numpy Generator).
- instances: `start_instance(model, gpus, *, kv_bytes_per_gpu=None, max_num_seqs=None,
  compute_share=1.0, engine_init_s=None, already_warm=False, loader=None,
  max_num_batched_tokens=None)`: weights come from the
  fastest tier holding them, moved by the policy's `LOADER` (or `loader`):
  prewarmed on those GPUs (done: engine init only; in progress: the remaining bytes), the
  node's host memory (PCIe), else SSD (SSD bandwidth shared per node, then PCIe);
  `stop_instance(inst, drain=True, keep_weights=False)`; `instances(model=None)`;
  `inst.in_flight`, `inst.state` (loading -> init -> ready -> stopped), `inst.ready`,
  `inst.draining`, `inst.accepting`, `inst.num_running`, `inst.num_waiting`, `inst.total_blocks`,
  `inst.start_kind`; `set_kv_bytes(inst, kv_bytes_per_gpu)`
  (grow into free memory or shrink down to what is in use; returns the value applied),
  `set_compute_share(inst, share)` (iteration time / share, MuxServe's MPS share),
  `set_max_num_seqs(inst, n)`; `kv_needed_bytes(inst)` (KV bytes per GPU in use now, plus the
  waiting prompts and the decode stretch in progress). Passing `engine_init_s` overrides the
  run's `engine_init_s` option for that start; prefer the option, which users sweep.
- weights without an instance: `prewarm(model, gpus) -> Prewarm` (`pw.progress` 0..1,
  `pw.done`), `evict(pw)`, `prewarms(model=None)`, `prewarms_on(gpu)`.
- memory: `free_bytes(gpu)`, `used_bytes(gpu, category=None)`; categories weights / kv /
  prewarmed (free is derived). Exceeding a GPU's capacity raises SimError (a policy bug).
- host memory (checkpoint cache) per node: `host_models(node)`, `host_free_bytes(node)`,
  `host_put(node, model)` (instant bookkeeping; raises when full), `host_evict(node, model)`.
- requests: `dispatch(req, inst)`, `parked(model)` (requests no instance has yet, oldest
  first), `parked_models()` (oldest parked first), `open_requests(model)` (arrived, not
  finished: the autoscaler's load, O(1)), `workload_models` (the run's models in order),
  `log(kind, model, gpus, detail)` to add a control-plane event (forecast, scale...).
- placement helpers: `empty_gpus(node)` / `empty_gpus()` (set per node / count of GPUs holding
  nothing), `empty_epoch` (bumps when a GPU empties); `systems.sim.autoscale` has
  `first_free_group`, `free_groups` and the reference `Autoscaler`.

Per-request fields a policy may read: `req.id`, `req.model`, `req.arrival_s`, `req.input_tokens`,
`req.output_tokens`, `req.inst`. Start kinds are set by the core: `warm` (dispatched on arrival
to a ready instance), `queued` (parked first, then a ready instance), else the instance's start
kind `cold` / `prewarmed` (dispatched while it was starting).

Options: `simulate(..., options=)` passes one dict; the core takes CORE_OPTIONS (see
core.py) and the policy declares its own in `OPTIONS` (name -> default). Unknown names are a
user error, so a typo never silently runs the default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Mapping

if TYPE_CHECKING:
    from systems.sim.bounds import Bound
    from systems.sim.core import Instance, Prewarm, Request, Simulator


class Policy:
    """Default behaviour: route to the least-loaded instance with room, never start anything."""

    #: option name -> default value; values from the CLI arrive as str/int/float/bool.
    OPTIONS: ClassVar[dict[str, Any]] = {}
    #: option name -> declared type and bounds (systems/sim/bounds.py); one per OPTIONS entry.
    BOUNDS: ClassVar[dict[str, "Bound"]] = {}
    #: period of `on_tick` in seconds; None: no ticks.
    tick_s: float | None = None
    #: concurrent requests an instance takes before it counts as full (paper: 32).
    capacity: int = 32
    #: the checkpoint loader its instance starts use, as the real system does (a name of
    #: systems/sim/startup.LOADERS); "dma" moves bytes at link speed, an ideal loader.
    LOADER: ClassVar[str] = "dma"
    #: the loader of its prewarms (weights loaded without an engine), where it makes any.
    PREWARM_LOADER: ClassVar[str] = "dma"

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        from systems.sim.bounds import check_options

        merged = dict(self.OPTIONS)
        merged.update(options or {})
        self.options = check_options(merged, self.BOUNDS, where=f"{type(self).__name__}: ")

    # ---- hooks -----------------------------------------------------------------------
    def setup(self, sim: "Simulator") -> None:
        """Called once at t = 0."""

    def on_request(self, sim: "Simulator", req: "Request") -> None:
        inst = self.pick_instance(sim, req.model)
        if inst is not None:
            sim.dispatch(req, inst)

    def on_tick(self, sim: "Simulator") -> None:
        """Called every `tick_s` seconds."""

    def on_finished(self, sim: "Simulator", req: "Request", inst: "Instance") -> None:
        self.retry_parked(sim, req.model)

    def on_ready(self, sim: "Simulator", inst: "Instance") -> None:
        self.retry_parked(sim, inst.model)

    def on_prewarm_done(self, sim: "Simulator", pw: "Prewarm") -> None:
        """A prewarm finished loading."""

    def on_stopped(self, sim: "Simulator", inst: "Instance") -> None:
        self.retry_parked(sim, inst.model)

    def on_kv_full(self, sim: "Simulator", inst: "Instance") -> None:
        """The engine of `inst` is short of KV blocks; default: let it queue or preempt."""

    # ---- helpers for subclasses -------------------------------------------------------
    def pick_instance(self, sim: "Simulator", model: str, *, include_starting: bool = True) -> "Instance | None":
        """Least in-flight instance of `model` with fewer than `capacity` requests (ready ones first)."""
        best = None
        best_key = None
        cap = self.capacity
        for inst in sim.instances(model):
            n = inst.in_flight
            if n >= cap or inst.draining:
                continue
            ready = inst.state == "ready"
            if not ready and not include_starting:
                continue
            key = (not ready, n, inst.id)
            if best_key is None or key < best_key:
                best, best_key = inst, key
        return best

    def start(self, sim: "Simulator", model: str) -> "Instance | None":
        """Start an instance of `model` where this policy places it; None when it cannot (default)."""
        return None

    def dispatched(self, sim: "Simulator", inst: "Instance") -> None:
        """Called after `route`/`serve_model` sent a request to `inst` (e.g. to resize its KV)."""

    def route(self, sim: "Simulator", req: "Request") -> None:
        """Reference router: least in-flight instance with room, else start one; else it stays
        parked. Older parked requests of the model go first."""
        if len(sim.parked(req.model)) > 1:
            return
        inst = self.pick_instance(sim, req.model) or self.start(sim, req.model)
        if inst is not None and req.inst is None:
            sim.dispatch(req, inst)
            self.dispatched(sim, inst)

    def serve_model(self, sim: "Simulator", model: str) -> None:
        """Give `model`'s parked requests room on its instances, starting ones where `start` can."""
        parked = sim.parked(model)
        while parked:
            inst = self.pick_instance(sim, model) or self.start(sim, model)
            if inst is None:
                return
            sim.dispatch(parked[0], inst)
            self.dispatched(sim, inst)

    def serve_parked(self, sim: "Simulator") -> None:
        """Serve every model's parked requests, the model with the oldest one first."""
        for model in sim.parked_models():
            self.serve_model(sim, model)

    def retry_parked(self, sim: "Simulator", model: str) -> None:
        """Dispatch parked requests of `model`, oldest first, while an instance has room."""
        parked = sim.parked(model)
        while parked:
            inst = self.pick_instance(sim, model)
            if inst is None:
                return
            sim.dispatch(parked[0], inst)
