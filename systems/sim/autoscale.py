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
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    from systems.sim.core import Instance, Simulator


def _free_groups(sim: "Simulator", tp: int) -> Iterator[tuple[int, ...]]:
    """TP-aligned groups of `tp` GPUs on one node with nothing on them, in GPU order."""
    if sim.empty_gpus() < tp:
        return
    for node in range(len(sim.cluster.nodes)):
        empty = sim.empty_gpus(node)
        if len(empty) < tp:
            continue
        ids = sim.node_gpus(node)
        for start in range(0, len(ids) - tp + 1, tp):
            group = tuple(ids[start:start + tp])
            if all(g in empty for g in group):
                yield group


def free_groups(sim: "Simulator", tp: int) -> list[tuple[int, ...]]:
    """TP-aligned groups of `tp` GPUs on one node with nothing on them, in GPU order."""
    return list(_free_groups(sim, tp))


def first_free_group(sim: "Simulator", tp: int) -> tuple[int, ...] | None:
    """The lowest TP-aligned empty group of `tp` GPUs, or None (O(1) until a GPU empties again)."""
    misses = sim.__dict__.setdefault("_free_group_misses", {})
    if misses.get(tp) == sim.empty_epoch:
        return None
    group = next(_free_groups(sim, tp), None)
    if group is None:
        misses[tp] = sim.empty_epoch
    return group


def model_load(sim: "Simulator", model: str) -> int:
    """In-flight requests of `model`: on its instances plus parked."""
    return sim.open_requests(model)


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
    capacity: int = 32
    _ticks: deque = field(default_factory=deque)
    _samples: dict[str, deque] = field(default_factory=dict)   # nonzero samples only
    _sums: dict[str, float] = field(default_factory=dict)

    def tick(self, sim: "Simulator") -> None:
        """Register a sampling instant (done by `sample` too)."""
        ticks, now = self._ticks, sim.now_s
        if not ticks or ticks[-1] != now:
            ticks.append(now)
            horizon = now - self.window_s
            while ticks[0] <= horizon:
                ticks.popleft()

    def idle(self, sim: "Simulator", model: str) -> bool:
        """No load now, none in the window and no instance: sampling it would change nothing."""
        return not sim.open_requests(model) and not self._samples.get(model) and not sim.instances(model)

    def sample(self, sim: "Simulator", model: str) -> float:
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

    def decide(self, sim: "Simulator", model: str, mean_load: float) -> "tuple[int, list[Instance]]":
        """(instances to start, instances to stop) for `model`, as the reference computes them:
        start ceil(load / up / capacity) - n, or stop n - ceil(load / down / capacity) of the least
        loaded instances older than `min_age_s` (n counts instances still starting)."""
        all_insts = sim.instances(model)
        if not all_insts and mean_load == 0:
            return 0, []
        insts = [i for i in all_insts if not i.draining]
        n = len(insts)
        if mean_load > self.up * n * self.capacity:
            return max(0, math.ceil(mean_load / self.up / self.capacity) - n), []
        if n and mean_load < self.down * n * self.capacity:
            k = n - math.ceil(mean_load / self.down / self.capacity)
            if k <= 0:
                return 0, []
            old = [i for i in insts if sim.now_s - i.started_s > self.min_age_s]
            old.sort(key=lambda i: (i.in_flight, i.id))
            return 0, old[:k]
        return 0, []
