"""Load bookkeeping WarmServe's controller keeps: per-model concurrency per window, KV reservation.

Pure and clock-free: callers pass virtual time, so the policy and the tests share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from systems.sim.policy import BATCH_CAPACITY


@dataclass
class ConcurrencyTracker:
    """Time-weighted mean and peak of one model's in-flight requests per window (reference `ModelStatus`)."""

    in_flight: int = 0
    last_s: float = 0.0
    area: float = 0.0
    peak: int = 0
    window_start_s: float = 0.0
    recent: list[tuple[float, int]] = field(default_factory=list)

    def change(self, now_s: float, delta: int) -> None:
        """Record one request arriving (+1) or finishing (-1) at `now_s`."""
        self.area += (now_s - self.last_s) * self.in_flight
        self.in_flight += delta
        self.last_s = now_s
        self.peak = max(self.peak, self.in_flight)

    def close_window(self, now_s: float) -> tuple[float, float]:
        """(mean, peak) concurrency since the last close; starts the next window at `now_s`."""
        self.area += (now_s - self.last_s) * self.in_flight
        span = now_s - self.window_start_s
        mean = self.area / span if span > 0 else float(self.in_flight)
        out = (mean, float(max(self.peak, self.in_flight)))
        self.area, self.last_s, self.window_start_s, self.peak = 0.0, now_s, now_s, self.in_flight
        return out


def kv_reserved_bytes(capacity_bytes: int, active_requests: int, held_bytes: int, batch: int = BATCH_CAPACITY) -> int:
    """KV an instance keeps for itself: max(C*Q/B, T + C/B), at most C; the rest may be lent.

    C: KV capacity, Q: requests it serves, B: batch capacity, T: KV bytes its requests hold now.
    """
    want = max(capacity_bytes * active_requests / batch, held_bytes + capacity_bytes / batch)
    return int(min(capacity_bytes, math.ceil(want)))
