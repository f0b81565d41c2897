"""The WarmServe recipe over a week-long trace."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.contracts.errors import WarmbenchError
from workloads.multimodel import resample_indices, warmserve_recipe
from workloads.workload import Workload, canonical_frame

DAY = 86_400.0


def week_trace(rate_per_day=(0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5), seed=0):
    """Poisson arrivals with a different constant rate per day; the clock starts at midnight."""
    rng = np.random.default_rng(seed)
    parts = [d * DAY + np.sort(rng.uniform(0, DAY, int(r * DAY / 10))) for d, r in enumerate(rate_per_day)]
    arrival = np.concatenate(parts)
    n = len(arrival)
    frame = canonical_frame(arrival, "src", rng.integers(1, 2000, n), rng.integers(1, 2000, n))
    return Workload(frame, {"source": "week", "clock_origin_s": 1_715_299_200.0, "rows_read": n,
                            "rows_kept": n, "dropped": {}})  # 2024-05-10 00:00 UTC


def test_recipe_rates_days_history_and_clipping():
    trace = week_trace()
    models = ["llama-2-7b", "llama-2-13b", "llama-2-70b"]
    w = warmserve_recipe(trace, models=models, total_rps=6.0, alpha=1.0, start_day=2, start_hour=1.0,
                         duration_s=1200, seed=1, history_days=2)
    counts = w.requests["model"].value_counts()
    shares = np.array([1, 1 / 2, 1 / 3]) / (1 + 1 / 2 + 1 / 3)
    for m, s in zip(models, shares):
        assert counts[m] == pytest.approx(6.0 * s * 1200, rel=0.15)
    assert w.requests["arrival_s"].between(0, 1200).all()
    assert w.requests["input_tokens"].max() <= 1024 and w.requests["output_tokens"].between(3, 1023).all()
    assert [w.meta["per_model"][m]["day"] for m in models] == [2, 3, 4]
    import json
    json.dumps(w.meta)
    h = w.history
    n_windows = h.groupby("model").size()
    assert (n_windows == 2 * DAY / 300).all()  # two days back from the slice start, today included
    assert h["window_start_s"].max() == -300.0
    # History is thinned like the slice: the mean concurrency before the slice is on the slice's scale.
    w_again = warmserve_recipe(trace, models=models, total_rps=6.0, alpha=1.0, start_day=2, start_hour=1.0,
                               duration_s=1200, seed=1, history_days=2)
    pd.testing.assert_frame_equal(w.requests, w_again.requests)
    pd.testing.assert_frame_equal(w.history, w_again.history)


def test_recipe_history_reflects_the_days_it_replays():
    trace = week_trace()
    w = warmserve_recipe(trace, models=["llama-2-7b"], total_rps=1.0, start_day=4, start_hour=0.0,
                         duration_s=3600, history_days=4, clip=False)
    h = w.history.sort_values("window_start_s")
    daily = h["mean_concurrency"].to_numpy().reshape(4, 288).mean(axis=1)
    # Days 0..3 had rates 0.5, 1, 1.5, 2 req/s, scaled by 1/2.5 to the slice's 1 req/s.
    assert daily / daily[-1] == pytest.approx([0.25, 0.5, 0.75, 1.0], rel=0.1)


def test_recipe_needs_enough_days():
    with pytest.raises(WarmbenchError, match="covers days 0..6"):
        warmserve_recipe(week_trace(), models=["a", "b", "c"], start_day=5)


def test_resample_indices_thins_and_replicates():
    rng = np.random.default_rng(0)
    arrival = np.arange(10_000, dtype=float)
    idx, new = resample_indices(arrival, 0.3, rng)
    assert len(idx) == pytest.approx(3000, rel=0.1) and np.all(np.diff(new) > 0)
    idx, new = resample_indices(arrival, 2.5, rng)
    assert len(idx) == pytest.approx(25_000, rel=0.05) and np.all(np.diff(new) >= 0)


def test_default_start_day_takes_the_last_days():
    w = warmserve_recipe(week_trace(), models=["a-7b", "b-7b", "c-13b", "d-70b"], total_rps=2.0, duration_s=600)
    assert [w.meta["per_model"][m]["day"] for m in ["a-7b", "b-7b", "c-13b", "d-70b"]] == [3, 4, 5, 6]
    assert w.meta["params"]["start_day"] == 3
