"""`warmbench trace stats|make`: look at a trace or preset, and write multi-model workloads from recipes."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from harness.argtypes import path_arg
from harness.contracts.errors import InputError, WarmbenchError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("trace", help="trace statistics and multi-model workload recipes")
    sub = p.add_subparsers(dest="trace_command", metavar="ACTION", required=True)
    stats = sub.add_parser("stats", help="requests, rates, burstiness, lengths, models, drops")
    stats.add_argument("spec", metavar="FILE_OR_PRESET")
    stats.add_argument("--json", action="store_true", help="one JSON object on stdout")
    stats.add_argument("--plot", metavar="FILE.png", type=path_arg, help="also write a PNG of the rate over time")
    stats.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE",
                       help="reader / preset parameter (value parsed as JSON when it can be), repeatable")
    stats.set_defaults(handler=run_stats)
    make = sub.add_parser("make", help="write a workload from a recipe TOML")
    make.add_argument("recipe", metavar="RECIPE.toml", type=path_arg)
    make.add_argument("--out", required=True, type=path_arg, metavar="FILE.parquet")
    make.add_argument("--json", action="store_true", help="print the statistics as JSON")
    make.set_defaults(handler=run_make)


def parse_params(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values that parse as JSON (numbers, lists, true) become those types."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise WarmbenchError(f"--param expects KEY=VALUE, got {pair!r}")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def run_stats(args: argparse.Namespace) -> int:
    from harness.validate import PLOT_SUFFIXES, output_file
    from workloads import resolve
    from workloads.stats import plot_rate, trace_stats
    if args.plot:
        output_file(args.plot, "--plot", PLOT_SUFFIXES)
    workload = resolve(args.spec, **parse_params(args.param))
    stats = trace_stats(workload)
    if args.plot:
        stats["plot"] = str(plot_rate(workload, args.plot))
    if args.json:
        print(json.dumps(stats, indent=2, default=str))
    else:
        render_stats(stats, Console())
    return 0


def run_make(args: argparse.Namespace) -> int:
    from harness.validate import output_file
    from workloads.io import history_path, write_workload
    from workloads.recipe import input_files, workload_from_recipe
    from workloads.stats import trace_stats
    if args.out.suffix.lower() != ".parquet":
        raise WarmbenchError(f"--out must end in .parquet, got {args.out}")
    output_file(args.out, "--out")
    inputs = set(input_files(args.recipe))
    for target in (args.out, history_path(args.out)):
        if target.resolve() in inputs:  # the source would be read, then replaced by what was made of it
            raise InputError("is an input of the recipe; writing it would destroy the source, choose another --out",
                             file=str(target), field="--out")
    workload = workload_from_recipe(args.recipe)
    written = write_workload(workload, args.out)
    stats = trace_stats(workload)
    stats["written"] = [str(p) for p in written]
    if args.json:
        print(json.dumps(stats, indent=2, default=str))
    else:
        render_stats(stats, Console())
        Console().print("wrote " + ", ".join(stats["written"]))
    return 0


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() and abs(value) >= 10 else f"{value:,.3f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def render_stats(stats: dict[str, Any], console: Console) -> None:
    table = Table(title=f"trace {stats.get('source')}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for key in ("format", "requests", "span_s", "rate_rps", "dispersion_1s", "dispersion_60s", "cv_interarrival",
                "rows_read", "rows_kept", "unsorted_rows", "history_windows"):
        table.add_row(key, _fmt(stats.get(key)))
    rpm = stats.get("rate_per_minute")
    table.add_row("requests/min min/mean/max",
                  "n/a" if rpm is None else f"{rpm['min']:.0f} / {rpm['mean']:.1f} / {rpm['max']:.0f}")
    for key in ("input_tokens", "output_tokens"):
        q = stats[key]
        table.add_row(f"{key} p50/p90/p99", " / ".join(_fmt(q[p]) for p in ("p50", "p90", "p99")))
    for model, count in stats["models"].items():
        table.add_row(f"model {model}", _fmt(count))
    for reason, count in stats["dropped"].items():
        table.add_row(f"dropped: {reason}", _fmt(count))
    for window, err in (stats.get("forecast") or {}).items():
        table.add_row(f"forecast error, {window} s windows",
                      f"n/a ({err['unavailable']})" if "unavailable" in err else
                      f"peak {_pct(err['peak_error'])}, mean {_pct(err['mean_error'])} ({err['windows']} windows)")
    if stats.get("plot"):
        table.add_row("plot", stats["plot"])
    console.print(table)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
