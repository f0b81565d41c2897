"""Pure transformations of a Workload: each returns a new one and appends itself to meta["transforms"].

`rows_read` / `rows_kept` / `dropped` in meta describe what the reader did; every later step
records its own `rows_in` / `rows_out` in `transforms`, so the path from file to workload is
visible and reconciles.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from harness.contracts.errors import InputError, WarmbenchError
from workloads.workload import REQUEST_COLUMNS, Workload

#: The paper's length limits (docs/paper.md s.3).
MAX_INPUT_TOKENS = 1024
MIN_OUTPUT_TOKENS = 3
MAX_OUTPUT_TOKENS = 1023


def _renumber(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort by arrival (stable) and give fresh ids 0..n-1."""
    frame = frame.sort_values("arrival_s", kind="stable").reset_index(drop=True)
    frame["request_id"] = np.arange(len(frame), dtype=np.int64)
    return frame


def _derive(workload: Workload, requests: pd.DataFrame, name: str, params: dict[str, Any],
            history: pd.DataFrame | None | bool = True) -> Workload:
    """New Workload with the step recorded; `history=True` keeps the old history."""
    if len(requests) == 0 and len(workload):
        raise InputError(f"the {name} step {params} leaves no requests (it had {len(workload)})")
    meta = copy.deepcopy(workload.meta)
    meta.setdefault("transforms", []).append(
        {"name": name, **params, "rows_in": len(workload), "rows_out": len(requests)})
    hist = workload.history if history is True else history
    return Workload(requests, meta, hist)


def select_window(workload: Workload, start_s: float, end_s: float | None = None) -> Workload:
    """Keep arrivals in [start_s, end_s) and shift them so the window starts at 0 (history shifts too)."""
    req = workload.requests
    end = np.inf if end_s is None else float(end_s)
    if end <= start_s:
        raise WarmbenchError(f"window end {end_s} must be after its start {start_s}")
    keep = (req["arrival_s"] >= start_s) & (req["arrival_s"] < end)
    out = req.loc[keep].copy()
    out["arrival_s"] = out["arrival_s"] - float(start_s)
    history = workload.history
    if history is not None:
        window_s = float(workload.meta.get("window_s", 0.0))
        history = history.assign(window_start_s=history["window_start_s"] - float(start_s))
        history = history.loc[history["window_start_s"] + window_s <= 1e-9].reset_index(drop=True)
    return _derive(workload, _renumber(out), "window", {"start_s": float(start_s), "end_s": end_s}, history)


def scale_time(workload: Workload, factor: float) -> Workload:
    """Multiply arrival times by `factor` (> 1 stretches and lowers the rate, < 1 compresses)."""
    if not factor > 0:
        raise WarmbenchError(f"time scale factor must be > 0, got {factor}")
    out = workload.requests.copy()
    out["arrival_s"] = out["arrival_s"] * float(factor)
    return _derive(workload, out, "scale_time", {"factor": float(factor)})


def resample_rate(workload: Workload, target_rps: float, seed: int = 0) -> Workload:
    """Thin (or replicate) requests so the mean rate over the span is `target_rps`, keeping the shape.

    Downsampling keeps a seeded uniform subset. Upsampling draws rows with replacement; a
    repeated row is placed uniformly between its arrival and the next one, so the rate
    follows the original curve at inter-arrival resolution.
    """
    if not target_rps > 0:
        raise WarmbenchError(f"target rate must be > 0 requests/s, got {target_rps}")
    req = workload.requests
    n = len(req)
    if n < 2:
        raise WarmbenchError("resampling needs a workload with at least two requests")
    arrival = req["arrival_s"].to_numpy()
    span_s = float(arrival[-1] - arrival[0])
    if span_s <= 0:
        raise WarmbenchError("resampling needs requests spread over time (all arrivals are equal)")
    target = max(int(round(target_rps * span_s)), 1)
    rng = np.random.default_rng(seed)
    if target <= n:
        idx = np.sort(rng.choice(n, size=target, replace=False))
        out = req.iloc[idx].copy()
    else:
        idx = np.sort(np.concatenate([np.arange(n), rng.integers(0, n, target - n)]))
        out = req.iloc[idx].copy()
        repeat = np.r_[False, idx[1:] == idx[:-1]]
        gap = np.r_[np.diff(arrival), 0.0][idx]
        new_arrival = arrival[idx] + np.where(repeat, rng.random(len(idx)) * gap, 0.0)
        out["arrival_s"] = new_arrival
    return _derive(workload, _renumber(out), "resample_rate",
                   {"target_rps": float(target_rps), "seed": int(seed)})


def gamma_cv(workload: Workload, cv: float, seed: int = 0) -> Workload:
    """Redraw the inter-arrival times of the whole stream from a Gamma with coefficient of variation `cv`.

    As the WarmServe reference does: the request count, the order of requests (so each
    model's count and the lengths), and the first and last arrival are kept; the Gamma
    gaps are scaled to sum to the original span.
    """
    if not cv > 0:
        raise WarmbenchError(f"target CV must be > 0, got {cv}")
    out = workload.requests.copy()
    arrival = out["arrival_s"].to_numpy()
    if len(arrival) >= 3 and arrival[-1] > arrival[0]:
        rng = np.random.default_rng(seed)
        gaps = rng.gamma(1.0 / cv ** 2, 1.0, len(arrival) - 1)
        new = arrival[0] + np.r_[0.0, np.cumsum(gaps)] * ((arrival[-1] - arrival[0]) / gaps.sum())
        new[-1] = arrival[-1]
        out["arrival_s"] = np.maximum.accumulate(new)  # cumsum rounding must not reorder
    return _derive(workload, out, "gamma_cv", {"cv": float(cv), "seed": int(seed)})


def clip_lengths(workload: Workload, max_input_tokens: int = MAX_INPUT_TOKENS,
                 min_output_tokens: int = MIN_OUTPUT_TOKENS,
                 max_output_tokens: int = MAX_OUTPUT_TOKENS) -> Workload:
    """Clip token counts to the paper's limits (input <= 1024, 3 <= output <= 1023); no row is dropped."""
    if min_output_tokens > max_output_tokens:
        raise WarmbenchError("min_output_tokens must not exceed max_output_tokens")
    out = workload.requests.copy()
    clipped_in = int((out["input_tokens"] > max_input_tokens).sum())
    clipped_out = int(((out["output_tokens"] < min_output_tokens) | (out["output_tokens"] > max_output_tokens)).sum())
    out["input_tokens"] = out["input_tokens"].clip(upper=max_input_tokens).astype(np.int64)
    out["output_tokens"] = out["output_tokens"].clip(min_output_tokens, max_output_tokens).astype(np.int64)
    return _derive(workload, out, "clip_lengths", {
        "max_input_tokens": int(max_input_tokens), "min_output_tokens": int(min_output_tokens),
        "max_output_tokens": int(max_output_tokens), "inputs_clipped": clipped_in,
        "outputs_clipped": clipped_out})


def _none_last(window_s: float | None) -> float:
    """Sort key for window lengths where a history may not state one (None)."""
    return float("inf") if window_s is None else window_s


def merge(workloads: Sequence[Workload]) -> Workload:
    """Interleave several workloads (e.g. one per model) into one, by arrival; histories are concatenated."""
    if not workloads:
        raise WarmbenchError("merge needs at least one workload")
    frames = [w.requests[list(REQUEST_COLUMNS)] for w in workloads]
    out = _renumber(pd.concat(frames, ignore_index=True))
    histories = [w.history for w in workloads if w.history is not None]
    windows = {w.meta.get("window_s") for w in workloads if w.history is not None}
    if len(windows) > 1:
        raise WarmbenchError(f"cannot merge histories with different window lengths {sorted(windows, key=_none_last)}")
    meta: dict[str, Any] = {
        "source": "merge", "format": "merge", "sources": [copy.deepcopy(w.meta) for w in workloads],
        "rows_read": sum(int(w.meta.get("rows_read", len(w))) for w in workloads),
        "rows_kept": sum(int(w.meta.get("rows_kept", len(w))) for w in workloads),
        "dropped": {}, "transforms": [{"name": "merge", "rows_in": sum(len(w) for w in workloads),
                                       "rows_out": len(out)}],
    }
    for w in workloads:
        for reason, count in w.meta.get("dropped", {}).items():
            meta["dropped"][reason] = meta["dropped"].get(reason, 0) + int(count)
    if windows:
        meta["window_s"] = windows.pop()
    history = pd.concat(histories, ignore_index=True) if histories else None
    return Workload(out, meta, history)


def assign_zipf(workload: Workload, models: Sequence[str], alpha: float = 1.0, seed: int = 0) -> Workload:
    """Give each request of one stream a model drawn with probability (rank+1)^-alpha (rank = list order)."""
    if not models:
        raise WarmbenchError("assign_zipf needs at least one model")
    weights = (np.arange(len(models), dtype=np.float64) + 1.0) ** -float(alpha)
    rng = np.random.default_rng(seed)
    out = workload.requests.copy()
    out["model"] = np.asarray(models, dtype=object)[rng.choice(len(models), size=len(out), p=weights / weights.sum())]
    return _derive(workload, out, "assign_zipf",
                   {"models": list(models), "alpha": float(alpha), "seed": int(seed)}, history=None)
