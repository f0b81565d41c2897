"""Per-model load history (mean / peak concurrent requests per window), as WarmServe's forecaster sees it.

A request is taken to be busy for `prefill + output_tokens * decode`; the reference
implementation uses 35/15 ms (7B), 70/20 ms (13B) and 100/30 ms (70B).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from workloads.workload import HISTORY_COLUMNS

#: (largest size in billions of parameters, prefill seconds, decode seconds per output token).
DURATION_CLASSES: tuple[tuple[float, float, float], ...] = (
    (10.0, 0.035, 0.015),  # 7B class (and anything smaller)
    (30.0, 0.070, 0.020),  # 13B class
    (float("inf"), 0.100, 0.030),  # 70B class (and anything larger)
)

#: Peak concurrency is counted per interval of this length (see window_concurrency).
PEAK_RESOLUTION_S = 1.0


def model_size_b(model: str) -> float:
    """Billions of parameters from a model name like `llama-2-13b` or `qwen2.5-7b#1` (7 if unknown)."""
    match = re.search(r"(\d+(?:\.\d+)?)b\b", model.split("#", 1)[0].lower())
    return float(match.group(1)) if match else 7.0


def timing_s(model: str) -> tuple[float, float]:
    """(prefill_s, decode_s_per_token) for the size class of `model`."""
    size = model_size_b(model)
    for limit, prefill_s, decode_s in DURATION_CLASSES:
        if size <= limit:
            return prefill_s, decode_s
    raise AssertionError("unreachable: the last class has no limit")


def request_durations_s(model: str, output_tokens: np.ndarray) -> np.ndarray:
    """Busy time of each request of `model`: prefill + output_tokens * decode."""
    prefill_s, decode_s = timing_s(model)
    return prefill_s + np.asarray(output_tokens, dtype=np.float64) * decode_s


def window_concurrency(arrival_s: np.ndarray, duration_s: np.ndarray, start_s: float,
                       n_windows: int, window_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Mean and peak concurrency in `n_windows` windows from `start_s`; requests need not be sorted.

    Mean: busy request-seconds inside the window / window length (exact). Peak: the largest
    number of requests overlapping one PEAK_RESOLUTION_S interval of the window (an upper
    bound of the instantaneous peak, tight at 1 s for requests lasting seconds).
    """
    if n_windows == 0:
        return np.zeros(0), np.zeros(0)
    arrival = np.asarray(arrival_s, dtype=np.float64) - start_s
    end = arrival + np.asarray(duration_s, dtype=np.float64)
    span = n_windows * window_s
    if len(arrival):
        # Keep requests that overlap [0, span) (a zero-length one counts where it arrives).
        keep = (arrival < span) & ((end > 0) | (arrival >= 0))
        if not keep.all():
            arrival, end = arrival[keep], end[keep]
    if len(arrival):
        if arrival.min() < 0:
            arrival = np.maximum(arrival, 0.0)
        if end.max() > span:
            end = np.minimum(end, span)
    n_bins = int(np.ceil(span / PEAK_RESOLUTION_S))
    # Bin of each start and end (arrival, end >= 0, so truncation is floor). A request
    # occupies bins first..last inclusive for the peak.
    first = (arrival * (1.0 / PEAK_RESOLUTION_S)).astype(np.int64)
    last = (end * (1.0 / PEAK_RESOLUTION_S)).astype(np.int64)
    started = np.bincount(first, minlength=n_bins + 1)
    ended = np.bincount(last, minlength=n_bins + 1)
    level = np.cumsum(started[:n_bins]) - np.r_[0, np.cumsum(ended[:n_bins - 1])]
    per_window = window_s / PEAK_RESOLUTION_S
    if abs(per_window - round(per_window)) < 1e-9:
        # Windows on bin edges: exact busy time from per-bin sums (no sort, no splitting).
        edges = np.arange(n_windows + 1, dtype=np.int64) * int(round(per_window))
        sum_started = np.r_[0.0, np.cumsum(np.bincount(first, weights=arrival, minlength=n_bins + 1))]
        sum_ended = np.r_[0.0, np.cumsum(np.bincount(last, weights=end, minlength=n_bins + 1))]
        n_started = np.r_[0, np.cumsum(started)]
        n_ended = np.r_[0, np.cumsum(ended)]
        t = edges * PEAK_RESOLUTION_S
        busy_to = sum_ended[edges] + t * (n_started[edges] - n_ended[edges]) - sum_started[edges]
        mean = np.diff(busy_to) / window_s
        window_first_bin = edges[:-1]
    else:
        mean = _busy_per_window(arrival, end, n_windows, window_s) / window_s
        window_first_bin = np.minimum((boundaries_s(n_windows, window_s) // PEAK_RESOLUTION_S).astype(np.int64),
                                      n_bins - 1)
    peak = np.maximum.reduceat(level, window_first_bin).astype(np.float64)
    return mean, peak


def boundaries_s(n_windows: int, window_s: float) -> np.ndarray:
    return window_s * np.arange(n_windows, dtype=np.float64)


def _busy_per_window(a: np.ndarray, e: np.ndarray, n_windows: int, window_s: float) -> np.ndarray:
    """Busy request-seconds in each window for intervals [a, e) (any order; split at window edges)."""
    busy = np.zeros(n_windows + 1)
    cur, end = a, e
    inverse = 1.0 / window_s
    while len(cur):
        w = (cur * inverse).astype(np.int64)  # floor for cur >= 0, much faster than //
        w += (w + 1) * window_s <= cur  # guard rounding just below a window edge
        np.minimum(w, n_windows, out=w)
        seg_end = np.minimum(end, (w + 1) * window_s)
        busy += np.bincount(w, weights=seg_end - cur, minlength=n_windows + 1)
        more = seg_end < end
        cur, end = seg_end[more], end[more]
    return busy[:n_windows]


def whole_windows(span_s: float, window_s: float) -> int:
    """How many whole windows of `window_s` fit in `span_s` (a hair of float error forgiven)."""
    return int(np.floor(span_s / window_s + 1e-9))


def history_frame(per_model: dict[str, tuple[np.ndarray, np.ndarray]], start_s: float,
                  end_s: float, window_s: float) -> pd.DataFrame:
    """HISTORY_COLUMNS for windows ending at `end_s` (the replay start, time 0 of the workload).

    `per_model`: model -> (arrival_s, output_tokens) on one absolute clock. Windows are anchored
    at `end_s` and go back whole windows, so the same window a day earlier is 86,400 s before.
    """
    n_windows = whole_windows(end_s - start_s, window_s)
    first_s = end_s - n_windows * window_s
    offsets = first_s - end_s + window_s * np.arange(n_windows, dtype=np.float64)
    frames = []
    for model, (arrival_s, output_tokens) in per_model.items():
        mean, peak = window_concurrency(arrival_s, request_durations_s(model, output_tokens),
                                        first_s, n_windows, window_s)
        frames.append(pd.DataFrame({"model": model, "window_start_s": offsets,
                                    "mean_concurrency": mean, "peak_concurrency": peak}))
    if not frames:
        return pd.DataFrame({c: [] for c in HISTORY_COLUMNS})
    return pd.concat(frames, ignore_index=True)[list(HISTORY_COLUMNS)]
