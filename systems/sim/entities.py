"""The simulator's entities: GPUs, requests, load flows and links, prewarms and engine instances.

Plain state holders; all behaviour lives in core.Simulator (cluster operations, loading,
lifecycle) and engine.BatchEngine (continuous batching). Policies read them, never write them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from systems.sim.specs import ModelSpec

if TYPE_CHECKING:
    from systems.sim.engine import BatchEngine
    from systems.sim.startup import Loader

WEIGHTS, KV, PREWARMED = "weights", "kv", "prewarmed"
CATEGORIES = (WEIGHTS, KV, PREWARMED)


class SimError(RuntimeError):
    """A policy asked for something impossible (over capacity, wrong GPU, ...): a bug, not user input."""


@dataclass(eq=False)
class Gpu:
    """One GPU. `usage[(category, model)]` in bytes; `used_bytes` is their sum."""

    id: int
    node: int
    index: int
    capacity_bytes: int
    usage: dict[tuple[str, str], int]
    used_bytes: int = 0


class Request:
    """One request's life in the simulator (read-only to policies)."""

    __slots__ = ("id", "row", "model", "arrival_s", "input_tokens", "output_tokens", "n_out",
                 "inst", "dispatch_s", "first_token_s", "end_s", "start_kind", "load_s",
                 "prefill_s", "gen", "join_step", "epoch", "prefilled", "error", "parked")

    def __init__(self, row: int, rid: int, model: str, arrival_s: float, input_tokens: int, output_tokens: int) -> None:
        self.row, self.id, self.model, self.arrival_s = row, rid, model, arrival_s
        self.input_tokens, self.output_tokens = input_tokens, output_tokens
        self.n_out = max(1, output_tokens)
        self.inst: Instance | None = None
        self.dispatch_s = math.nan
        self.first_token_s = math.nan
        self.end_s = math.nan
        self.start_kind = ""
        self.load_s = math.nan
        self.prefill_s = math.nan
        self.gen = 0            # tokens generated when it (re)joined the running batch
        self.join_step = 0      # instance decode step at which it joined
        self.epoch = 0          # bumps on preemption, invalidating finish-heap entries
        self.prefilled = 0      # chunked prefill: prompt tokens done
        self.error = ""
        self.parked = False

    def __repr__(self) -> str:
        return f"Request({self.id}, {self.model}, t={self.arrival_s:.3f})"


class Flow:
    """Bytes moving over links to one GPU for one owner (an Instance or a Prewarm)."""

    __slots__ = ("id", "gpu", "bytes_total", "bytes_left", "rate", "last_s", "links", "version", "owner", "source",
                 "loader", "tp")

    def __init__(self, fid: int, gpu: int, nbytes: float, links: list[Link], owner: Any, source: str, now: float) -> None:
        self.id, self.gpu, self.bytes_total, self.bytes_left = fid, gpu, nbytes, nbytes
        self.rate, self.last_s, self.links, self.version = 0.0, now, links, 0
        self.owner, self.source = owner, source
        self.loader: Any = None     # startup.Loader: its rate on the links' fair shares
        self.tp = 1


class Link:
    __slots__ = ("name", "bytes_per_s", "flows")

    def __init__(self, name: str, bytes_per_s: float) -> None:
        self.name, self.bytes_per_s = name, bytes_per_s
        self.flows: dict[int, Flow] = {}   # flow id -> flow sharing this link


class Prewarm:
    """Weights of `model` held on `gpus` without an instance (loading until `done`)."""

    def __init__(self, pid: int, model: str, spec: ModelSpec, node: int, gpus: tuple[int, ...], tp: int) -> None:
        self.id, self.model, self.spec, self.node, self.gpus, self.tp = pid, model, spec, node, gpus, tp
        self.shard_bytes = spec.shard_bytes(tp)
        self.flows: dict[int, Flow] = {}
        self.started_s = math.nan
        self.done_s = math.nan
        self.evicted = False
        self.clock: Callable[[], float] = lambda: self.started_s

    @property
    def done(self) -> bool:
        return not self.flows and not self.evicted

    @property
    def progress(self) -> float:
        """Share of this prewarm's bytes resident on its GPUs (1.0 when done)."""
        if not self.gpus:
            return 0.0
        now = self.clock()
        left = sum(max(0.0, f.bytes_left - f.rate * (now - f.last_s)) for f in self.flows.values())
        return 1.0 - left / (self.shard_bytes * len(self.gpus))

    def __repr__(self) -> str:
        return f"Prewarm({self.id}, {self.model}, gpus={self.gpus}, progress={self.progress:.2f})"


LOADING, INIT, READY, STOPPED = "loading", "init", "ready", "stopped"


class Instance:
    """A serving engine of one model on a TP group of GPUs in one node: its lifecycle and memory.

    The batch scheduler and its queues are `engine` (systems/sim/engine.BatchEngine)."""

    engine: BatchEngine   # set by the core right after construction

    def __init__(self, iid: int, model: str, spec: ModelSpec, node: int, gpus: tuple[int, ...], loader: Loader) -> None:
        self.id, self.model, self.spec, self.node, self.gpus, self.tp = iid, model, spec, node, gpus, len(gpus)
        # lifecycle
        self.state = LOADING            # loading -> init -> ready -> stopped
        self.draining = False           # takes no new requests; stops when the last one ends
        self.keep_weights = False       # on stop, its weights stay as a finished prewarm
        self.version = 0                # bumps on init and stop: older load / init events are stale
        self.started_s = math.nan
        self.ready_s = math.nan
        self.start_kind = "cold"        # cold | prewarmed | warm (how its weights were obtained)
        self.in_flight = 0              # requests dispatched to it and not finished
        # start cost: weights moved by `loader`, then engine init
        self.loader = loader                       # startup.Loader moving its weights
        self.sources: dict[str, int] = {}          # GPUs loaded per source tier (ssd, host, prewarm...)
        self.pending_flows = 0                     # loads still moving bytes
        self.flows: dict[int, Flow] = {}           # GPU -> its load in progress
        self.engine_init_s = 0.0
        self.init_parts: dict[str, float] = {}     # engine init split (process_s, init_s, profile_s, ...)
        # memory per GPU
        self.shard_bytes = spec.shard_bytes(self.tp)
        self.kv_bytes_per_gpu = 0

    @property
    def ready(self) -> bool:
        return self.state == READY

    @property
    def accepting(self) -> bool:
        """Takes new requests: loading, initialising or ready (not draining or stopped)."""
        return not self.draining and self.state != STOPPED

    def __repr__(self) -> str:
        return f"Instance({self.id}, {self.model}, node={self.node}, gpus={self.gpus}, {self.state})"
