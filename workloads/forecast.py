"""Corrected Seasonal Predictor (CSP): per-model mean and peak concurrency of the next window.

Prediction = seasonal baseline (mean of the same window on the previous days) + a correction
from the last N windows of today, weighted 1, 1/2, 1/4, ... from the newest (as the reference
`scheduler.py` does; the paper prints the weights the other way round), normalised to sum 1.
Pure functions over plain dicts so the WarmServe policy, `trace stats` and the tests share one
implementation. `forecast_error` asks how predictable a workload is: the paper reports a
5-minute peak predicted with about 7.3% mean relative error on the Azure conversation trace.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from workloads.concurrency import request_durations_s, window_concurrency

DAY_S = 86_400.0
#: Window sizes `trace stats` scores: the paper's 3-minute, 5-minute (default) and 40-minute.
PAPER_WINDOWS_S: tuple[float, ...] = (180.0, 300.0, 2400.0)
#: Past windows of today used for the correction (the reference's `num_sample_point`).
N_RECENT = 10

#: window index -> (mean concurrency, peak concurrency)
Series = dict[int, tuple[float, float]]


@dataclass(frozen=True)
class Forecast:
    """Predicted mean and peak number of concurrent requests in one window."""

    mean: float
    peak: float


def history_series(history: pd.DataFrame | None, history_window_s: float, window_s: float) -> dict[str, Series]:
    """Per-model window series from a HISTORY_COLUMNS table, re-binned to `window_s` windows.

    Window index k covers [k * window_s, (k+1) * window_s) relative to the workload start.
    Re-binning (for the window-size ablation) takes the overlap-weighted mean of the means and
    the max of the peaks of the source windows a target window overlaps.
    """
    if history is None or len(history) == 0:
        return {}
    out: dict[str, Series] = {}
    for model, rows in history.groupby("model", sort=False):
        src = {
            int(round(float(s) / history_window_s)): (float(m), float(p))
            for s, m, p in zip(rows["window_start_s"], rows["mean_concurrency"], rows["peak_concurrency"])
        }
        out[str(model)] = src if math.isclose(history_window_s, window_s) else rebin(src, history_window_s, window_s)
    return out


def rebin_is_exact(src_window_s: float, dst_window_s: float) -> bool:
    """Whether re-binning keeps the exact mean and peak: each target window is whole source windows."""
    ratio = dst_window_s / src_window_s
    return ratio >= 1.0 - 1e-9 and math.isclose(ratio, round(ratio), rel_tol=0.0, abs_tol=1e-6)


def rebin(src: Series, src_window_s: float, dst_window_s: float) -> Series:
    """Re-bin a window series; a target window is kept only if source windows cover it fully."""
    if not src:
        return {}
    lo = min(src) * src_window_s
    hi = (max(src) + 1) * src_window_s
    out: Series = {}
    first = math.floor(lo / dst_window_s)
    last = math.ceil(hi / dst_window_s)
    for k in range(first, last):
        start, end = k * dst_window_s, (k + 1) * dst_window_s
        covered = 0.0
        weighted = 0.0
        peak = 0.0
        j = math.floor(start / src_window_s)
        while j * src_window_s < end - 1e-9:
            overlap = min(end, (j + 1) * src_window_s) - max(start, j * src_window_s)
            if overlap > 1e-9:
                if j not in src:
                    covered = -1.0
                    break
                covered += overlap
                weighted += src[j][0] * overlap
                peak = max(peak, src[j][1])
            j += 1
        if covered > 0 and math.isclose(covered, dst_window_s, rel_tol=1e-6):
            out[k] = (weighted / covered, peak)
    return out


def seasonal_baseline(history: Series, window: int, windows_per_day: int) -> tuple[float, float] | None:
    """Mean of the same window on every earlier day the history holds; None when it holds none."""
    means: list[float] = []
    peaks: list[float] = []
    earliest = min(history) if history else 0
    d = 1
    while window - d * windows_per_day >= earliest:
        past = history.get(window - d * windows_per_day)
        if past is not None:
            means.append(past[0])
            peaks.append(past[1])
        d += 1
    if not means:
        return None
    return sum(means) / len(means), sum(peaks) / len(peaks)


def correction_weights(n: int) -> list[float]:
    """Weights of the last n windows, newest first: 2^-(w-1) normalised to sum 1."""
    raw = [0.5 ** w for w in range(n)]
    total = sum(raw)
    return [r / total for r in raw]


def predict(history: Series, observed: Mapping[int, tuple[float, float]], window: int, *,
            window_s: float, n_recent: int = N_RECENT, day_s: float = DAY_S) -> Forecast | None:
    """CSP forecast for `window` of one model, or None without a seasonal baseline (go reactive).

    `history`: the model's past windows (negative indices: before the workload start);
    `observed`: windows measured during this run (indices >= 0), which take precedence.
    The correction uses the newest past windows that have both a load and a baseline, up to
    `n_recent`, stopping at the first gap (so the first windows of a day use fewer).
    """
    windows_per_day = max(1, int(round(day_s / window_s)))
    base = seasonal_baseline(history, window, windows_per_day)
    if base is None:
        return None
    errors: list[tuple[float, float]] = []
    for w in range(1, n_recent + 1):
        j = window - w
        load = observed.get(j) if j in observed else history.get(j)
        past_base = seasonal_baseline(history, j, windows_per_day) if load is not None else None
        if load is None or past_base is None:
            break
        errors.append((load[0] - past_base[0], load[1] - past_base[1]))
    mean, peak = base
    if errors:
        weights = correction_weights(len(errors))
        mean += sum(wt * e[0] for wt, e in zip(weights, errors))
        peak += sum(wt * e[1] for wt, e in zip(weights, errors))
    mean = max(mean, 0.0)
    return Forecast(mean=mean, peak=max(peak, mean))


def replay_series(arrival_s: np.ndarray, output_tokens: np.ndarray, model: str, n_windows: int,
                  window_s: float) -> Series:
    """The replay's own windows 0..n_windows-1, measured as the history is (reference durations)."""
    mean, peak = window_concurrency(arrival_s, request_durations_s(model, output_tokens), 0.0, n_windows, window_s)
    return {k: (float(mean[k]), float(peak[k])) for k in range(n_windows)}


def forecast_error(history: pd.DataFrame | None, history_window_s: float, requests: pd.DataFrame,
                   window_s: float, *, n_recent: int = N_RECENT) -> dict[str, object] | None:
    """Mean relative error of the CSP's mean and peak forecasts over the replay's whole windows.

    Each window is forecast from the history plus the replay windows before it, as the policy
    does online. Windows whose measured value is 0 are skipped (no relative error). None when
    there is no history, the history cannot be re-binned exactly to `window_s`, or the replay
    holds no whole window with a forecast.
    """
    if history is None or len(history) == 0 or not rebin_is_exact(history_window_s, window_s):
        return None
    series = history_series(history, history_window_s, window_s)
    n_windows = int(np.floor(float(requests["arrival_s"].max()) / window_s + 1e-9)) if len(requests) else 0
    per_model: dict[str, dict[str, float | int | None]] = {}
    all_mean: list[float] = []
    all_peak: list[float] = []
    for model, rows in requests.groupby("model", sort=True):
        past = series.get(str(model))
        if not past or n_windows == 0:
            continue
        actual = replay_series(rows["arrival_s"].to_numpy(), rows["output_tokens"].to_numpy(), str(model),
                               n_windows, window_s)
        mean_err: list[float] = []
        peak_err: list[float] = []
        for k in range(n_windows):
            # predict reads only windows before k, so the whole replay series can be passed
            f = predict(past, actual, k, window_s=window_s, n_recent=n_recent)
            if f is None:
                continue
            m, p = actual[k]
            if m > 0:
                mean_err.append(abs(f.mean - m) / m)
            if p > 0:
                peak_err.append(abs(f.peak - p) / p)
        all_mean += mean_err
        all_peak += peak_err
        per_model[str(model)] = {"windows": len(peak_err),
                                 "mean_error": float(np.mean(mean_err)) if mean_err else None,
                                 "peak_error": float(np.mean(peak_err)) if peak_err else None}
    if not all_peak:
        return None
    return {"window_s": float(window_s), "windows": len(all_peak),
            "mean_error": float(np.mean(all_mean)) if all_mean else None,
            "peak_error": float(np.mean(all_peak)), "models": per_model}
