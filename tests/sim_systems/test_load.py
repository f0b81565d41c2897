"""WarmServe load bookkeeping (window concurrency, KV reservation) and the shared autoscaler's arithmetic."""

from __future__ import annotations

import pytest

from systems.sim.autoscale import scale_delta
from systems.sim.policies.warmserve.load import ConcurrencyTracker, kv_reserved_bytes


def test_window_mean_and_peak_are_time_weighted() -> None:
    t = ConcurrencyTracker()
    t.change(10.0, +1)   # 1 in flight from 10 s
    t.change(20.0, +1)   # 2 from 20 s
    t.change(25.0, -1)   # 1 from 25 s
    mean, peak = t.close_window(100.0)
    assert mean == pytest.approx((10 * 1 + 5 * 2 + 75 * 1) / 100)
    assert peak == 2.0
    mean, peak = t.close_window(200.0)   # the request still in flight carries over
    assert (mean, peak) == (1.0, 1.0)


def test_kv_reservation() -> None:
    c = 32_000
    assert kv_reserved_bytes(c, 0, 0) == 1000            # idle: one request's share C/B
    assert kv_reserved_bytes(c, 8, 500) == 8000          # C*Q/B dominates
    assert kv_reserved_bytes(c, 2, 5000) == 6000         # T + C/B dominates
    assert kv_reserved_bytes(c, 64, 0) == c              # never above capacity


def test_scale_delta_thresholds() -> None:
    assert scale_delta(0.0, 0) == 0
    assert scale_delta(26.0, 1) == 1                  # > 0.8 * 32: ceil(26 / 25.6) - 1
    assert scale_delta(60.0, 1) == 2                  # ceil(60 / 25.6) = 3
    assert scale_delta(20.0, 1) == 0
    assert scale_delta(15.0, 2) == -1                 # < 0.5 * 64: keep ceil(15 / 16) = 1
    assert scale_delta(0.0, 3) == -3
