"""`warmbench report PATH`: terminal table, figures, report.html and report.md for a run or experiment."""

from __future__ import annotations

import argparse

from rich.console import Console

from harness.argtypes import path_arg
from harness.contracts.errors import WarmbenchError
from harness.report.document import build, default_baseline
from harness.report.load import check_system, load_runs
from harness.report.table import print_tables, rich_tables


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="write report.html / report.md for a run or experiment directory",
        epilog="Runs of the grid (experiment.json) that are missing, failed or incomplete are listed under the "
               "tables and in the report. Exit 0: report written; 2: bad input (missing directory, a manifest, "
               "summary or table that cannot be read, an unwritable directory).")
    p.add_argument("path", type=path_arg, help="a run directory or an experiment directory (results/<experiment>)")
    p.add_argument("--baseline", help="system the ratios are against (default: the experiment's, else the first)")
    p.add_argument("--memory-run", help="run id whose GPU memory is drawn (default: one at the highest load)")
    p.add_argument("--model", default="all", help="model for the terminal table (default: all)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    console = Console()
    runs = [r for r in load_runs(args.path) if r.manifest.get("status") != "failed"]
    baseline = check_system(runs, args.baseline) or default_baseline(args.path, runs)
    known = {model for r in runs for model in r.summary} | {"all"}
    if args.model not in known:  # was an empty table and exit 0
        raise WarmbenchError(f"--model {args.model!r}: no run has it; models: {', '.join(sorted(known))}")
    print_tables(console, rich_tables(runs, baseline, args.model))
    report = build(args.path, baseline=baseline, memory_run=args.memory_run)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print(f"report: [bold]{report.html_path}[/] (and {report.md_path.name}, figures/)", soft_wrap=True)
    return 0
