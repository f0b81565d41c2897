"""`bench fidelity`: the simulator against published third-party measurements.

Every row of a validation table (the shipped systems/sim/fidelity/published.csv, or `--table
FILE.csv` in the same format) is re-simulated from its setup: serving rows by
`serving_value` (the simulated requests of systems.sim.fidelity.serving, the row's metric read
with harness.metrics), start rows (weight-load, engine-start,
sleep-wake) by `systems.sim.fidelity_starts.simulate_start_row` when that module exists. Printed:
per row the published and simulated values, their ratio and whether it is in the group's band
(a row the simulator cannot express says why), then per group the rows, how many are in band,
the median and the worst ratio. Exit 0 when every simulated row is in band, 1 when one is not
(the gate to run after changing a coefficient), 2 on a bad table.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from harness import metrics as M
from systems.sim.fidelity.serving import Coefficients, simulate_serving_requests
from systems.sim.fidelity.table import BANDS, PUBLISHED_CSV, SERVING_GROUPS, UNITS, NotSimulated, Row, read_table

if TYPE_CHECKING:
    from rich.console import Console, JustifyMethod

#: The start-cost model's module (another part of the simulator); its absence is reported per row.
STARTS_MODULE = "systems.sim.fidelity_starts"
PENDING = "start model pending"

_METRIC = re.compile(r"^(e2e|ttft|tpot)(?:_(mean|p\d{1,2}(?:\.\d+)?))?$")
_SERIES = {"e2e": M.e2e_s, "ttft": M.ttft_s, "tpot": M.tpot_s}


def metric_of(row: Row, requests: pd.DataFrame) -> float:
    """The row's metric (e2e / ttft / tpot, mean or a percentile) in seconds over the run's requests."""
    m = _METRIC.match(row.metric)
    if m is None:
        raise NotSimulated(f"unknown metric {row.metric!r} (known: e2e, ttft, tpot with _mean or _pNN)")
    kind, stat = m.group(1), m.group(2) or "mean"
    values = _SERIES[kind](requests)
    value = M.mean(values) if stat == "mean" else M.percentile(values, float(stat[1:]))
    if not np.isfinite(value):
        ok = int((requests["status"] == "ok").sum()) if len(requests) else 0
        why = (f"{len(requests) - ok} of {len(requests)} requests did not finish in the simulated run "
               "(prompt + output beyond the KV cache?)" if ok < len(requests) else "output_tokens < 2")
        raise NotSimulated(f"no simulated {kind}: {why}")
    return float(value)


def serving_value(row: Row, coefficients: Coefficients = (), cuda_graphs: bool | None = None) -> float:
    """The simulator's value of a serving row's metric, in the row's unit; NotSimulated when it
    cannot say. What the fits take as `value` (systems.sim.calibrate, systems.sim.calibrate_table)."""
    return metric_of(row, simulate_serving_requests(row, coefficients, cuda_graphs)) / UNITS[row.unit]


def _start_simulator() -> Callable[[Row], Any] | None:
    try:
        module = importlib.import_module(STARTS_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name == STARTS_MODULE:
            return None
        raise
    return getattr(module, "simulate_start_row", None)


def _not_simulated(exc: BaseException) -> str | None:
    """The reason of a NotSimulated (ours or one a start model defines), else None."""
    if isinstance(exc, NotSimulated) or type(exc).__name__ == "NotSimulated":
        return str(getattr(exc, "reason", exc))
    return None


def simulate_row(row: Row, starts: Callable[[Row], Any] | None) -> tuple[float | None, str | None]:
    """(simulated value in the row's unit, None) or (None, why it is not simulated)."""
    try:
        if row.group in SERVING_GROUPS:
            value: Any = serving_value(row)
        elif starts is None:
            return None, PENDING
        else:
            value = starts(row)
    except Exception as exc:  # noqa: BLE001  (only NotSimulated is an answer; anything else propagates)
        reason = _not_simulated(exc)
        if reason is None:
            raise
        return None, reason
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None, str(getattr(value, "reason", value))
    if not math.isfinite(value) or value <= 0:
        return None, f"the simulator gave {value!r}"
    return float(value), None


def run(table: Path | str | None = None) -> dict[str, Any]:
    """Every row re-simulated, with per-group summaries; `table` defaults to the shipped one."""
    path = Path(table) if table is not None else PUBLISHED_CSV
    rows = read_table(path)
    starts = _start_simulator()
    out_rows: list[dict[str, Any]] = []
    for row in rows:
        value, reason = simulate_row(row, starts)
        ratio = value / row.value if value is not None else None
        out_rows.append({
            "id": row.id, "group": row.group, "source": row.source, "gpu": row.gpu, "model": row.model,
            "tp": row.tp, "engine": row.engine, "engine_mode": row.engine_mode, "metric": row.metric,
            "unit": row.unit, "published": row.value, "simulated": value,
            "ratio": None if ratio is None else round(ratio, 4), "band": row.band,
            "in_band": None if ratio is None else bool(abs(ratio - 1.0) <= row.band + 1e-12),
            "not_simulated": reason,
        })
    groups: dict[str, dict[str, Any]] = {}
    for group in [g for g in BANDS if any(r["group"] == g for r in out_rows)]:
        mine = [r for r in out_rows if r["group"] == group]
        ratios = [r["ratio"] for r in mine if r["ratio"] is not None]
        worst = max(ratios, key=lambda x: abs(math.log(x))) if ratios else None
        groups[group] = {"rows": len(mine), "simulated": len(ratios),
                         "in_band": sum(1 for r in mine if r["in_band"]), "band": BANDS[group],
                         "median_ratio": round(float(np.median(ratios)), 3) if ratios else None,
                         "worst_ratio": None if worst is None else round(worst, 3)}
    out_of_band = [r["id"] for r in out_rows if r["in_band"] is False]
    return {"table": str(path), "rows": out_rows, "groups": groups, "out_of_band": out_of_band,
            "all_in_band": not out_of_band}


def exit_code(result: dict[str, Any]) -> int:
    """0 when every simulated row is in band, else 1."""
    return 0 if result["all_in_band"] else 1


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render(result: dict[str, Any], console: Console) -> None:
    """One table per group (row, metric, published, simulated, ratio, in band), then the summary."""
    from rich import box
    from rich.table import Table

    console.print(f"bench fidelity: {result['table']}")
    for group, s in result["groups"].items():
        table = Table(title=f"{group} (band ±{s['band']:.0%})", box=box.SIMPLE, padding=(0, 1), show_edge=False,
                      title_justify="left")
        columns: tuple[tuple[str, JustifyMethod], ...] = (
            ("row", "left"), ("metric", "left"), ("published", "right"), ("simulated", "right"), ("ratio", "right"),
            ("in band", "left"))
        for col, justify in columns:
            table.add_column(col, justify=justify, no_wrap=col != "simulated")
        for r in (r for r in result["rows"] if r["group"] == group):
            unit = r["unit"]
            if r["not_simulated"] is not None:
                simulated, verdict = f"not simulated: {r['not_simulated']}", "-"
            else:
                simulated = f"{_fmt(r['simulated'])} {unit}"
                verdict = "yes" if r["in_band"] else "[bold red]NO[/]"
            table.add_row(r["id"], r["metric"], f"{_fmt(r['published'])} {unit}", simulated, _ratio(r["ratio"]), verdict)
        console.print(table)
    summary = Table(title="per group (ratio = simulated / published)", box=box.SIMPLE, padding=(0, 1),
                    show_edge=False, title_justify="left")
    for col in ("group", "rows", "simulated", "in band", "band", "median ratio", "worst ratio"):
        summary.add_column(col, justify="left" if col == "group" else "right", no_wrap=True)
    for g, s in result["groups"].items():
        summary.add_row(g, str(s["rows"]), str(s["simulated"]), str(s["in_band"]), f"±{s['band']:.0%}",
                        _ratio(s["median_ratio"]), _ratio(s["worst_ratio"]))
    console.print(summary)
    if result["out_of_band"]:
        console.print(f"[bold red]out of band[/]: {', '.join(result['out_of_band'])}")
    else:
        console.print("every simulated row is in band")


#: One marker per group on the parity plot.
MARKERS = {"serving": "o", "other-engine": "s", "weight-load": "^", "engine-start": "D", "sleep-wake": "v"}


def write_plot(result: dict[str, Any], path: Path) -> None:
    """Parity plot: simulated against published (seconds), log-log, one marker per group, y = x and
    the bands shaded (±10% darker, ±35% lighter)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from systems.sim.fidelity.table import UNITS

    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    points = [(r["published"] * UNITS[r["unit"]], r["simulated"] * UNITS[r["unit"]], r) for r in result["rows"]
              if r["simulated"] is not None]
    values = [v for p, s, _ in points for v in (p, s)] or [1e-3, 1.0]
    lo, hi = min(values) / 2.0, max(values) * 2.0
    xs = np.geomspace(lo, hi, 50)
    ax.fill_between(xs, xs * 0.65, xs * 1.35, color="tab:gray", alpha=0.12, lw=0, label="±35% (other engines)")
    ax.fill_between(xs, xs * 0.8, xs * 1.2, color="tab:gray", alpha=0.15, lw=0, label="±20% (starts)")
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="tab:green", alpha=0.2, lw=0, label="±10% (vLLM serving)")
    ax.plot(xs, xs, color="black", lw=0.8, label="y = x")
    for group, marker in MARKERS.items():
        mine = [(p, s, r) for p, s, r in points if r["group"] == group]
        if mine:
            ax.scatter([p for p, _, _ in mine], [s for _, s, _ in mine], marker=marker, s=36,
                       edgecolors=["red" if r["in_band"] is False else "none" for _, _, r in mine],
                       linewidths=1.2, label=f"{group} ({len(mine)})", zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("published (s)")
    ax.set_ylabel("simulated (s)")
    missing = sum(1 for r in result["rows"] if r["simulated"] is None)
    ax.set_title(f"simulator vs published measurements ({len(points)} rows; {missing} not simulated)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, which="both", alpha=0.2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_cli(args: argparse.Namespace) -> int:
    """`bench fidelity [--json] [--plot FILE.png] [--table FILE.csv]`; returns the exit code."""
    from rich.console import Console

    from harness.validate import PLOT_SUFFIXES, output_file

    if args.plot is not None:
        output_file(args.plot, "--plot", PLOT_SUFFIXES)
    result = run(args.table)
    if args.plot is not None:
        write_plot(result, Path(args.plot))
        result["plot"] = str(args.plot)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        console = Console(width=None if sys.stdout.isatty() else 120)
        render(result, console)
        if args.plot is not None:
            console.print(f"wrote {args.plot}")
    return exit_code(result)
