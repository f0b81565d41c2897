"""The base class of a simulated serving system, and the typed cluster API it drives.

A system is a `Policy` subclass in one module of `systems/sim/policies/` that registers
itself: `registry.register("name", MyPolicy)` (the class is the factory; its `Options`, a pydantic
model of systems/sim/options.py, declares the options it takes: name, default, bounds, meaning).
The core knows nothing of any policy.
Every hook receives `sim`, a `ClusterAPI` (what the simulator core offers a policy, nothing
more), and runs at `sim.now_s`; none may block. Requests, instances and prewarms
(systems/sim/entities.py) are read-only to a policy except through the API's operations.

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

Start kinds are set by the core: `warm` (dispatched on arrival to a ready instance), `queued`
(parked first, then a ready instance), else the instance's start kind `cold` / `prewarmed`
(dispatched while it was starting). Options: `simulate(..., options=)` passes one dict; the core
takes `CoreOptions` (options.py) and the policy its own `Options`; an unknown name is a user error.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from harness.contracts.options import validate
from systems.sim.options import NoOptions, SimOptions

if TYPE_CHECKING:
    from systems.sim.entities import Gpu, Instance, Prewarm, Request
    from systems.sim.perf import PerfModel
    from systems.sim.specs import ClusterSpec, ModelSpec
    from systems.sim.tables import EventFields
    from workloads.workload import Workload

#: Concurrent requests an instance takes before it counts as full: the WarmServe reference's
#: BATCH_SIZE (LLMServe/WarmServe scheduler), which the paper's autoscaler and router use for every
#: system it compares; the systems' `capacity` option, MuxServe's max_num_seqs and the warmserve
#: planner's batch default to it.
BATCH_CAPACITY = 32


class ClusterAPI(Protocol):
    """What a policy may read and do: the simulator core implements it (core.Simulator)."""

    # ---- time, shape, workload
    @property
    def now_s(self) -> float:
        """Virtual time of the event being handled, in seconds."""
    @property
    def cluster(self) -> ClusterSpec:
        """The simulated cluster's nodes and GPU kinds."""
    @property
    def gpus(self) -> Sequence[Gpu]:
        """Every GPU (global id order): `id`, `node`, `index`, `capacity_bytes`."""
    @property
    def workload(self) -> Workload:
        """The workload this run simulates (truncated to `duration_s`), with its meta and history."""
    @property
    def workload_models(self) -> list[str]:
        """Models of the simulated workload, in order of first arrival."""
    @property
    def duration_s(self) -> float:
        """Arrivals simulated: those before this time (virtual seconds)."""
    @property
    def gpu_util(self) -> float:
        """Share of a GPU's memory an instance may use by default (core option)."""
    @property
    def max_model_len(self) -> int:
        """Prompt + output token limit of every engine (core option; 0 = none)."""
    def model(self, name: str) -> ModelSpec:
        """Spec of a workload model name."""
    def perf(self, model: str, tp: int | None = None, gpu: int = 0) -> PerfModel:
        """Iteration-time model of `model` on `tp` GPUs (default: its TP) of `gpu`'s kind."""
    def node_gpus(self, node: int) -> list[int]:
        """Global GPU ids of `node`, in order (do not mutate)."""

    # ---- memory and placement
    def free_bytes(self, gpu: int) -> int:
        """Bytes free on `gpu`."""
    def used_bytes(self, gpu: int, category: str | None = None) -> int:
        """Bytes used on `gpu`, of one category (weights / kv / prewarmed) or all."""
    def first_free_group(self, tp: int) -> tuple[int, ...] | None:
        """The lowest TP-aligned group of `tp` empty GPUs on one node, or None."""
    def host_models(self, node: int) -> list[str]:
        """Checkpoints cached in `node`'s host memory."""
    def host_free_bytes(self, node: int) -> int:
        """Host memory of `node` not holding a cached checkpoint."""
    def host_put(self, node: int, model: str) -> None:
        """Cache `model`'s checkpoint in `node`'s host memory (SimError when it does not fit)."""
    def host_evict(self, node: int, model: str) -> None:
        """Drop `model`'s checkpoint from `node`'s host memory."""

    # ---- instances
    def instances(self, model: str | None = None) -> list[Instance]:
        """Live (not stopped) instances, of one model or all, in creation order (do not mutate)."""
    def start_instance(self, model: str, gpus: Iterable[int], *, kv_bytes_per_gpu: int | None = None,
                       max_num_seqs: int | None = None, compute_share: float = 1.0,
                       engine_init_s: float | None = None, already_warm: bool = False,
                       loader: str | None = None, max_num_batched_tokens: int | None = None) -> Instance:
        """Start an engine of `model` with TP over `gpus` (weights from the fastest tier holding them)."""
    def stop_instance(self, inst: Instance, *, drain: bool = True, keep_weights: bool = False) -> None:
        """Stop `inst` (after its requests with `drain`); `keep_weights` leaves them as a prewarm."""
    def set_kv_bytes(self, inst: Instance, kv_bytes_per_gpu: int) -> int:
        """Resize `inst`'s KV cache per GPU (no lower than in use); returns the size applied."""
    def kv_needed_bytes(self, inst: Instance) -> int:
        """KV bytes per GPU `inst` holds now plus its waiting prompts and decode stretch need."""

    # ---- weights without an instance
    def prewarm(self, model: str, gpus: Iterable[int], *, already_loaded: bool = False,
                loader: str | None = None) -> Prewarm:
        """Load `model`'s weights onto `gpus` without an engine."""
    def evict(self, pw: Prewarm) -> None:
        """Drop a prewarm's weights (cancelling its loads)."""
    def prewarms(self, model: str | None = None) -> list[Prewarm]:
        """Live prewarms, of one model or all."""
    def prewarms_on(self, gpu: int) -> list[Prewarm]:
        """Prewarms holding a shard on `gpu`."""

    # ---- requests and events
    def dispatch(self, req: Request, inst: Instance) -> None:
        """Send a parked request to `inst` (ready or still starting; not draining or stopped)."""
    def parked(self, model: str) -> deque[Request]:
        """Requests of `model` no instance has yet, oldest first (do not mutate)."""
    def parked_models(self) -> list[str]:
        """Models with parked requests, the oldest parked request's first."""
    def open_requests(self, model: str) -> int:
        """Requests of `model` that arrived and have not finished (O(1))."""
    def fail_parked(self, model: str, reason: str) -> int:
        """Fail every parked request of `model` with `reason`; returns how many."""
    def log(self, kind: str, model: str = "", gpus: Iterable[int] = (), detail: str = "",
            fields: EventFields | None = None) -> None:
        """Add a control-plane event (forecast, scale...) at `now_s`: `fields` typed, `detail` for people."""


class Policy:
    """Default behaviour: route to the least-loaded instance with room, never start anything."""

    #: the options model: one field per option, with its default and bounds (systems/sim/options.py)
    Options: ClassVar[type[SimOptions]] = NoOptions
    #: the validated options (a subclass narrows the type to its own model)
    options: SimOptions
    #: period of `on_tick` in seconds; None: no ticks.
    tick_s: float | None = None
    #: concurrent requests an instance takes before it counts as full
    capacity: int = BATCH_CAPACITY
    #: the checkpoint loader its instance starts use, as the real system does (a name of
    #: systems/sim/startup.LOADERS); "dma" moves bytes at link speed, an ideal loader.
    LOADER: ClassVar[str] = "dma"
    #: the loader of its prewarms (weights loaded without an engine), where it makes any.
    PREWARM_LOADER: ClassVar[str] = "dma"

    def __init__(self, options: SimOptions | Mapping[str, Any] | None = None) -> None:
        """`options`: values by name (validated here: coerced, defaults filled in, bounds checked)
        or an instance of `Options` already validated (systems.sim.split_options)."""
        if isinstance(options, SimOptions):
            if not isinstance(options, self.Options):
                raise TypeError(f"{type(self).__name__} takes {self.Options.__name__}, not {type(options).__name__}")
            self.options = options
        else:
            self.options = validate(self.Options, options, what=f"{type(self).__name__}: ")

    # ---- hooks -----------------------------------------------------------------------
    def setup(self, sim: ClusterAPI) -> None:
        """Called once at t = 0."""

    def on_request(self, sim: ClusterAPI, req: Request) -> None:
        inst = self.pick_instance(sim, req.model)
        if inst is not None:
            sim.dispatch(req, inst)

    def on_tick(self, sim: ClusterAPI) -> None:
        """Called every `tick_s` seconds."""

    def on_finished(self, sim: ClusterAPI, req: Request, inst: Instance) -> None:
        self.retry_parked(sim, req.model)

    def on_ready(self, sim: ClusterAPI, inst: Instance) -> None:
        self.retry_parked(sim, inst.model)

    def on_prewarm_done(self, sim: ClusterAPI, pw: Prewarm) -> None:
        """A prewarm finished loading."""

    def on_stopped(self, sim: ClusterAPI, inst: Instance) -> None:
        self.retry_parked(sim, inst.model)

    def on_kv_full(self, sim: ClusterAPI, inst: Instance) -> None:
        """The engine of `inst` is short of KV blocks; default: let it queue or preempt."""

    # ---- helpers for subclasses -------------------------------------------------------
    def pick_instance(self, sim: ClusterAPI, model: str, *, include_starting: bool = True) -> Instance | None:
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

    def start(self, sim: ClusterAPI, model: str) -> Instance | None:
        """Start an instance of `model` where this policy places it; None when it cannot (default)."""
        return None

    def dispatched(self, sim: ClusterAPI, inst: Instance) -> None:
        """Called after `route`/`serve_model` sent a request to `inst` (e.g. to resize its KV)."""

    def route(self, sim: ClusterAPI, req: Request) -> None:
        """Reference router: least in-flight instance with room, else start one; else it stays
        parked. Older parked requests of the model go first."""
        if len(sim.parked(req.model)) > 1:
            return
        inst = self.pick_instance(sim, req.model) or self.start(sim, req.model)
        if inst is not None and req.inst is None:
            sim.dispatch(req, inst)
            self.dispatched(sim, inst)

    def serve_model(self, sim: ClusterAPI, model: str) -> None:
        """Give `model`'s parked requests room on its instances, starting ones where `start` can."""
        parked = sim.parked(model)
        while parked:
            inst = self.pick_instance(sim, model) or self.start(sim, model)
            if inst is None:
                return
            sim.dispatch(parked[0], inst)
            self.dispatched(sim, inst)

    def serve_parked(self, sim: ClusterAPI) -> None:
        """Serve every model's parked requests, the model with the oldest one first."""
        for model in sim.parked_models():
            self.serve_model(sim, model)

    def retry_parked(self, sim: ClusterAPI, model: str) -> None:
        """Dispatch parked requests of `model`, oldest first, while an instance has room."""
        parked = sim.parked(model)
        while parked:
            inst = self.pick_instance(sim, model)
            if inst is None:
                return
            sim.dispatch(parked[0], inst)
