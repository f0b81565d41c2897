"""Seaborn figures for a set of runs, written as PNG. Each function returns a matplotlib Figure."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.artist import Artist  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator  # noqa: E402

from harness.metrics import ALL_MODELS, ttft_s  # noqa: E402
from harness.report.load import RunInfo, points, systems  # noqa: E402

#: Event kinds marked on the TTFT timeline, with their colour and legend label.
EVENT_MARKS: dict[str, tuple[str, str]] = {
    "instance_start": ("tab:red", "cold start"),
    "prewarm": ("tab:green", "prewarm"),
    "evict": ("tab:purple", "evict"),
}
MEMORY_CATEGORIES: tuple[str, ...] = ("weights", "kv", "prewarmed", "free")
MEMORY_COLORS: dict[str, str] = {"weights": "#4c72b0", "kv": "#dd8452", "prewarmed": "#55a868", "free": "#e5e5e5"}
#: GPUs drawn in the memory figure: hundreds of panels are unreadable (and slow to lay out), so a
#: big cluster shows the GPUs whose memory changed most often.
MAX_MEMORY_GPUS = 16
RATE_KEYS: tuple[str, ...] = ("total_rps", "rps", "rate", "rate_rps")


def palette(names: list[str]) -> dict[str, tuple[float, float, float]]:
    """One colour per system, the same in every figure."""
    return dict(zip(names, sns.color_palette("tab10", max(len(names), 1))))


def ttft_cdf(runs: list[RunInfo], requests: dict[str, pd.DataFrame]) -> Figure:
    """TTFT CDF per system (log x), one panel per sweep point; the curve tops out below 1 when requests failed."""
    pts = points(runs)
    colors = palette(systems(runs))
    fig, axes = plt.subplots(1, len(pts), figsize=(4.2 * len(pts) + 1, 3.6), squeeze=False, sharey=True)
    for ax, point in zip(axes[0], pts):
        for system in systems(runs):  # seeds pooled: one curve per system
            parts = [requests[r.run_id] for r in runs if r.label == point and r.system == system]
            if not parts:
                continue
            req = pd.concat(parts, ignore_index=True)
            ttft = np.sort(ttft_s(req)[np.isfinite(ttft_s(req))])
            if not len(req) or not ttft.size:
                continue
            share = np.arange(1, ttft.size + 1) / len(req)
            ax.step(np.maximum(ttft, 1e-4), share, where="post", color=colors[system], label=system)
        ax.set_xscale("log")
        ax.set_xlabel("TTFT (s, from scheduled time)")
        ax.set_title(point or "run", fontsize=9)
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("share of all requests")
    _legend(fig, axes[0][-1])
    fig.subplots_adjust(wspace=0.08)
    return fig


def rate_key(runs: list[RunInfo]) -> str | None:
    """The swept numeric key to put on the x axis (a rate if one is swept)."""
    swept = [k for k in dict.fromkeys(k for r in runs for k in r.point)
             if k != "seed" and len({str(r.point.get(k)) for r in runs}) > 1
             and all(isinstance(r.point.get(k), (int, float)) for r in runs)]
    for key in RATE_KEYS:
        if key in swept:
            return key
    return swept[0] if swept else None


def rate_curves(frame: pd.DataFrame, x: str, runs: list[RunInfo]) -> Figure:
    """P99 TTFT (log y) and SLO attainment against the swept rate, per system (mean over seeds)."""
    data = frame[frame["model"] == ALL_MODELS].copy()
    others = [k for k in dict.fromkeys(k for r in runs for k in r.point) if k not in (x, "seed")]
    data["variant"] = data[others].astype(str).agg(", ".join, axis=1) if others else ""
    style = "variant" if others and data["variant"].nunique() > 1 else None
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    kw = dict(data=data, x=x, hue="system", style=style, dashes=False, marker="o",
              palette=palette(systems(runs)), errorbar=None)
    sns.lineplot(y="p99_ttft_s", ax=left, **kw)
    left.set_yscale("log")
    _plain_log_ticks(left)
    left.set_ylabel("P99 TTFT (s)")
    sns.lineplot(y="slo_attainment", ax=right, **kw)
    right.set_ylabel("SLO attainment")
    right.set_ylim(-0.02, 1.02)
    left.get_legend().remove()
    _legend(fig, right)
    fig.subplots_adjust(wspace=0.25)
    return fig


def ttft_timeline(runs: list[RunInfo], results: dict[str, tuple[pd.DataFrame, pd.DataFrame]]) -> Figure:
    """TTFT of each request over time (one row per run), cold-start / prewarm / evict events marked."""
    fig, axes = plt.subplots(len(runs), 1, figsize=(10, 2.3 * len(runs) + 0.6), squeeze=False, sharex=True)
    names = sorted({m for r in runs for m in results[r.run_id][0]["model"].astype(str).unique()})
    colors = dict(zip(names, sns.color_palette("deep", max(len(names), 1))))
    legend: dict[str, Artist] = {}
    for ax, run in zip(axes[:, 0], runs):
        req, events = results[run.run_id]
        ttft = ttft_s(req)
        done = np.isfinite(ttft)
        models = req["model"].astype(str).to_numpy()
        scheduled = req["scheduled_s"].to_numpy(dtype=float)
        for model in names:
            sel = done & (models == model)
            if sel.any():
                legend[model] = ax.scatter(scheduled[sel], np.maximum(ttft[sel], 1e-4), s=4, color=colors[model],
                                           alpha=0.6, linewidths=0)
        failed = ~done
        if failed.any():
            top = np.nanmax(ttft) * 2 if done.any() else 1.0
            legend["no first token"] = ax.scatter(scheduled[failed], np.full(failed.sum(), top), marker="x", s=10,
                                                  color="black")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_locator(NullLocator())  # minor log ticks cost most of the drawing time
        ax.set_ylabel("TTFT (s)")
        ax.set_title(f"{run.system}  {run.label}", fontsize=9, loc="left")
        if len(events):
            kinds = events["kind"].astype(str)
            for kind, (color, label) in EVENT_MARKS.items():
                times = events.loc[kinds == kind, "time_s"].astype(float).to_numpy()
                if times.size:  # one collection per kind: hundreds of axvline calls are slow to draw
                    legend[label] = ax.vlines(times, 0, 1, transform=ax.get_xaxis_transform(), colors=color,
                                              alpha=0.35, lw=0.8)
    axes[-1, 0].set_xlabel("scheduled time (s)")
    fig.legend(list(legend.values()), list(legend), loc="upper right", fontsize=7, markerscale=2)
    fig.subplots_adjust(hspace=0.35, left=0.08, right=0.83, top=1 - 0.35 / fig.get_figheight(),
                        bottom=0.6 / fig.get_figheight())
    return fig


def memory_by_gpu(memory: pd.DataFrame) -> dict[tuple[int, int], pd.DataFrame]:
    """(node, gpu) -> bytes per category over time (index time_s).

    The rows of one GPU at one instant are a full snapshot (the simulator and the NVML sampler
    both write them so): what a snapshot leaves out is 0. Unknown sizes (negative) count as 0.
    """
    out: dict[tuple[int, int], pd.DataFrame] = {}
    if memory.empty:
        return out
    mem = memory.copy()
    mem["time_s"] = mem["time_s"].astype(float)
    mem["bytes"] = mem["bytes"].astype(float).clip(lower=0.0)
    present = list(dict.fromkeys(mem["category"].astype(str)))
    order = [c for c in MEMORY_CATEGORIES if c != "free"] + [c for c in present if c not in MEMORY_CATEGORIES] + ["free"]
    for (node, gpu), group in mem.groupby(["node", "gpu"], sort=True):
        wide = group.pivot_table(index="time_s", columns="category", values="bytes", aggfunc="sum", fill_value=0.0)
        out[(int(node), int(gpu))] = wide.reindex(columns=order, fill_value=0.0)
    return out


def memory_stack(memory: pd.DataFrame, title: str, end_s: float | None = None) -> Figure:
    """GPU memory per GPU over time as stacked areas (weights, KV, prewarmed, [process,] free), GiB.

    At most MAX_MEMORY_GPUS panels: the busiest GPUs (most snapshots), in cluster order."""
    per_gpu = memory_by_gpu(memory)
    if len(per_gpu) > MAX_MEMORY_GPUS:
        busiest = sorted(per_gpu, key=lambda k: (-len(per_gpu[k]), k))[:MAX_MEMORY_GPUS]
        title = f"{title} ({MAX_MEMORY_GPUS} of {len(per_gpu)} GPUs: those whose memory changed most often)"
        per_gpu = {k: per_gpu[k] for k in sorted(busiest)}
    n = len(per_gpu)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols + 1.2, 2.2 * rows + 0.7), squeeze=False,
                             sharex=True, sharey=True)
    for ax, ((node, gpu), cats) in zip(axes.flat, per_gpu.items()):
        times = cats.index.to_numpy(dtype=float)
        stop = max(end_s or 0.0, times[-1])
        if stop > times[-1]:
            times = np.append(times, stop)
            cats = pd.concat([cats, cats.iloc[[-1]]])
        ax.stackplot(times, [cats[c].to_numpy() / 2**30 for c in cats.columns],
                     colors=[MEMORY_COLORS.get(c, "#8172b3") for c in cats.columns], labels=list(cats.columns),
                     step="post")
        ax.set_title(f"node {node} GPU {gpu}", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("GiB")
    for ax in axes[-1, :]:
        ax.set_xlabel("time (s)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=8)
    fig.suptitle(title, fontsize=10, x=0.02, ha="left")
    fig.subplots_adjust(hspace=0.45, wspace=0.08, left=0.07, right=0.9, top=1 - 0.55 / fig.get_figheight(),
                        bottom=0.5 / fig.get_figheight())
    return fig


def model_p99_bars(frame: pd.DataFrame, point: str, runs: list[RunInfo]) -> Figure:
    """Per-model P99 TTFT bars per system at one sweep point (log y)."""
    data = frame[(frame["point"] == point) & (frame["model"] != ALL_MODELS)].dropna(subset=["p99_ttft_s"])
    data = data.groupby(["system", "model"], sort=False, as_index=False)["p99_ttft_s"].mean()  # over seeds
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * data["model"].nunique() + 3), 3.8))
    if len(data):
        sns.barplot(data=data, x="model", y="p99_ttft_s", hue="system", palette=palette(systems(runs)), ax=ax)
        ax.set_yscale("log")
        ax.set_ylim(float(data["p99_ttft_s"].min()) / 3, float(data["p99_ttft_s"].max()) * 1.5)
        _plain_log_ticks(ax)
        _legend(fig, ax)
    ax.set_ylabel("P99 TTFT (s)")
    ax.set_title(point or "run", fontsize=9)
    return fig


def _plain_log_ticks(ax: Axes) -> None:
    """Log axis labelled 0.1, 1, 10 rather than 10^-1 (and minor ticks labelled when the range is narrow)."""
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    low, high = ax.get_ylim()
    ax.yaxis.set_minor_formatter(plain if high / max(low, 1e-12) < 20 else NullFormatter())


def _legend(fig: Figure, ax: Axes) -> None:
    handles, labels = ax.get_legend_handles_labels()
    old = ax.get_legend()
    if old:
        old.remove()
    if handles:
        ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def save(fig: Figure, path: Path, tight: bool = True) -> Path:
    """PNG at 110 dpi. `tight=False` for figures that set their own margins: a tight bbox draws twice."""
    fig.savefig(path, dpi=110, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return path
