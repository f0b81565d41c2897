"""The real Azure LLM inference week (2024), built in: the `azure-2024-conv` / `azure-2024-code` presets.

The package ships the week as request counts per 10-second bin (workloads/data/azure_llm_2024_10s/,
see its SOURCE.md). The presets apply the paper's recipe (workloads/multimodel.warmserve_recipe) to
it without materialising the week's 17-27 M requests:

- model i replays `duration_s` from `start_hour` of day `start_day + i` (UTC days of the week);
- its share of `total_rps` is (i+1)^-alpha, normalised; the thinning ratio is that target count
  over the slice's real count (as the recipe does at full resolution). Each bin's count is
  thinned (Binomial, ratio <= 1) or replicated (the count plus Poisson(count x (ratio-1)) copies,
  ratio > 1) in distribution exactly as the recipe treats each request, so only the slice's and
  the history's *drawn* requests ever exist;
- arrival times are drawn uniformly within their bin (seeded). The bin label is the rounded time,
  so bin b holds [10 b - 5 s, 10 b + 5 s); the week's first and last bins are half bins, as the
  trace starts and ends at midnight. `meta["arrivals"]` says so;
- token lengths are drawn from the real 2023 trace of the same service (the quantile tables of
  workloads/lengths.py; input and output independently, as synthetic-week does);
- the forecaster's history covers up to `history_days` days before the slice (the earlier days of
  the same windows, and today's windows before the slice), thinned by the same ratio.

History: mean and peak concurrency per window need each request's duration (prefill + output
tokens x decode, workloads/concurrency.py), and the peak is a maximum over 1-second intervals that
has no closed form from counts. So the history's requests are drawn like the slice's (at the
thinned rate, outputs from the same table) and measured as `history_frame` measures them, the
definition the recipe and synthetic-week use: one definition everywhere. The cost is the number of
*thinned* requests (about 2 M at the default 5 req/s, a fraction of a second), not the week's, and
they are drawn and measured a day at a time, so memory stays that of one day of one model even at
the trace's own volume.

Seeds: model i draws its slice with generator (seed, i, 0) and its history with (seed, i, 1), so
the replayed requests do not change with `history_days` or `window_s`.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.contracts.errors import InputError
from workloads.concurrency import request_durations_s, whole_windows, window_concurrency
from workloads.lengths import sample_tokens
from workloads.synthetic import DAY_S, PAPER_MODELS, memoised, power_law_shares
from workloads.transform import MAX_OUTPUT_TOKENS, MIN_OUTPUT_TOKENS, clip_lengths
from workloads.workload import HISTORY_COLUMNS, Workload, canonical_frame

SERIES_DIR = Path(__file__).resolve().parent / "data" / "azure_llm_2024_10s"
#: service -> shipped file (AzureLLMInferenceTrace_{conv,code}_1week per 10 s; see SOURCE.md).
SERIES_FILES: dict[str, str] = {"conv": "conv_10s.csv.gz", "code": "code_10s.csv.gz"}
BIN_S = 10.0
#: The shipped series span seven whole UTC days (labels 0 .. 7 days, both ends half bins).
WEEK_S = 7 * DAY_S
ARRIVALS_NOTE = ("drawn uniformly within each 10-second bin of the real per-10-second counts (a bin holds "
                 "[label - 5 s, label + 5 s)), seeded; the times inside a bin are not the trace's")


@dataclass(frozen=True)
class BinSeries:
    """Request counts per bin; bin b is labelled b x bin_s s after `start_utc` (a midnight).

    Bin b covers [label - bin_s/2, label + bin_s/2) clipped to [0, span_s), span_s being the last
    label: the trace starts and ends at midnight, so the first and last bins are half bins.
    """

    counts: np.ndarray
    bin_s: float = BIN_S
    start_utc: str = ""
    name: str = "series"
    sha256: str | None = None

    @property
    def span_s(self) -> float:
        return (len(self.counts) - 1) * self.bin_s

    def bounds_s(self, first: int, last: int) -> tuple[np.ndarray, np.ndarray]:
        """[lo, hi) of bins first..last-1."""
        label = np.arange(first, last, dtype=np.float64) * self.bin_s
        return np.maximum(label - self.bin_s / 2, 0.0), np.minimum(label + self.bin_s / 2, self.span_s)

    def bins_overlapping(self, start_s: float, end_s: float) -> tuple[int, int]:
        """Range of bins whose interval meets [start_s, end_s)."""
        first = max(int(np.floor((start_s + self.bin_s / 2) / self.bin_s)), 0)
        last = min(int(np.ceil((end_s + self.bin_s / 2) / self.bin_s)), len(self.counts))
        return first, max(last, first)

    def expected_count(self, start_s: float, end_s: float) -> float:
        """Real requests in [start_s, end_s), bins split in proportion to overlap (uniform within a bin)."""
        first, last = self.bins_overlapping(start_s, end_s)
        lo, hi = self.bounds_s(first, last)
        overlap = np.clip(np.minimum(hi, end_s) - np.maximum(lo, start_s), 0.0, None)
        width = np.maximum(hi - lo, 1e-12)
        return float((self.counts[first:last] * overlap / width).sum())


@functools.lru_cache(maxsize=4)
def load_series(service: str) -> BinSeries:
    """The shipped 10-second series of `service` (conv or code), checked: every bin present, in order."""
    if service not in SERIES_FILES:
        raise InputError(f"no Azure 2024 series for service {service!r}; known: {sorted(SERIES_FILES)}")
    path = SERIES_DIR / SERIES_FILES[service]
    if not path.is_file():
        raise InputError("the shipped Azure 2024 series is missing from the installation", file=str(path))
    data = path.read_bytes()
    frame = pd.read_csv(path, dtype={"Time": str, "TIMESTAMP": np.int64})
    times = pd.to_datetime(frame["Time"], format="%Y-%m-%d %H:%M:%S", utc=True)
    step_ns = np.diff(times.to_numpy(dtype="datetime64[ns]").astype(np.int64))
    if len(frame) < 2 or (step_ns != int(BIN_S * 1e9)).any() or times.iloc[0] != times.iloc[0].normalize():
        raise InputError("not a gap-free 10-second series starting at midnight", file=str(path))
    counts = frame["TIMESTAMP"].to_numpy(dtype=np.int64)
    if counts.min() < 0:
        raise InputError("negative request count", file=str(path), row=int(np.argmin(counts)) + 1, field="TIMESTAMP")
    return BinSeries(counts=counts, bin_s=BIN_S, start_utc=times.iloc[0].isoformat(),
                     name=f"AzureLLMInferenceTrace_{service}_1week (10 s counts)",
                     sha256=hashlib.sha256(data).hexdigest())


def last_full_day(span_s: float, start_hour: float, duration_s: float) -> int:
    """The last day whose slice [day + start_hour, + duration_s) lies inside [0, span_s); -1 if none."""
    return int(np.floor((span_s - start_hour * 3600.0 - duration_s) / DAY_S + 1e-9))


def draw_arrivals(series: BinSeries, start_s: float, end_s: float, ratio: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Arrival times (unsorted) in [start_s, end_s) of the real stream thinned / replicated by `ratio`.

    A bin's real requests inside the interval are Binomial(count, overlap share) (uniform within the
    bin); each is kept with probability `ratio` (<= 1) or kept with Poisson(ratio - 1) extra copies
    (> 1), as multimodel.resample_indices does per request; times uniform over the overlap.
    """
    first, last = series.bins_overlapping(start_s, end_s)
    if last <= first:
        return np.zeros(0)
    lo, hi = series.bounds_s(first, last)
    lo_in, hi_in = np.maximum(lo, start_s), np.minimum(hi, end_s)
    width = np.clip(hi_in - lo_in, 0.0, None)
    counts = series.counts[first:last]
    frac = np.where(hi > lo, width / np.maximum(hi - lo, 1e-12), 0.0)
    real = np.where(frac >= 1.0, counts, rng.binomial(counts, np.clip(frac, 0.0, 1.0)))
    if ratio <= 1.0:
        drawn = rng.binomial(real, ratio)
    else:
        drawn = real + rng.poisson(real * (ratio - 1.0))
    n = int(drawn.sum())
    return np.repeat(lo_in, drawn) + rng.random(n) * np.repeat(width, drawn)


def history_chunks(series: BinSeries, service: str, slice_start_s: float, history_s: float, ratio: float,
                   window_s: float, clip: bool, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray, int, int]]:
    """The history's requests, drawn about a day of windows at a time: (arrival_s relative to the slice
    start, output tokens, first window, end window) per chunk; windows as history_frame numbers them."""
    n_windows = whole_windows(history_s, window_s)
    first_s = -n_windows * window_s
    per_chunk = max(int(DAY_S // window_s), 1)
    draw_from = -history_s
    for w0 in range(0, n_windows, per_chunk):
        w1 = min(w0 + per_chunk, n_windows)
        draw_to = first_s + w1 * window_s
        t = draw_arrivals(series, slice_start_s + draw_from, slice_start_s + draw_to, ratio, rng) - slice_start_s
        out = sample_tokens(rng, service, "output", len(t))
        yield t, np.clip(out, MIN_OUTPUT_TOKENS, MAX_OUTPUT_TOKENS) if clip else out, w0, w1
        draw_from = draw_to


def history_windows(series: BinSeries, service: str, model: str, slice_start_s: float, history_s: float,
                    ratio: float, window_s: float, clip: bool, rng: np.random.Generator) -> tuple[pd.DataFrame, int]:
    """HISTORY_COLUMNS of `model` for the `history_s` before its slice, and the requests drawn.

    What concurrency.history_frame gives over the requests drawn in [slice - history_s, slice)
    (whole windows ending at the slice start, mean busy time and 1-second peak per window, each
    request busy for prefill + output x decode), measured chunk by chunk: requests still busy at
    a chunk's end are carried into the next, so the result is the one-pass measurement's.
    """
    n_windows = whole_windows(history_s, window_s)
    first_s = -n_windows * window_s
    means, peaks = [np.zeros(0)], [np.zeros(0)]
    carry_t, carry_d = np.zeros(0), np.zeros(0)
    drawn = 0
    for t, out, w0, w1 in history_chunks(series, service, slice_start_s, history_s, ratio, window_s, clip, rng):
        drawn += len(t)
        t, d = np.concatenate([carry_t, t]), np.concatenate([carry_d, request_durations_s(model, out)])
        mean, peak = window_concurrency(t, d, first_s + w0 * window_s, w1 - w0, window_s)
        means.append(mean)
        peaks.append(peak)
        busy = t + d > first_s + w1 * window_s
        carry_t, carry_d = t[busy], d[busy]
    frame = pd.DataFrame({"model": model, "window_start_s": first_s + window_s * np.arange(n_windows, dtype=np.float64),
                          "mean_concurrency": np.concatenate(means), "peak_concurrency": np.concatenate(peaks)})
    return frame[list(HISTORY_COLUMNS)], drawn


def recipe_from_bins(series: BinSeries, service: str, *, models: Sequence[str] = PAPER_MODELS,
                     total_rps: float = 5.0, alpha: float = 1.0, start_day: int | None = None,
                     start_hour: float = 0.0, duration_s: float = 1200.0, seed: int = 0,
                     history_days: int = 6, window_s: float = 300.0, clip: bool = True,
                     source: str | None = None) -> Workload:
    """The WarmServe recipe over a per-bin count series (see the module docstring); `service` picks
    the length tables (conv / code). Parameters as warmserve_recipe's, `cv` aside (applied after)."""
    models = list(models)
    if not models:
        raise InputError("preset: parameter models: needs at least one model")
    last_day = last_full_day(series.span_s, start_hour, duration_s)
    if start_day is None:
        start_day = max(last_day - len(models) + 1, 0)
    if start_day + len(models) - 1 > last_day:
        raise InputError(f"parameter start_day: the series covers days 0..{last_day} for a {duration_s:g} s slice "
                         f"from {start_hour:g} h; {len(models)} models from day {start_day} need day "
                         f"{start_day + len(models) - 1}")
    shares = power_law_shares(len(models), alpha)
    parts, histories, per_model = [], [], {}
    for i, model in enumerate(models):
        day = start_day + i
        slice_start = day * DAY_S + start_hour * 3600.0
        slice_end = slice_start + duration_s
        real = series.expected_count(slice_start, slice_end)
        if real <= 0:
            raise InputError(f"no requests in the slice for model {model!r} (day {day}, {start_hour:g} h, "
                             f"{duration_s:g} s)")
        ratio = total_rps * shares[i] * duration_s / real
        # Back to the first window that holds any request (a partly covered first window counts).
        observed_s = window_s * np.ceil(slice_start / window_s - 1e-9)
        history_s = float(max(min(history_days * DAY_S, observed_s), 0.0)) + 0.0  # never -0.0 in meta
        rng = np.random.default_rng([int(seed), i, 0])
        arrival = np.sort(draw_arrivals(series, slice_start, slice_end, ratio, rng)) - slice_start
        inputs = sample_tokens(rng, service, "input", len(arrival))
        outputs = sample_tokens(rng, service, "output", len(arrival))
        parts.append((arrival, model, inputs, outputs))
        hrng = np.random.default_rng([int(seed), i, 1])
        frame_h, n_history = history_windows(series, service, model, slice_start, history_s, ratio, window_s,
                                             clip, hrng)
        histories.append(frame_h)
        date = pd.Timestamp(series.start_utc) + pd.Timedelta(days=day) if series.start_utc else None
        per_model[model] = {"day": day, "date": None if date is None else f"{date:%Y-%m-%d %a}",
                            "slice_requests": real, "ratio": float(ratio), "history_s": history_s,
                            "history_requests": n_history}
    frame = canonical_frame(np.concatenate([p[0] for p in parts]),
                            np.concatenate([np.full(len(p[0]), p[1], dtype=object) for p in parts]),
                            np.concatenate([p[2] for p in parts]), np.concatenate([p[3] for p in parts]))
    history = pd.concat(histories, ignore_index=True)
    params = {"models": models, "total_rps": float(total_rps), "alpha": float(alpha), "start_day": int(start_day),
              "start_hour": float(start_hour), "duration_s": float(duration_s), "seed": int(seed),
              "history_days": int(history_days), "window_s": float(window_s), "clip": bool(clip)}
    meta = {"source": source or series.name, "format": "azure-llm-2024-10s", "sha256": series.sha256,
            "series": {"name": series.name, "bin_s": series.bin_s, "start_utc": series.start_utc,
                       "span_s": series.span_s, "requests": int(series.counts.sum())},
            "arrivals": ARRIVALS_NOTE,
            "lengths": f"drawn from the Azure LLM trace 2023 {service} quantile tables (workloads/lengths.py)",
            "recipe": "warmserve", "params": params, "window_s": float(window_s),
            "rows_read": len(frame), "rows_kept": len(frame), "dropped": {}, "unsorted_rows": 0,
            "kinds": {m: service for m in models}, "shares": {m: float(s) for m, s in zip(models, shares)},
            "per_model": per_model}
    workload = Workload(frame, meta, history)
    if clip:
        workload = clip_lengths(workload)
    workload.meta["realised_rps"] = len(workload) / float(duration_s)
    return workload


_CACHE: dict[tuple[Any, ...], Workload] = {}


def azure_2024(service: str, *, models: list[str] | tuple[str, ...] = PAPER_MODELS, total_rps: float = 5.0,
               alpha: float = 1.0, duration_s: float = 1200.0, seed: int = 0, start_day: int | None = None,
               start_hour: float = 0.0, history_days: int = 6, window_s: float = 300.0, clip: bool = True,
               cv: float | None = None) -> Workload:
    """Preset `azure-2024-<service>`: parameters checked (workloads/params.py), memoised per
    parameter set (an experiment asks for the same draw in every run), `cv` applied last
    (Gamma inter-arrival times over the replay; the history stays the real traffic)."""
    from workloads.params import Azure2024Params, checked

    name = f"azure-2024-{service}"
    p = checked(Azure2024Params, dict(models=models, total_rps=total_rps, alpha=alpha, duration_s=duration_s,
                                      seed=seed, start_day=start_day, start_hour=start_hour,
                                      history_days=history_days, window_s=window_s, clip=clip, cv=cv),
                what=f"preset {name!r}")
    key = (service, tuple(p.models), p.total_rps, p.alpha, p.duration_s, p.seed, p.start_day, p.start_hour,
           p.history_days, p.window_s, p.clip)
    return memoised(_CACHE, key, lambda: recipe_from_bins(
        load_series(service), service, models=p.models, total_rps=p.total_rps, alpha=p.alpha,
        start_day=p.start_day, start_hour=p.start_hour, duration_s=p.duration_s, seed=p.seed,
        history_days=p.history_days, window_s=p.window_s, clip=p.clip, source=name), cv=p.cv, seed=p.seed)


def azure_2024_conv(*, models: list[str] | tuple[str, ...] = PAPER_MODELS, total_rps: float = 5.0,
                    alpha: float = 1.0, duration_s: float = 1200.0, seed: int = 0, start_day: int | None = None,
                    start_hour: float = 0.0, history_days: int = 6, window_s: float = 300.0, clip: bool = True,
                    cv: float | None = None) -> Workload:
    """`azure-2024-conv`: the conversation service's week (2024-05-12 .. 18, Sunday first)."""
    return azure_2024("conv", models=models, total_rps=total_rps, alpha=alpha, duration_s=duration_s, seed=seed,
                      start_day=start_day, start_hour=start_hour, history_days=history_days, window_s=window_s,
                      clip=clip, cv=cv)


def azure_2024_code(*, models: list[str] | tuple[str, ...] = PAPER_MODELS, total_rps: float = 5.0,
                    alpha: float = 1.0, duration_s: float = 1200.0, seed: int = 0, start_day: int | None = None,
                    start_hour: float = 0.0, history_days: int = 6, window_s: float = 300.0, clip: bool = True,
                    cv: float | None = None) -> Workload:
    """`azure-2024-code`: the coding service's week (2024-05-10 .. 16, Friday first)."""
    return azure_2024("code", models=models, total_rps=total_rps, alpha=alpha, duration_s=duration_s, seed=seed,
                      start_day=start_day, start_hour=start_hour, history_days=history_days, window_s=window_s,
                      clip=clip, cv=cv)


__all__ = ["BinSeries", "azure_2024", "azure_2024_code", "azure_2024_conv", "draw_arrivals", "load_series",
           "recipe_from_bins"]
