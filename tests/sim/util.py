"""Helpers for simulator tests: small workloads and direct simulator access."""

from __future__ import annotations

from typing import Any

import numpy as np

from systems.sim import CoreOptions
from systems.sim.core import Simulator
from systems.sim.policy import Policy
from systems.sim.specs import GPUS, ClusterSpec, NodeSpec, resolve_cluster
from workloads.workload import Workload, canonical_frame


def workload(arrival_s, model="llama-2-7b", input_tokens=512, output_tokens=64) -> Workload:
    arrival = np.asarray(arrival_s, dtype=float)
    n = len(arrival)
    inp = np.broadcast_to(np.asarray(input_tokens), (n,)).copy()
    out = np.broadcast_to(np.asarray(output_tokens), (n,)).copy()
    return Workload(canonical_frame(arrival, model, inp, out), {"source": "test"})


def poisson(rate_per_s: float, duration_s: float, seed: int = 0, **kw: Any) -> Workload:
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1.0 / rate_per_s, int(rate_per_s * duration_s * 2) + 10))
    return workload(arrival[arrival < duration_s], **kw)


def small_cluster(nodes: int = 1, gpus: int = 8, **node_kw: Any) -> ClusterSpec:
    return ClusterSpec("test", (NodeSpec(GPUS["A100-80GB"], gpus, **node_kw),) * nodes)


def run_policy(wl: Workload, policy: Policy, cluster: ClusterSpec | str = "paper-16gpu",
               debug: bool = True, **options: Any) -> tuple[Simulator, Any]:
    """Run a policy object directly (no registry); returns the simulator and its RunResult."""
    sim = Simulator(wl, resolve_cluster(cluster), policy, options=CoreOptions.model_validate(options), debug=debug)
    return sim, sim.run()


class OneInstance(Policy):
    """Test policy: one warm instance of `model` on GPU group `gpus` at t = 0 (optionally cold)."""

    capacity = 1 << 30

    def __init__(self, model: str = "llama-2-7b", gpus=(0,), warm: bool = True, **start_kw: Any) -> None:
        super().__init__({})
        self.model, self.gpus, self.warm, self.start_kw = model, tuple(gpus), warm, start_kw
        self.inst = None

    def setup(self, sim) -> None:
        self.inst = sim.start_instance(self.model, self.gpus, already_warm=self.warm, **self.start_kw)
