"""The reference autoscaler (docs/paper.md s.2), shared by the systems that scale on load.

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

from systems.sim.policy import BATCH_CAPACITY

if TYPE_CHECKING:
    from systems.sim.entities import Instance
    from systems.sim.policy import ClusterAPI


def scale_delta(load: float, instances: int, capacity: int = BATCH_CAPACITY, up: float = 0.8,
                down: float = 0.5) -> int:
    """Instances to add (> 0) or stop (< 0) for a mean in-flight `load` (reference `_check_engines`):
    above `up` of the instances' capacity, ceil(load / up / capacity) in all; below `down`,
    ceil(load / down / capacity)."""
    total = instances * capacity
    if load > total * up:
        return max(math.ceil(load / up / capacity) - instances, 0)
    if load < total * down:
        return -max(instances - math.ceil(load / down / capacity), 0)
    return 0


@dataclass
class Autoscaler:
    """The reference autoscaler's decision rule; call `sample` every period, then `decide`.

    The window mean counts sampling instants, not calls: at each tick sample every model, or
    skip the ones for which `idle(sim, model)` holds (their zero samples are implicit), which
    keeps a 64-model cluster's tick O(active models)."""

    window_s: float = 5.0
    up: float = 0.8
    down: float = 0.5
    min_age_s: float = 5.0
    capacity: int = BATCH_CAPACITY
    _ticks: deque[float] = field(default_factory=deque)
    _samples: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)   # nonzero samples only: (time, load)
    _sums: dict[str, float] = field(default_factory=dict)

    def tick(self, sim: ClusterAPI) -> None:
        """Register a sampling instant (done by `sample` too)."""
        ticks, now = self._ticks, sim.now_s
        if not ticks or ticks[-1] != now:
            ticks.append(now)
            horizon = now - self.window_s
            while ticks[0] <= horizon:
                ticks.popleft()

    def idle(self, sim: ClusterAPI, model: str) -> bool:
        """No load now, none in the window and no instance: sampling it would change nothing."""
        return not sim.open_requests(model) and not self._samples.get(model) and not sim.instances(model)

    def sample(self, sim: ClusterAPI, model: str) -> float:
        """Record the model's load now; returns the mean over the window's sampling instants."""
        self.tick(sim)
        q = self._samples.get(model)
        if q is None:
            q = self._samples[model] = deque()
            self._sums[model] = 0
        load = sim.open_requests(model)
        total = self._sums[model]
        if load:
            q.append((sim.now_s, load))
            total += load
        horizon = sim.now_s - self.window_s
        while q and q[0][0] <= horizon:
            total -= q.popleft()[1]
        self._sums[model] = total
        return total / len(self._ticks)

    def decide(self, sim: ClusterAPI, model: str, mean_load: float) -> tuple[int, list[Instance]]:
        """(instances to start, instances to stop) for `model`, as the reference computes them:
        start ceil(load / up / capacity) - n, or stop n - ceil(load / down / capacity) of the least
        loaded instances older than `min_age_s` (n counts instances still starting)."""
        insts = [i for i in sim.instances(model) if not i.draining]
        delta = scale_delta(mean_load, len(insts), self.capacity, self.up, self.down)
        if delta >= 0:
            return delta, []
        old = [i for i in insts if sim.now_s - i.started_s > self.min_age_s]
        old.sort(key=lambda i: (i.in_flight, i.id))
        return 0, old[:-delta]
