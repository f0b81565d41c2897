"""Key-metric tables: systems as rows, metrics as columns, best marked, ratios against a baseline."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.metrics import ALL_MODELS, lower_is_better, mean, paired_ratio_ci
from harness.report.load import RunInfo

#: (metric, column title) shown in every key table; the terminal leaves out TERMINAL_SKIP to stay narrow.
KEY_METRICS: tuple[tuple[str, str], ...] = (
    ("p50_ttft_s", "TTFT p50"),
    ("p99_ttft_s", "TTFT p99"),
    ("p99_ttft_paper_s", "p99 (999s)"),
    ("mean_tpot_s", "TPOT"),
    ("slo_attainment", "SLO"),
    ("goodput_rps", "goodput/s"),
    ("ttft_under_100ms", "<100ms"),
    ("start_cold", "cold"),
    ("failed", "failed"),
)


TERMINAL_SKIP: frozenset[str] = frozenset({"p99_ttft_paper_s"})


def fmt(metric: str, value: float | None) -> str:
    """Human units: seconds as ms/s, shares as %, counts as integers; NaN as "n/a"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if metric.endswith("_s"):
        if abs(value) < 1:
            return f"{value * 1000:.3g}ms"
        return f"{value:.3g}s" if abs(value) < 1000 else f"{value:.0f}s"
    if metric in ("slo_attainment", "ttft_under_100ms"):
        return f"{value * 100:.1f}%"
    if metric.startswith("start_") or metric in ("failed", "ok", "requests"):
        return f"{value:.0f}"
    return f"{value:.3g}"


@dataclass(frozen=True)
class Cell:
    value: float
    text: str
    best: bool
    ratio: float | None  # value / baseline's value; None for the baseline itself or when undefined
    #: 95% CI of the ratio from the seeds both systems ran (paired), as a factor: the ratio is within
    #: x/÷ (1 + spread); None with one seed or where a seed's value is unavailable or zero
    spread: float | None = None

    def ratio_text(self) -> str:
        """`×1.08`, or `×1.08±6%` with several seeds: ± is the 95% CI of the paired ratio."""
        if self.ratio is None:
            return ""
        text = f"×{self.ratio:.3g}" if math.isfinite(self.ratio) else "×inf"
        if self.spread is None:
            return text
        pct = self.spread * 100
        return text + ("±<1%" if pct < 1 else f"±{pct:.0f}%")


def ratio(candidate: float, base: float) -> float | None:
    """candidate / base; 1.0 when both are 0; inf when only base is 0; None when either is unavailable."""
    if candidate is None or base is None or math.isnan(candidate) or math.isnan(base):
        return None
    if base == 0:
        return 1.0 if candidate == 0 else math.inf
    return candidate / base


def key_cells(runs: list[RunInfo], point: str, baseline: str | None,
              model: str = ALL_MODELS) -> dict[str, dict[str, Cell]]:
    """system -> metric -> Cell for the runs at one sweep point (the mean over seeds)."""
    values = point_means(runs, point, model)
    by_seed = point_seeds(runs, point, model)
    frame = pd.DataFrame(values).T
    out: dict[str, dict[str, Cell]] = {s: {} for s in values}
    for metric, _ in KEY_METRICS:
        col = frame[metric].astype(float) if len(frame) else pd.Series(dtype=float)
        finite = col[col.notna()]
        best_value = (finite.min() if lower_is_better(metric) else finite.max()) if len(finite) > 1 else None
        ties_all = len(finite) > 1 and finite.nunique() == 1
        for system in values:
            v = values[system][metric]
            base = values.get(baseline or "", {}).get(metric) if baseline in values and system != baseline else None
            out[system][metric] = Cell(
                value=v, text=fmt(metric, v),
                best=best_value is not None and not ties_all and v == best_value,
                ratio=ratio(v, base) if base is not None else None,
                spread=_spread(by_seed, system, baseline, metric) if base is not None and baseline is not None else None)
    return out


def _spread(by_seed: dict[str, dict[Any, dict[str, float]]], system: str, baseline: str, metric: str) -> float | None:
    """Half-width factor of the paired 95% CI of system / baseline over their common seeds."""
    seeds = [k for k in by_seed.get(system, {}) if k in by_seed.get(baseline, {})]
    ci = paired_ratio_ci([by_seed[system][k].get(metric, math.nan) for k in seeds],
                         [by_seed[baseline][k].get(metric, math.nan) for k in seeds])
    return None if ci is None else math.sqrt(ci[1] / ci[0]) - 1.0


def point_seeds(runs: list[RunInfo], point: str, model: str = ALL_MODELS) -> dict[str, dict[Any, dict[str, float]]]:
    """system -> seed -> summary of `model` at `point` (the pairs a CI is taken over)."""
    out: dict[str, dict[Any, dict[str, float]]] = {}
    for run in runs:
        if run.label == point and model in run.summary:
            out.setdefault(run.system, {})[json.dumps(run.point.get("seed"), default=str)] = run.summary[model]
    return out


def point_means(runs: list[RunInfo], point: str, model: str = ALL_MODELS) -> dict[str, dict[str, float]]:
    """system -> key metric -> mean over the system's runs (seeds) at `point`; NaN where none measured."""
    per_system: dict[str, list[dict[str, float]]] = {}
    for run in runs:
        if run.label == point and model in run.summary:
            per_system.setdefault(run.system, []).append(run.summary[model])
    out: dict[str, dict[str, float]] = {}
    for system, summaries in per_system.items():
        out[system] = {}
        for metric, _ in KEY_METRICS:  # harness.metrics.mean: over the seeds that measured it
            out[system][metric] = mean(np.array([s.get(metric, math.nan) for s in summaries], dtype=float))
    return out


def seed_counts(runs: list[RunInfo], point: str, model: str = ALL_MODELS) -> dict[str, int]:
    """system -> runs (seeds) at `point` that measured `model`: the runs its means are over."""
    counts: dict[str, int] = {}
    for run in runs:
        if run.label == point and model in run.summary:
            counts[run.system] = counts.get(run.system, 0) + 1
    return counts


def seeds_text(runs: list[RunInfo], point: str, model: str = ALL_MODELS) -> str:
    """`mean of 3 seeds`, or per system where they differ (`mean over seeds: a 3, b 2`); "" for one seed each.

    Counts only the seeds present, so a seed missing for one system shows in the title.
    """
    counts = seed_counts(runs, point, model)
    if max(counts.values(), default=0) <= 1:
        return ""
    if len(set(counts.values())) == 1:
        return f"mean of {next(iter(counts.values()))} seeds"
    return "mean over seeds: " + ", ".join(f"{system} {n}" for system, n in counts.items())


def rich_tables(runs: list[RunInfo], baseline: str | None, model: str = ALL_MODELS) -> list[Table]:
    """One rich table per sweep point; best value per column in bold green with a star."""
    from harness.report.load import points

    tables = []
    for point in points(runs):
        cells = key_cells(runs, point, baseline, model)
        seeds = seeds_text(runs, point, model)
        title = (f"{point or 'run'} (model {model}" + (f"; {seeds}, ±95% CI of the paired ratio" if seeds else "")
                 + "; best *"
                 + (f"; ×ratio to {baseline})" if baseline else ")"))
        table = Table(title=escape(title), title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
        shown = [(m, t) for m, t in KEY_METRICS if m not in TERMINAL_SKIP]
        table.add_column("system", style="bold", no_wrap=True)
        for _, title_ in shown:
            table.add_column(title_, justify="right", min_width=7, no_wrap=True)
        for system, row in cells.items():
            rendered = []
            for metric, _ in shown:
                cell = row[metric]
                text = f"[bold green]{cell.text}*[/]" if cell.best else cell.text
                if cell.ratio is not None and not metric.startswith("start_") and metric != "failed":
                    text += f"\n[dim]{cell.ratio_text()}[/]"
                rendered.append(text)
            table.add_row(escape(system) + ("\n[dim](base)[/]" if system == baseline else ""), *rendered)
        tables.append(table)
    return tables


def markdown_table(runs: list[RunInfo], point: str, baseline: str | None, model: str = ALL_MODELS) -> str:
    """The same key table as Markdown (best in bold, ratio in parentheses)."""
    cells = key_cells(runs, point, baseline, model)
    head = "| system | " + " | ".join(t for _, t in KEY_METRICS) + " |"
    lines = [head, "|---|" + "---:|" * len(KEY_METRICS)]
    for system, row in cells.items():
        parts = []
        for metric, _ in KEY_METRICS:
            cell = row[metric]
            text = f"**{cell.text}**" if cell.best else cell.text
            if cell.ratio is not None and math.isfinite(cell.ratio) and not metric.startswith("start_") and metric != "failed":
                text += f" ({cell.ratio_text()})"
            parts.append(text)
        lines.append(f"| {system}{' (base)' if system == baseline else ''} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


#: Terminal width the key tables need; narrower consoles get it anyway (wrapped by the terminal, never cropped).
TABLE_WIDTH = 128


def print_tables(console: Console, tables: list[Table], gaps: Sequence[str] = ()) -> None:
    """The tables, then `gaps`: the grid's runs they leave out or hold only in part (missing, failed, incomplete)."""
    wide = console if console.width >= TABLE_WIDTH else Console(file=console.file, width=TABLE_WIDTH,
                                                                 force_terminal=console.is_terminal)
    for table in tables:
        wide.print(table)
    if gaps:
        console.print(f"[yellow]{len(gaps)} run(s) of the grid missing, failed or incomplete:[/]", highlight=False)
        for line in gaps:
            console.print(f"  {escape(line)}", highlight=False, soft_wrap=True)
