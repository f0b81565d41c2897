"""Building blocks shared by systems: free GPU groups and the reference autoscaler (PAPER.md s.2).

The autoscaler samples each model's in-flight requests (instances' plus parked) every
`period_s`, averages them over `window_s`, and asks for one more instance when the mean
exceeds `up * instances * capacity`, or stops the least loaded instance older than
`min_age_s` when it falls below `down * instances * capacity`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from systems.sim.core import Instance, Simulator


def free_groups(sim: "Simulator", tp: int) -> list[tuple[int, ...]]:
    """TP-aligned groups of `tp` GPUs on one node with nothing on them, in GPU order."""
    groups = []
    if sim.empty_gpus() < tp:
        return groups
    for node in range(len(sim.cluster.nodes)):
        empty = sim.empty_gpus(node)
        if len(empty) < tp:
            continue
        ids = sim.node_gpus(node)
        for start in range(0, len(ids) - tp + 1, tp):
            group = tuple(ids[start:start + tp])
            if all(g in empty for g in group):
                groups.append(group)
    return groups


def first_free_group(sim: "Simulator", tp: int) -> tuple[int, ...] | None:
    """The lowest TP-aligned empty group of `tp` GPUs, or None (O(1) when the cluster is full)."""
    if sim.empty_gpus() < tp:
        return None
    for node in range(len(sim.cluster.nodes)):
        empty = sim.empty_gpus(node)
        if len(empty) < tp:
            continue
        ids = sim.node_gpus(node)
        for start in range(0, len(ids) - tp + 1, tp):
            group = tuple(ids[start:start + tp])
            if all(g in empty for g in group):
                return group
    return None


def model_load(sim: "Simulator", model: str) -> int:
    """In-flight requests of `model`: on its instances plus parked."""
    return sum(i.in_flight for i in sim.instances(model)) + len(sim.parked(model))


@dataclass
class Autoscaler:
    """The reference autoscaler's decision rule; call `sample` every period, then `decide`."""

    window_s: float = 5.0
    up: float = 0.8
    down: float = 0.5
    min_age_s: float = 5.0
    capacity: int = 32
    _samples: dict[str, deque] = field(default_factory=dict)

    def sample(self, sim: "Simulator", model: str) -> float:
        """Record the model's load now; returns the mean over the window."""
        q = self._samples.setdefault(model, deque())
        q.append((sim.now_s, model_load(sim, model)))
        while q and q[0][0] <= sim.now_s - self.window_s:
            q.popleft()
        return sum(v for _, v in q) / len(q)

    def decide(self, sim: "Simulator", model: str, mean_load: float) -> "tuple[int, list[Instance]]":
        """(instances to start, instances to stop) for `model`, as the reference computes them:
        start ceil(load / up / capacity) - n, or stop n - ceil(load / down / capacity) of the least
        loaded instances older than `min_age_s` (n counts instances still starting)."""
        insts = [i for i in sim.instances(model) if i.accepting]
        n = len(insts)
        if mean_load > self.up * n * self.capacity:
            return max(0, math.ceil(mean_load / self.up / self.capacity) - n), []
        if n and mean_load < self.down * n * self.capacity:
            k = n - math.ceil(mean_load / self.down / self.capacity)
            old = [i for i in insts if sim.now_s - i.started_s > self.min_age_s]
            old.sort(key=lambda i: (i.in_flight, i.id))
            return 0, old[:max(0, k)]
        return 0, []
