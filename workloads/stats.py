"""Trace statistics (what `trace stats` prints) and a rate-over-time picture. Unmeasurable = None, never 0."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from workloads.forecast import PAPER_WINDOWS_S, forecast_error, rebin_is_exact
from workloads.workload import Workload


def _quantiles(values: np.ndarray) -> dict[str, float | None]:
    if len(values) == 0:
        return {"p50": None, "p90": None, "p99": None}
    q = np.percentile(values, [50, 90, 99])
    return {"p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2])}


def _counts(arrival_s: np.ndarray, bin_s: float) -> np.ndarray:
    n_bins = max(int(np.ceil((arrival_s.max() + 1e-9) / bin_s)), 1)
    return np.bincount(np.minimum((arrival_s // bin_s).astype(np.int64), n_bins - 1), minlength=n_bins)


def dispersion(arrival_s: np.ndarray, bin_s: float) -> float | None:
    """Index of dispersion (variance / mean of counts per bin); 1 for Poisson, > 1 bursty."""
    if len(arrival_s) < 2 or arrival_s.max() < 2 * bin_s:
        return None
    counts = _counts(arrival_s, bin_s)
    return float(counts.var() / counts.mean())


def trace_stats(workload: Workload) -> dict[str, Any]:
    """Size, rate, burstiness, length quantiles, per-model counts and provenance of a workload."""
    req = workload.requests
    arrival = req["arrival_s"].to_numpy(dtype=np.float64)
    n = len(arrival)
    span_s = float(arrival[-1] - arrival[0]) if n else 0.0
    per_minute = _counts(arrival, 60.0) if n else np.zeros(0)
    gaps = np.diff(arrival)
    meta = workload.meta
    return {
        "source": meta.get("source"), "format": meta.get("format"), "sha256": meta.get("sha256"),
        "requests": n, "span_s": span_s, "rate_rps": n / span_s if span_s > 0 else None,
        "rate_per_minute": {"min": float(per_minute.min()), "mean": float(per_minute.mean()),
                            "max": float(per_minute.max())} if n and span_s >= 60 else None,
        "dispersion_1s": dispersion(arrival, 1.0) if n else None,
        "dispersion_60s": dispersion(arrival, 60.0) if n else None,
        "cv_interarrival": float(gaps.std() / gaps.mean()) if len(gaps) >= 2 and gaps.mean() > 0 else None,
        "input_tokens": _quantiles(req["input_tokens"].to_numpy()),
        "output_tokens": _quantiles(req["output_tokens"].to_numpy()),
        "models": {str(k): int(v) for k, v in req["model"].value_counts(sort=False).sort_index().items()},
        "rows_read": meta.get("rows_read"), "rows_kept": meta.get("rows_kept"),
        "dropped": dict(meta.get("dropped", {})), "unsorted_rows": meta.get("unsorted_rows"),
        "history_windows": None if workload.history is None else len(workload.history),
        "forecast": forecastability(workload),
    }


def forecastability(workload: Workload) -> dict[str, Any]:
    """CSP forecast error over the replay at the history's window and the paper's three sizes.

    Keyed by window seconds (empty without history). A size that cannot be scored maps to
    {"unavailable": why}: unmeasured, never zero error.
    """
    if workload.history is None or len(workload.history) == 0:
        return {}
    history_window_s = float(workload.meta.get("window_s") or 300.0)
    out: dict[str, Any] = {}
    for w in sorted({history_window_s, *PAPER_WINDOWS_S}):
        err = forecast_error(workload.history, history_window_s, workload.requests, w)
        if err is None:
            why = (f"history is in {history_window_s:g} s windows" if not rebin_is_exact(history_window_s, w)
                   else "replay shorter than one window" if workload.duration_s < w
                   else "no forecast for the replay's models")
            err = {"unavailable": why}
        out[f"{w:g}"] = err
    return out


def plot_rate(workload: Workload, path: str | Path) -> Path:
    """PNG of requests per minute over time, one line per model (Agg backend: no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    req = workload.requests
    fig, ax = plt.subplots(figsize=(10, 4))
    end = float(req["arrival_s"].max()) if len(req) else 60.0
    bin_s = 60.0 if end >= 3600 else 10.0 if end >= 300 else 1.0  # enough points, not noise
    edges = np.arange(0.0, end + bin_s, bin_s)
    for model in sorted(req["model"].unique()):
        arrival = req.loc[req["model"] == model, "arrival_s"].to_numpy()
        counts, _ = np.histogram(arrival, bins=edges)
        ax.plot(edges[:-1] / 3600.0 if end > 7200 else edges[:-1], counts * (60.0 / bin_s), label=model, lw=0.8)
    ax.set_xlabel("time (h)" if end > 7200 else "time (s)")
    ax.set_ylabel("requests per minute")
    ax.set_title(str(workload.meta.get("source", "workload")))
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
