"""`run EXPERIMENT` for an experiment with a `[capacity]` table: the search, its progress and table.

Not a subcommand of its own: `run` hands over here (harness.commands.run). Exit codes as for any
experiment: 0 every search ended, 1 a probe run failed (that search stops), 130 Ctrl-C (the probes
done are kept and a rerun resumes), 2 bad input before anything ran.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness import capacity, experiment
from harness.contracts.errors import WarmbenchError
from harness.store import CAPACITY_FILE


def handle(args: argparse.Namespace, config: experiment.ExperimentConfig, source: Path, console: Console) -> int:
    cap = config.capacity
    assert cap is not None
    capacity.check_bounds(config, source)  # every run at low and at high is valid, before anything runs
    searches = capacity.searches_for(config)
    labels = list(dict.fromkeys(s.system for s in searches))
    if args.baseline and args.baseline not in labels:
        raise WarmbenchError(f"--baseline {args.baseline!r} is not one of the systems {labels}")
    most = capacity.max_probes(cap.low, cap.high, cap.tolerance)
    console.print(f"[bold]{config.name}[/]: capacity search over {cap.param} in [{cap.low:g}, {cap.high:g}], "
                  f"{len(searches)} searches x {len(config.seeds)} seed(s), at most {most} probes each, "
                  f"pass = {cap.attainment:.1%} of requests within the SLO ({cap.rule.replace('_', ' ')}) "
                  f"-> {args.results / config.name}", soft_wrap=True, highlight=False)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=20),
                  TextColumn("{task.fields[state]}"), TimeElapsedColumn(), console=console) as progress:
        tasks = {_name(s): progress.add_task(_name(s), total=most, state="queued") for s in searches}

        def on_round(done: list[capacity.Search]) -> None:
            for s in done:
                last = s.probes[-1] if s.probes else None
                state = _state(s, last)
                progress.update(tasks[_name(s)], completed=most if s.next_rate() is None else len(s.probes),
                                state=state)

        def on_start(spec: experiment.RunSpec) -> None:
            for s in searches:
                if s.system == spec.point["system"] and all(spec.point.get(k) == v for k, v in s.point.items()):
                    progress.update(tasks[_name(s)], state=f"probing {_rate(spec)}")

        try:
            exp_dir, searches, doc = capacity.search(config, args.results, jobs=args.jobs, source=source,
                                                     on_start=on_start, on_round=on_round, baseline=args.baseline)
        except capacity.CapacityInterrupted as stop:
            progress.stop()
            console.print(f"[yellow]interrupted[/]: probes done are kept; rerun the same command to resume "
                          f"({stop.grid.exp_dir / CAPACITY_FILE} holds what is known)", highlight=False)
            print_table(console, stop.document)
            return 130
    print_table(console, doc)
    console.print(f"capacity: [bold]{exp_dir / CAPACITY_FILE}[/]", soft_wrap=True)
    failed = [s for s in searches if s.status == "error"]
    for s in failed:
        console.print(f"[red]failed[/] {_name(s)}: {s.error}", highlight=False)
    if not args.no_report:
        from harness.report.document import build

        try:
            report = build(exp_dir, baseline=doc["baseline"])
            console.print(f"report: [bold]{report.html_path}[/] (and {report.md_path.name})", soft_wrap=True)
        except WarmbenchError as exc:  # every probe failed: nothing to report, the runs say why
            console.print(f"[red]no report[/]: {exc}", highlight=False)
    return 1 if failed else 0


def _name(search: capacity.Search) -> str:
    rest = ", ".join(f"{k}={v}" for k, v in search.point.items())
    return f"{search.system}  {rest}".strip()


def _rate(spec: experiment.RunSpec) -> str:
    values = [v for k, v in spec.point.items() if k not in ("system", "seed")]
    return f"{values[0]:g}" if values else "?"


def _state(search: capacity.Search, last: capacity.Probe | None) -> str:
    lo = "-" if search.passed is None else f"{search.passed:g}"
    hi = "-" if search.failed is None else f"{search.failed:g}"
    if search.next_rate() is None:
        return f"[green]{search.text()}[/] (passed {lo}, failed {hi})"
    seen = "" if last is None else f"; {last.rate:g} {'passed' if last.passed else 'failed'}" + (
        f" at {last.attainment:.1%}" if last.attainment is not None else "")
    return f"passed {lo}, failed {hi}{seen}"


def print_table(console: Console, doc: dict[str, Any]) -> None:
    """System, point, capacity, bracket, probes, ratio to the baseline."""
    table = Table(title=f"capacity: highest {doc['param'].rsplit('.', 1)[-1]} with >= {doc['attainment']:.1%} "
                        f"of requests within TTFT {doc['slo']['ttft_s']:g} s / TPOT {doc['slo']['tpot_s']:g} s",
                  title_justify="left")
    for col in ("system", "point", "capacity", "passed", "failed", "probes", f"x {doc['baseline']}"):
        table.add_column(col, justify="left" if col in ("system", "point") else "right")
    for r in doc["results"]:
        table.add_row(r["system"], ", ".join(f"{k}={v}" for k, v in r["point"].items()) or "-", r["capacity_text"],
                      "-" if r["passed"] is None else f"{r['passed']:g}",
                      "-" if r["failed"] is None else f"{r['failed']:g}", str(len(r["probes"])), r["ratio_text"])
    console.print(table)
