"""`warmbench compare BASE CANDIDATE`: ratios per system, model and metric, and a regression gate.

Exit 0: every bound holds and the candidate is whole. Exit 1: a bound is crossed, or the candidate
cannot be trusted (the rules are in harness/report/compare.py). Exit 2: bad input.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.argtypes import path_arg
from harness.errors import WarmbenchError
from harness.metrics import ALL_MODELS
from harness.report.compare import compare, failures, known_metrics, notes, parse_bound, problems
from harness.report.load import load_runs, missing_runs, point_label
from harness.report.table import KEY_METRICS, fmt, print_tables
from harness.store import strict

EPILOG = """\
exit codes: 0 = every bound holds and the candidate is whole; 1 = a bound is crossed, or the gate
cannot pass: a base run has no candidate run (same system and sweep point; a single run on each
side pairs as is), a run of the candidate's grid is missing, a candidate run failed, is incomplete
or mostly failed (more than half of its requests not ok, or none), a base run is failed, incomplete
or mostly failed, a bound's metric has a value on the base but none on the candidate, or the two
sides replayed different workloads (workload_sha256; see --allow-workload-change); 2 = bad input
(missing or unreadable directory or file, a manifest / summary that is not valid JSON or has wrong
types, a table that is not Parquet, a malformed bound, an unknown metric, nothing in common).
Candidate runs that the base lacks are listed, not failed."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compare", help="compare two runs or experiments; exit 1 when a --fail-if bound is crossed "
                              "or the candidate is missing, failed or incomplete runs", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base", type=path_arg, help="run or experiment directory (the accepted one)")
    p.add_argument("candidate", type=path_arg, help="run or experiment directory to judge")
    p.add_argument("--fail-if", action="append", default=[], metavar="METRIC:+PCT",
                   help="fail when METRIC rises (+) or falls (-) by more than PCT percent, e.g. p99_ttft_s:+10%%; "
                        "PCT a plain number, a rise up to 10000, a fall under 100")
    p.add_argument("--allow-workload-change", action="store_true",
                   help="compare even when the two sides replayed different workloads (a note, not a failure)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object on stdout: {metrics: [...], failed: [...], problems: [...], notes: [...], "
                        "passed: bool}")
    p.add_argument("--model", action="append", metavar="MODEL",
                   help="models in the table (repeatable; default: all = every model together; '*' = each model)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    base, candidate = load_runs(args.base), load_runs(args.candidate)
    bounds = [parse_bound(text, known_metrics(base + candidate)) for text in args.fail_if]
    rows = compare(base, candidate)
    known = {r["model"] for r in rows}
    for model in args.model or []:
        if model != "*" and model not in known:
            raise WarmbenchError(f"--model {model!r}: no such model in both sides' runs; models: {', '.join(sorted(known))}")
    failed = failures(rows, bounds)
    found = problems(base, candidate, bounds, candidate_grid_missing=missing_runs(args.candidate, candidate),
                     allow_workload_change=args.allow_workload_change)
    said = notes(base, candidate) + [f"base run {i} is in its experiment's grid but not on disk; not compared"
                                     for i in missing_runs(args.base, base)]
    if args.json:
        print(json.dumps(strict({"base": str(args.base), "candidate": str(args.candidate),
                                 "bounds": [str(b) for b in bounds], "metrics": rows, "failed": failed,
                                 "problems": [p.as_dict() for p in found], "notes": said,
                                 "passed": not failed and not found}), indent=2))
    else:
        console = Console()
        _render(rows, failed, bounds, console, args.model or [ALL_MODELS])
        for note in said:
            console.print(f"[dim]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
        for problem in found:
            console.print(f"[bold red]FAIL[/] {problem.kind}: {escape(problem.message)}", highlight=False, soft_wrap=True)
        if found or failed:
            console.print(f"[bold red]gate failed[/]: {len(found)} problem(s), {len(failed)} bound crossing(s)",
                          highlight=False)
        else:
            console.print(f"[green]ok[/]: {len(bounds)} bound(s) hold" if bounds else "no bounds given")
    return 1 if failed or found else 0


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
        table.add_row(escape(row["system"]), escape(point_label(row["point"])), escape(row["model"]), row["metric"],
                      fmt(row["metric"], row["base"]), fmt(row["metric"], row["candidate"]),
                      f"[{style}]{text}[/]" if style else text)
    print_tables(console, [table])
    for f in failed:
        console.print(f"[bold red]FAIL[/] {f['bound']}: " + escape(f"{f['system']} {point_label(f['point'])} model {f['model']}: "
                      f"{fmt(f['metric'], f['base'])} -> {fmt(f['metric'], f['candidate'])}"), highlight=False,
                      soft_wrap=True)
