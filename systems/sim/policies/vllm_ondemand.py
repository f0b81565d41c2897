"""`vllm-ondemand`: vanilla vLLM started on demand with the full cold start (SSD -> GPU + engine
init), scaled by the reference autoscaler (docs/paper.md s.2): every 0.5 s, mean in-flight over 5 s,
up above 0.8 x capacity, down below 0.5 x (instances younger than 5 s kept), 32 per instance.
Routing: least in-flight instance with room, else park the request and start an instance.
Engines take the core's max_num_batched_tokens (100000): the reference starts its vanilla-vLLM
engines (--disable-all-prewarm) with the same args as every other, and they run vLLM's
profile_run over that budget at init (prewarm_manager.py create_engine)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field

from systems.sim.autoscale import Autoscaler
from systems.sim.options import MIN_TICK_S, Count, Real, Seconds, SimOptions
from systems.sim.policy import BATCH_CAPACITY, Policy
from systems.sim.registry import register

if TYPE_CHECKING:
    from systems.sim.entities import Instance, Request
    from systems.sim.policy import ClusterAPI


class VllmOnDemandOptions(SimOptions):
    """Options of `vllm-ondemand`: the reference autoscaler's settings (docs/paper.md s.2)."""

    capacity: Count = Field(BATCH_CAPACITY, ge=1, le=1_000_000)
    """Concurrent requests per instance (the reference's BATCH_SIZE)."""
    tick_s: Seconds = Field(0.5, ge=MIN_TICK_S, le=3600.0)
    """Autoscaler period: the reference samples every 0.5 s."""
    window_s: Seconds = Field(5.0, gt=0.0, le=3600.0)
    """Averaging window of the in-flight samples: the reference's 5 s."""
    scale_up: Real = Field(0.8, gt=0.0, le=100.0)
    """Start an instance when the mean in-flight exceeds this share of the instances' capacity (0.8)."""
    scale_down: Real = Field(0.5, ge=0.0, le=100.0)
    """Stop one when it falls below this share (0.5)."""
    min_age_s: Seconds = Field(5.0, le=86_400.0)
    """Instances younger than this are kept (5 s)."""


class VllmOnDemand(Policy):
    #: vLLM's default load format: safetensors, read from the node's SSD (nothing is cached)
    LOADER = "safetensors"
    Options = VllmOnDemandOptions
    options: VllmOnDemandOptions

    def __init__(self, options: SimOptions | Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        o = self.options
        self.capacity = o.capacity
        self.tick_s = o.tick_s
        self.scaler = Autoscaler(o.window_s, o.scale_up, o.scale_down, o.min_age_s, self.capacity)

    def start(self, sim: ClusterAPI, model: str) -> Instance | None:
        group = sim.first_free_group(sim.model(model).tp)
        return None if group is None else sim.start_instance(model, group)

    def on_request(self, sim: ClusterAPI, req: Request) -> None:
        self.route(sim, req)

    def on_finished(self, sim: ClusterAPI, req: Request, inst: Instance) -> None:
        if sim.parked(req.model):
            self.serve_model(sim, req.model)

    def on_ready(self, sim: ClusterAPI, inst: Instance) -> None:
        if sim.parked(inst.model):
            self.serve_model(sim, inst.model)

    def on_stopped(self, sim: ClusterAPI, inst: Instance) -> None:
        self.serve_parked(sim)

    def on_tick(self, sim: ClusterAPI) -> None:
        scaler = self.scaler
        scaler.tick(sim)
        for model in sim.workload_models:
            if scaler.idle(sim, model):
                continue
            mean = scaler.sample(sim, model)
            start, stop = self.scaler.decide(sim, model, mean)
            for _ in range(start):
                inst = self.start(sim, model)
                if inst is None:
                    break
                sim.log("scale_up", model, inst.gpus, f"id={inst.id} mean_in_flight={mean:.2f}",
                        fields={"id": inst.id, "mean_in_flight": mean})
            if start and sim.parked(model):
                self.serve_model(sim, model)
            for inst in stop:
                sim.log("scale_down", model, inst.gpus, f"id={inst.id} mean_in_flight={mean:.2f}",
                        fields={"id": inst.id, "mean_in_flight": mean})
                sim.stop_instance(inst, drain=True)


register("vllm-ondemand", VllmOnDemand)
