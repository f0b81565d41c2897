"""Metrics over `RunResult.requests`: the one implementation of docs/design.md s.6.

Pure functions over a request table; sim and live runs share them. A metric that cannot be
measured (no requests, no streamed tokens, nothing finished) is NaN, never 0.

Definitions:
- TTFT = first_token_s - scheduled_s (the scheduled time, so a late client cannot hide queueing),
  for every request that got a first token, whatever its final status.
- TPOT = (end_s - first_token_s) / (tokens - 1) for `ok` requests with >= 2 tokens, where tokens is
  `received_tokens` when known, else `output_tokens`.
- ITL = the gaps in the optional `itl_s` list column, pooled over requests (NaN without it).
- E2E = end_s - scheduled_s for `ok` requests.
- Percentiles use linear interpolation (numpy's default), per model and overall.
- SLO attainment = share of *all* requests that are `ok`, have TTFT <= slo.ttft_s and TPOT <= slo.tpot_s
  (a request with < 2 tokens has no TPOT and only needs the TTFT limit); goodput = those per second.
- Paper view: TTFT of every request that is not `ok` is set to 999 s (none are dropped).
- Share with TTFT < 100 ms counts over all requests (a failed request is not under 100 ms).
- Throughput: `ok` requests and their tokens per second of run span (first scheduled to last end).
- Client send lag = sent_s - scheduled_s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.stats import t_quantile

#: Paper-compatible TTFT for a request that never completed.
PAPER_UNFINISHED_TTFT_S = 999.0
#: Threshold of the paper's ablation metric.
FAST_TTFT_S = 0.1
#: A run whose P99 send lag exceeds this is flagged "client overloaded" by the report
#: (the live client's default `overload_threshold_ms`).
CLIENT_LAG_LIMIT_S = 0.010
PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)
#: Name of the pseudo-model that aggregates all models.
ALL_MODELS = "all"


@dataclass(frozen=True)
class Slo:
    """Latency limits a request must meet to count as attained (defaults: TTFT 1 s, TPOT 100 ms)."""

    ttft_s: float = 1.0
    tpot_s: float = 0.1


def _num(requests: pd.DataFrame, column: str) -> np.ndarray:
    if column not in requests.columns:
        return np.full(len(requests), np.nan)
    return pd.to_numeric(requests[column], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _ok(requests: pd.DataFrame) -> np.ndarray:
    return requests["status"].astype(str).to_numpy() == "ok" if len(requests) else np.zeros(0, dtype=bool)


def ttft_s(requests: pd.DataFrame) -> np.ndarray:
    """Per-request TTFT from the scheduled time; NaN where no first token came."""
    return _num(requests, "first_token_s") - _num(requests, "scheduled_s")


def paper_ttft_s(requests: pd.DataFrame) -> np.ndarray:
    """Per-request TTFT with every request that is not `ok` set to 999 s (the paper's view)."""
    ttft = ttft_s(requests)
    return np.where(_ok(requests) & np.isfinite(ttft), ttft, PAPER_UNFINISHED_TTFT_S)


def token_counts(requests: pd.DataFrame) -> np.ndarray:
    """Tokens that came back: `received_tokens` where known, else what was asked."""
    received, asked = _num(requests, "received_tokens"), _num(requests, "output_tokens")
    return np.where(np.isfinite(received), received, asked)


def tpot_s(requests: pd.DataFrame) -> np.ndarray:
    """Per-request time per output token after the first; NaN unless ok with >= 2 tokens."""
    tokens = token_counts(requests)
    span = _num(requests, "end_s") - _num(requests, "first_token_s")
    valid = _ok(requests) & (tokens >= 2) & np.isfinite(span)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid, span / (tokens - 1), np.nan)


def e2e_s(requests: pd.DataFrame) -> np.ndarray:
    """Per-request end-to-end latency from the scheduled time; NaN unless ok."""
    e2e = _num(requests, "end_s") - _num(requests, "scheduled_s")
    return np.where(_ok(requests), e2e, np.nan)


def itl_s(requests: pd.DataFrame) -> np.ndarray:
    """All inter-token gaps pooled; empty when the run did not record them."""
    if "itl_s" not in requests.columns:
        return np.zeros(0)
    parts = [np.asarray(v, dtype=np.float64) for v in requests["itl_s"]
             if v is not None and not (isinstance(v, float) and math.isnan(v))]
    parts = [p for p in parts if p.size]
    return np.concatenate(parts) if parts else np.zeros(0)


def send_lag_s(requests: pd.DataFrame) -> np.ndarray:
    """Per-request client lag (sent - scheduled); NaN where the request was never sent."""
    return _num(requests, "sent_s") - _num(requests, "scheduled_s")


#: Send-lag percentiles the live manifest's `client` block records (the summary keeps P50 / P99).
SEND_LAG_PERCENTILES: tuple[int, ...] = (50, 90, 99)


def send_lag_stats_s(requests: pd.DataFrame) -> dict[str, float]:
    """Send lag of the requests that were sent: `p50`, `p90`, `p99` and `max` in seconds, NaN when
    none was. The one computation behind summary.json, the live manifest's `client` block (and its
    overload flag), the distributed workers' reports and the loadgen bench."""
    lag = send_lag_s(requests)
    finite = lag[np.isfinite(lag)]
    out = {f"p{q}": percentile(finite, q) for q in SEND_LAG_PERCENTILES}
    out["max"] = float(finite.max()) if finite.size else math.nan
    return out


def percentile(values: np.ndarray, q: float) -> float:
    """Linear-interpolation percentile over the finite values; NaN when there are none."""
    finite = values[np.isfinite(values)]
    return float(np.percentile(finite, q)) if finite.size else math.nan


def mean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def span_s(requests: pd.DataFrame) -> float:
    """Run span: first scheduled time to the last end (or last scheduled time); NaN if empty."""
    scheduled, end = _num(requests, "scheduled_s"), _num(requests, "end_s")
    starts = scheduled[np.isfinite(scheduled)]
    if not starts.size:
        return math.nan
    ends = np.concatenate([starts, end[np.isfinite(end)]])
    return float(ends.max() - starts.min())


def slo_met(requests: pd.DataFrame, slo: Slo) -> np.ndarray:
    """Per-request: ok, TTFT within the limit, TPOT within the limit where it exists."""
    ttft, tpot = ttft_s(requests), tpot_s(requests)
    with np.errstate(invalid="ignore"):
        return (_ok(requests) & (ttft <= slo.ttft_s) & (np.isnan(tpot) | (tpot <= slo.tpot_s)))


def _distribution(name: str, values: np.ndarray, out: dict[str, float]) -> None:
    out[f"mean_{name}_s"] = mean(values)
    for q in PERCENTILES:
        out[f"p{q}_{name}_s"] = percentile(values, q)


def _rate(count: float, span: float) -> float:
    return count / span if span > 0 and math.isfinite(span) else math.nan


def metrics(requests: pd.DataFrame, slo: Slo = Slo(), span: float | None = None) -> dict[str, float]:
    """Every metric for one group of requests (one model, or all). `span` defaults to `span_s`."""
    n = len(requests)
    ok = _ok(requests)
    ttft = ttft_s(requests)
    span = span_s(requests) if span is None else span
    out: dict[str, float] = {"requests": float(n), "ok": float(ok.sum()), "failed": float(n - ok.sum())}
    _distribution("ttft", ttft, out)
    _distribution("ttft_paper", paper_ttft_s(requests), out)
    _distribution("tpot", tpot_s(requests), out)
    _distribution("itl", itl_s(requests), out)
    _distribution("e2e", e2e_s(requests), out)
    met = slo_met(requests, slo)
    with np.errstate(invalid="ignore"):
        fast = np.isfinite(ttft) & (ttft < FAST_TTFT_S)
    out["slo_attainment"] = float(met.mean()) if n else math.nan
    out["goodput_rps"] = _rate(float(met.sum()), span) if n else math.nan
    out["ttft_under_100ms"] = float(fast.mean()) if n else math.nan
    out["throughput_rps"] = _rate(float(ok.sum()), span) if n else math.nan
    out["output_tokens_per_s"] = _rate(float(token_counts(requests)[ok].sum()), span) if n else math.nan
    kinds = requests["start_kind"].fillna("").astype(str).to_numpy() if "start_kind" in requests else np.full(n, "")
    for kind in ("warm", "prewarmed", "cold", "queued"):
        out[f"start_{kind}"] = float((kinds == kind).sum())
    out["start_unknown"] = float(n - sum(out[f"start_{k}"] for k in ("warm", "prewarmed", "cold", "queued")))
    for part in ("queue", "load", "prefill"):  # TTFT split, where the system reports it
        out[f"mean_{part}_s"] = mean(_num(requests, f"{part}_s"))
    lag = send_lag_stats_s(requests)
    out["p50_send_lag_s"], out["p99_send_lag_s"], out["max_send_lag_s"] = lag["p50"], lag["p99"], lag["max"]
    return out


def by_start_kind(requests: pd.DataFrame) -> pd.DataFrame:
    """Cold-start attribution: per start kind, requests, share, TTFT mean / P99, mean queue / load / prefill."""
    kinds = requests["start_kind"].fillna("").astype(str).replace("", "unknown") if len(requests) else pd.Series(dtype=str)
    rows = []
    for kind in [k for k in (*START_ORDER, "unknown") if k in set(kinds)]:
        group = requests[(kinds == kind).to_numpy()]
        ttft = ttft_s(group)
        rows.append({"start_kind": kind, "requests": len(group), "share": len(group) / len(requests),
                     "mean_ttft_s": mean(ttft), "p99_ttft_s": percentile(ttft, 99),
                     **{f"mean_{p}_s": mean(_num(group, f"{p}_s")) for p in ("queue", "load", "prefill")}})
    return pd.DataFrame(rows, columns=["start_kind", "requests", "share", "mean_ttft_s", "p99_ttft_s",
                                       "mean_queue_s", "mean_load_s", "mean_prefill_s"])


START_ORDER: tuple[str, ...] = ("warm", "prewarmed", "cold", "queued")


def summarize(requests: pd.DataFrame, slo: Slo = Slo()) -> dict[str, dict[str, float]]:
    """Metrics overall (key "all") and per model; per-model rates use the whole run's span."""
    span = span_s(requests)
    out = {ALL_MODELS: metrics(requests, slo, span)}
    if len(requests):
        for model in sorted(pd.unique(requests["model"].astype(str))):
            out[model] = metrics(requests[requests["model"].astype(str) == model], slo, span)
    return out


#: Which way is better for each metric the report ranks; metrics not listed are not ranked.
HIGHER_IS_BETTER: frozenset[str] = frozenset({
    "slo_attainment", "goodput_rps", "ttft_under_100ms", "throughput_rps", "output_tokens_per_s", "ok",
})


def paired_ratio_ci(candidate: list[float], base: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Confidence interval (95% unless told) of candidate / base from per-seed pairs (same workload draw).

    A t interval on the mean log ratio, so it is symmetric in "x times" and pairs cancel the
    draw-to-draw variation both systems share. None with fewer than two pairs or where a
    value is unavailable, zero or negative (no log ratio).
    """
    pairs = [(c, b) for c, b in zip(candidate, base)
             if c is not None and b is not None and math.isfinite(c) and math.isfinite(b) and c > 0 and b > 0]
    if len(pairs) < 2 or len(pairs) != len(candidate):
        return None
    low, high = mean_ci([math.log(c / b) for c, b in pairs], confidence)  # type: ignore[misc]
    return math.exp(low), math.exp(high)


def mean_ci(values: list[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Student t confidence interval (95% unless told) of the mean of `values` (e.g. one metric over seeds).

    The one t interval of the report layer: `paired_ratio_ci` is this on log ratios. None with
    fewer than two values or where one is unavailable (NaN / inf): never an interval of what was
    not measured.
    """
    if len(values) < 2 or not all(v is not None and math.isfinite(v) for v in values):
        return None
    data = np.asarray(values, dtype=float)
    n = len(data)
    half = t_quantile(confidence, n - 1) * float(data.std(ddof=1)) / math.sqrt(n)
    centre = float(data.mean())
    return centre - half, centre + half


def lower_is_better(metric: str) -> bool:
    """Latencies, failures, cold starts and lag are better low; attainment and rates high."""
    return metric not in HIGHER_IS_BETTER


def jsonable(summary: Any) -> Any:
    """Replace NaN/inf with None so the summary is strict JSON ("unavailable", never 0)."""
    if isinstance(summary, dict):
        return {k: jsonable(v) for k, v in summary.items()}
    if isinstance(summary, float) and not math.isfinite(summary):
        return None
    return summary


def from_jsonable(summary: Any) -> Any:
    """Inverse of `jsonable`: None back to NaN."""
    if isinstance(summary, dict):
        return {k: from_jsonable(v) for k, v in summary.items()}
    return math.nan if summary is None else summary
