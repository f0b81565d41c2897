"""Concurrency measurement for the forecaster history."""

from __future__ import annotations

import numpy as np
import pytest

from workloads.concurrency import history_frame, request_durations_s, timing_s, window_concurrency


@pytest.mark.parametrize("model, expected", [
    ("llama-2-7b", (0.035, 0.015)), ("llama-2-7b#1", (0.035, 0.015)), ("qwen2.5-7b", (0.035, 0.015)),
    ("llama-2-13b", (0.070, 0.020)), ("qwen2.5-14b", (0.070, 0.020)),
    ("llama-2-70b", (0.100, 0.030)), ("qwen2.5-72b", (0.100, 0.030)), ("llama-3.1-8b", (0.035, 0.015)),
])
def test_timing_by_model_size(model, expected):
    assert timing_s(model) == expected


def test_durations_follow_prefill_plus_decode():
    assert request_durations_s("llama-2-13b", np.array([0, 10])) == pytest.approx([0.07, 0.27])


def test_mean_and_peak_on_a_hand_built_case():
    # Two requests of 10 s in window 0 overlapping for 5 s; one of 100 s spanning windows 0-1.
    arrival = np.array([10.0, 15.0, 50.0])
    duration = np.array([10.0, 10.0, 100.0])
    mean, peak = window_concurrency(arrival, duration, 0.0, 3, 100.0)
    assert mean == pytest.approx([(10 + 10 + 50) / 100, 50 / 100, 0.0])
    assert peak.tolist() == [2.0, 1.0, 0.0]


def test_history_windows_are_anchored_at_the_replay_start():
    h = history_frame({"m": (np.array([950.0]), np.array([10]))}, 0.0, 1000.0, 300.0)
    assert h["window_start_s"].tolist() == [-900.0, -600.0, -300.0]
    assert h["peak_concurrency"].tolist() == [0.0, 0.0, 1.0]


def test_requests_outside_the_windows_do_not_count():
    arrival = np.array([-50.0, -5.0, 150.0, 400.0])  # ends before 0, overlaps 0, inside, after the span
    duration = np.array([10.0, 10.0, 10.0, 10.0])
    mean, peak = window_concurrency(arrival, duration, 0.0, 2, 100.0)
    assert mean == pytest.approx([5 / 100, 10 / 100])
    assert peak.tolist() == [1.0, 1.0]


def test_peak_counts_overlap_within_one_second():
    # Three 0.2 s requests in the same second, one after another: at most 1 at once, 3 in the interval.
    mean, peak = window_concurrency(np.array([0.0, 0.3, 0.6]), np.full(3, 0.2), 0.0, 1, 10.0)
    assert mean == pytest.approx([0.06])
    assert peak.tolist() == [3.0]


def test_fast_and_exact_paths_agree_with_a_brute_force_count():
    rng = np.random.default_rng(5)
    arrival = rng.uniform(-20, 620, 3000)
    duration = rng.exponential(3.0, 3000)
    for window_s in (60.0, 45.5):  # on bin edges (fast path) and not (splitting path)
        n = int(600 // window_s)
        mean, peak = window_concurrency(arrival, duration, 0.0, n, window_s)
        grid = np.arange(0, n * window_s, 0.01) + 0.005
        level = ((arrival[None, :] <= grid[:, None]) & (grid[:, None] < (arrival + duration)[None, :])).sum(axis=1)
        per = level[: len(grid) // n * n].reshape(n, -1)
        assert mean == pytest.approx(per.mean(axis=1), rel=0.02, abs=0.02)
        assert np.all(peak >= per.max(axis=1))  # an upper bound of the instantaneous peak...
        assert np.all(peak <= per.max(axis=1) + 10)  # ...and a tight one (about 5 arrivals per second here)
