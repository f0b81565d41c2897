"""Multi-model workloads from one trace: the WarmServe recipe (one day per model) and Zipf assignment."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.contracts.errors import WarmbenchError
from workloads.concurrency import history_frame
from workloads.synthetic import DAY_S, PAPER_MODELS, power_law_shares
from workloads.transform import clip_lengths, gamma_cv
from workloads.workload import Workload, canonical_frame


def resample_indices(arrival_s: np.ndarray, ratio: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rows (and their arrival times) that thin (ratio < 1) or replicate (ratio > 1) a sorted stream.

    Thinning keeps each row with probability `ratio`; replication keeps every row plus
    Poisson(ratio - 1) copies, each placed uniformly before the next arrival, so the rate
    curve keeps its shape at inter-arrival resolution.
    """
    n = len(arrival_s)
    if ratio <= 1.0:
        idx = np.flatnonzero(rng.random(n) < ratio)
        return idx, arrival_s[idx]
    extra = rng.poisson(ratio - 1.0, n)
    idx = np.repeat(np.arange(n), 1 + extra)
    first = np.r_[True, idx[1:] != idx[:-1]]
    gap = np.r_[np.diff(arrival_s), 0.0][idx]
    new = arrival_s[idx] + np.where(first, 0.0, rng.random(len(idx)) * gap)
    order = np.argsort(new, kind="stable")
    return idx[order], new[order]


def warmserve_recipe(trace: Workload, *, models: Sequence[str] = PAPER_MODELS, total_rps: float = 5.0,
                     alpha: float = 1.0, start_day: int | None = None, start_hour: float = 0.0,
                     duration_s: float = 1200.0, seed: int = 0, history_days: int = 6,
                     window_s: float = 300.0, cv: float | None = None, clip: bool = True) -> Workload:
    """Model i replays `duration_s` from `start_hour` of day `start_day + i` of a (week-long) trace.

    `start_day=None` takes the last days whose slice the trace covers (days 3-6 of a week
    for four models, as the reference does), leaving the most history. Day boundaries are midnights of the trace's own clock (UTC for Azure). Each model's share
    of `total_rps` is (i+1)^-alpha, normalised, reached by thinning / replicating the day's
    stream with seed (seed, i); the same thinning applies to the up-to-`history_days` earlier
    days and to today's windows before the slice, from which the history is measured.
    `cv` reshapes inter-arrival times to a Gamma with that CV (duration kept); `clip` applies
    the paper's length limits.
    """
    models = list(models)
    if not models:
        raise WarmbenchError("the WarmServe recipe needs at least one model")
    if total_rps <= 0 or duration_s <= 0 or window_s <= 0:
        raise WarmbenchError("total_rps, duration_s and window_s must be > 0")
    req = trace.requests
    origin = float(trace.meta.get("clock_origin_s", 0.0))
    clock = req["arrival_s"].to_numpy() + origin
    midnight0 = np.floor(origin / DAY_S) * DAY_S
    # Last day whose whole slice lies inside the trace.
    last_day = int((clock.max() - midnight0 - start_hour * 3600.0 - duration_s) // DAY_S) if len(clock) else -1
    if start_day is None:
        start_day = max(last_day - len(models) + 1, 0)
    if start_day + len(models) - 1 > last_day:
        raise WarmbenchError(f"the trace covers days 0..{last_day}; {len(models)} models from day "
                             f"{start_day} need day {start_day + len(models) - 1}")
    shares = power_law_shares(len(models), alpha)
    outputs_all = req["output_tokens"].to_numpy()
    inputs_all = req["input_tokens"].to_numpy()
    parts, past, per_model_meta = [], {}, {}
    for i, model in enumerate(models):
        slice_start = midnight0 + (start_day + i) * DAY_S + start_hour * 3600.0
        # Back to the first window that holds any request (a partly covered first window counts).
        observed_s = window_s * np.ceil((slice_start - float(clock.min())) / window_s - 1e-9)
        hist_start = slice_start - max(min(history_days * DAY_S, observed_s), 0.0)
        lo, mid, hi = np.searchsorted(clock, [hist_start, slice_start, slice_start + duration_s])
        n_slice = int(hi - mid)
        if n_slice == 0:
            raise WarmbenchError(f"no requests in the slice for model {model!r} (day {start_day + i}, "
                                 f"{start_hour} h, {duration_s} s)")
        ratio = total_rps * shares[i] * duration_s / n_slice
        rng = np.random.default_rng([int(seed), i])
        idx, arrival = resample_indices(clock[lo:hi], ratio, rng)
        idx = idx + lo
        in_slice = arrival >= slice_start
        parts.append((arrival[in_slice] - slice_start, model, inputs_all[idx[in_slice]], outputs_all[idx[in_slice]]))
        hist_out = outputs_all[idx[~in_slice]]
        past[model] = (arrival[~in_slice] - slice_start, np.clip(hist_out, 3, 1023) if clip else hist_out)
        per_model_meta[model] = {"day": start_day + i, "slice_requests": n_slice, "ratio": float(ratio),
                                 "history_s": float(slice_start - hist_start)}
    frame = canonical_frame(np.concatenate([p[0] for p in parts]),
                            np.concatenate([np.full(len(p[0]), p[1], dtype=object) for p in parts]),
                            np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts]))
    history = pd.concat([history_frame({m: past[m]}, -per_model_meta[m]["history_s"], 0.0, window_s)
                         for m in models], ignore_index=True)
    meta = {**{k: v for k, v in trace.meta.items() if k not in ("params", "transforms")},
            "trace_params": trace.meta.get("params"), "recipe": "warmserve", "window_s": float(window_s),
            "params": {"models": models, "total_rps": float(total_rps), "alpha": float(alpha),
                       "start_day": start_day, "start_hour": float(start_hour),
                       "duration_s": float(duration_s), "seed": int(seed), "history_days": int(history_days),
                       "window_s": float(window_s), "cv": cv, "clip": bool(clip)},
            "shares": {m: float(s) for m, s in zip(models, shares)}, "per_model": per_model_meta}
    workload = Workload(frame, meta, history)
    if cv is not None:
        workload = gamma_cv(workload, cv, seed=seed)
    if clip:
        workload = clip_lengths(workload)
    return workload


def zipf_models(trace: Workload, *, models: Sequence[str] = PAPER_MODELS, alpha: float = 1.0,
                seed: int = 0) -> Workload:
    """One stream split over N models with shares (rank+1)^-alpha (see transform.assign_zipf)."""
    from workloads.transform import assign_zipf
    return assign_zipf(trace, models, alpha, seed)


__all__ = ["resample_indices", "warmserve_recipe", "zipf_models"]
