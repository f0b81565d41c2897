"""`warmbench compare BASE CANDIDATE`: ratios per system, model and metric; exit 1 when a bound is crossed."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from harness.metrics import ALL_MODELS
from harness.report.compare import compare, failures, known_metrics, parse_bound
from harness.report.load import load_runs, point_label
from harness.report.table import KEY_METRICS, fmt, print_tables
from harness.store import strict


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compare", help="compare two runs or experiments; exit 1 when a --fail-if bound is crossed")
    p.add_argument("base", type=Path, help="run or experiment directory (the accepted one)")
    p.add_argument("candidate", type=Path, help="run or experiment directory to judge")
    p.add_argument("--fail-if", action="append", default=[], metavar="METRIC:+PCT",
                   help="fail when METRIC rises (+) or falls (-) by more than PCT percent, e.g. p99_ttft_s:+10%%")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout: {metrics: [...], failed: [...]}")
    p.add_argument("--model", action="append", metavar="MODEL",
                   help="models in the table (repeatable; default: all = every model together; '*' = each model)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    base, candidate = load_runs(args.base), load_runs(args.candidate)
    bounds = [parse_bound(text, known_metrics(base)) for text in args.fail_if]
    rows = compare(base, candidate)
    failed = failures(rows, bounds)
    if args.json:
        print(json.dumps(strict({"base": str(args.base), "candidate": str(args.candidate),
                                 "bounds": [str(b) for b in bounds], "metrics": rows, "failed": failed}), indent=2))
    else:
        _render(rows, failed, bounds, Console(), args.model or [ALL_MODELS])
    return 1 if failed else 0


def _render(rows, failed, bounds, console: Console, models: list[str]) -> None:
    shown = [m for m, _ in KEY_METRICS] + [b.metric for b in bounds if b.metric not in dict(KEY_METRICS)]
    bad = {(f["system"], json.dumps(f["point"], default=str), f["model"], f["metric"]) for f in failed}
    table = Table(title="compare (ratio = candidate / base; yellow = changed, red = bound crossed)",
                  title_justify="left")
    for col in ("system", "point", "model", "metric", "base", "candidate", "ratio"):
        table.add_column(col, justify="left" if col in ("system", "point", "model", "metric") else "right",
                         no_wrap=True)
    rank = {m: i for i, m in enumerate(shown)}
    picked = [r for r in rows if ("*" in models or r["model"] in models) and r["metric"] in rank]
    order = {name: i for i, name in enumerate(dict.fromkeys(r["system"] for r in rows))}
    picked.sort(key=lambda r: (order[r["system"]], json.dumps(r["point"], default=str), r["model"] != ALL_MODELS,
                               r["model"], rank[r["metric"]]))
    for row in picked:
        r = row["ratio"]
        text = "n/a" if r is None else ("inf" if math.isinf(r) else f"{r:.3f}")
        key = (row["system"], json.dumps(row["point"], default=str), row["model"], row["metric"])
        style = "bold red" if key in bad else ("" if r is None or abs(r - 1) < 1e-9 else "yellow")
        table.add_row(row["system"], point_label(row["point"]), row["model"], row["metric"],
                      fmt(row["metric"], row["base"]), fmt(row["metric"], row["candidate"]),
                      f"[{style}]{text}[/]" if style else text)
    print_tables(console, [table])
    for f in failed:
        console.print(f"[bold red]FAIL[/] {f['bound']}: {f['system']} {point_label(f['point'])} model {f['model']}: "
                      f"{fmt(f['metric'], f['base'])} -> {fmt(f['metric'], f['candidate'])}", highlight=False)
    if not failed:
        console.print(f"[green]ok[/]: {len(bounds)} bound(s) hold" if bounds else "no bounds given")
