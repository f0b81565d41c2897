"""`warmbench history RESULTS...`: each metric per revision of the code, with the revisions where it stepped.

Terminal: one table per metric (revisions as rows, series as columns) and the change points. Files:
`history.html` (self-contained) and `history.json` in the first RESULTS folder unless told otherwise.
Exit 0: history written (change points are findings, not failures; the gate is `compare`);
2: bad input (a missing folder, an unreadable run, no run that records its code revision).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.argtypes import path_arg, positive_float, positive_int
from harness.contracts.errors import InputError
from harness.contracts.files import write_json
from harness.report.history import DEFAULT_METRICS, DEFAULT_MIN_EFFECT, History, collect
from harness.report.table import print_tables

EPILOG = f"""\
Reads the runs at or below each RESULTS folder: current runs (<exp>/<run-id>/) and those archived
when the code changed (<exp>/.history/<code-key>/<run-id>/); several folders (e.g. one per night)
are read as one history. A row is a revision (commit, plus the uncommitted-changes hash when dirty),
in the order of its runs' start times; a value is the mean over seeds with its 95% t interval.
Default metrics: {', '.join(DEFAULT_METRICS)}.
exit codes: 0 = history written; 2 = bad input (missing folder, unreadable run, no run that records
the code revision: results written before manifest schema_version 2 must be rerun)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("history", help="metrics per code revision with change points; writes history.html/.json",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", type=path_arg, metavar="RESULTS",
                   help="results folder(s): a results root, an experiment, or copies of them (one per night)")
    p.add_argument("--metric", action="append", metavar="M", help="metric to show (repeatable)")
    p.add_argument("--system", action="append", metavar="S", help="only this system (repeatable)")
    p.add_argument("--model", default="all", help="model whose metrics are shown (default: all = every model together)")
    p.add_argument("--last", type=positive_int, metavar="N", help="only the N most recent revisions")
    p.add_argument("--min-effect-pct", type=positive_float, default=DEFAULT_MIN_EFFECT * 100, metavar="PCT",
                   help=f"smallest relative step reported as a change point (default {DEFAULT_MIN_EFFECT * 100:g})")
    p.add_argument("--html", nargs="?", const="", type=str, metavar="PATH",
                   help="where the page goes (default, and with no PATH: RESULTS/history.html)")
    p.add_argument("--json", nargs="?", const="-", type=str, metavar="PATH",
                   help="where history.json goes (default: beside the page); with no PATH, print it on stdout "
                        "instead of the tables")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    # matplotlib is imported only once the inputs are read
    from harness.report.history_page import write_html

    history = collect(args.results, args.metric, args.system, args.model, args.min_effect_pct / 100, args.last)
    first = args.results[0] if args.results[0].is_dir() else args.results[0].parent
    html_path = Path(args.html) if args.html else first / "history.html"
    data = history.as_dict()
    write_html(history, html_path)
    if args.json == "-":
        print(json.dumps(data, indent=2))
        return 0
    json_path = Path(args.json) if args.json else html_path.with_suffix(".json")
    try:
        write_json(json_path, data)
    except OSError as exc:
        raise InputError(f"cannot write the history ({exc.strerror or exc})", file=str(json_path)) from None
    console = Console()
    print_tables(console, tables(history))
    for note in history.notes + [f"{s.name(history.several_experiments)} {s.metric}: {u}"
                                 for s in history.series for u in s.unconfirmed]:
        console.print(f"[dim]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
    found = history.change_points
    console.print(f"{len(found)} change point(s)" + (":" if found else ""), highlight=False)
    labels = {r.key: r for r in history.revisions}
    for c in found:
        style = "bold red" if c.worse else "green"
        name = " ".join(x for x in (c.experiment if history.several_experiments else "", c.system, c.point) if x)
        console.print(f"  [{style}]{escape(c.size)}[/] {c.metric} {escape(name)} at {escape(labels[c.revision].label)} "
                      f"({labels[c.revision].date}): {escape(c.evidence)}", highlight=False, soft_wrap=True)
    console.print(f"history: [bold]{escape(str(html_path))}[/] (and {escape(str(json_path))})", soft_wrap=True)
    return 0


def tables(history: History) -> list[Table]:
    """One rich table per metric: revisions as rows, series as columns; ▲/▼ marks a change point."""
    out = []
    many = history.several_experiments
    for metric in history.metrics:
        series = [s for s in history.series if s.metric == metric]
        table = Table(title=escape(f"{metric} (model {history.model}; mean over seeds ±95% CI; ▲▼ change point)"),
                      title_justify="left", box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False)
        table.add_column("revision", no_wrap=True)
        table.add_column("date", no_wrap=True)
        for s in series:
            table.add_column(escape(s.name(many)), justify="right", no_wrap=True)
        for r in history.revisions:
            cells = []
            for s in series:
                cell = s.cells.get(r.key)
                text = escape(cell.text(metric)) if cell else "[dim]n/a[/]"
                cp = next((c for c in s.change_points if c.revision == r.key), None)
                if cp:
                    text = f"[{'bold red' if cp.worse else 'bold green'}]{'▲' if cp.after > cp.before else '▼'} {text}[/]"
                cells.append(text)
            table.add_row(escape(r.label), r.date, *cells)
        out.append(table)
    return out
