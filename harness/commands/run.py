"""`warmbench run [EXPERIMENT]`: run an experiment grid (default: the `default` preset), then report."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from harness import experiment, runner
from harness.argtypes import path_arg, positive_int
from harness.contracts.errors import WarmbenchError
from harness.report.document import build
from harness.report.load import load_runs, systems
from harness.report.table import fmt, print_tables, rich_tables
from harness.validate import check_runs

#: Runs in parallel by default (and a local Ray's CPUs): 2, the cores of the machine this was built on.
DEFAULT_JOBS = min(2, os.cpu_count() or 1)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("run", help="run an experiment (TOML file or preset; default: the default experiment)")
    p.add_argument("experiment", nargs="?", default=experiment.DEFAULT_PRESET,
                   help="experiment TOML file or preset name (see `presets`)")
    p.add_argument("--results", type=path_arg, default=experiment.DEFAULT_RESULTS, help="results root (default: results/)")
    p.add_argument("--quick", action="store_true", help="the experiment's quick variant (a smoke test, < 20 s)")
    p.add_argument("--jobs", type=positive_int, default=None,
                   help="runs in parallel (default: 2; with --executor ray --address, the cluster's CPUs)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="where runs execute: local worker processes (default) or Ray tasks "
                        "(needs `pip install 'warmbench[ray]'`)")
    p.add_argument("--address", help="with --executor ray: the Ray cluster to join (default: start a local Ray)")
    p.add_argument("--baseline", help="system the table's ratios are against (default: the experiment's)")
    p.add_argument("--no-report", action="store_true", help="skip report.html / report.md")
    p.set_defaults(handler=handle)


def _describe(spec: experiment.RunSpec) -> str:
    rest = ", ".join(f"{k}={v}" for k, v in spec.point.items() if k != "system")
    return f"{spec.point['system']}  {rest}"


def handle(args: argparse.Namespace) -> int:
    """Run the grid (or capacity search) on the chosen executor, then print the table and report."""
    if args.address and args.executor != "ray":
        raise WarmbenchError("--address names a Ray cluster: add --executor ray")
    if args.executor == "ray":
        from harness.executors import import_ray

        import_ray()  # not installed: one line saying how, before any work
    config, source = experiment.load(args.experiment, quick=args.quick)
    if args.executor == "local":
        args.jobs = args.jobs or DEFAULT_JOBS
        return _handle(args, config, source)
    if config.backend == "live":
        raise WarmbenchError("--executor ray runs simulated grids; a live experiment replays from this machine, "
                             "one run at a time: drop --executor ray")
    from harness.executors import ray_session

    # a local Ray gets --jobs CPUs (default 2, as the pool); a cluster is used whole unless --jobs caps it
    with ray_session(args.address, args.jobs or (None if args.address else DEFAULT_JOBS)) as pool:
        args.jobs = pool  # runner.run and capacity.search take a worker count or an executor
        return _handle(args, config, source)


def _handle(args: argparse.Namespace, config: experiment.ExperimentConfig, source: Path) -> int:
    console = Console()
    if config.capacity is not None:  # a capacity search, not one grid
        from harness.commands import run_capacity

        return run_capacity.handle(args, config, source, console)
    specs = experiment.grid(config)
    check_runs(specs, source)  # every run's system, options, cluster and workload, before any runs
    labels = list(dict.fromkeys(s.point["system"] for s in specs))
    if args.baseline and args.baseline not in labels:
        raise WarmbenchError(f"--baseline {args.baseline!r} is not one of the systems {labels}")
    console.print(f"[bold]{config.name}[/]: {len(specs)} runs ({config.backend}) -> {args.results / config.name}", soft_wrap=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=20),
                  TextColumn("{task.fields[state]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console) as progress:
        overall = progress.add_task("[bold]all runs", total=len(specs), state="")
        tasks = {s.run_id: progress.add_task(_describe(s), total=1, state="queued", start=False) for s in specs}

        def on_start(spec: experiment.RunSpec) -> None:
            progress.start_task(tasks[spec.run_id])
            progress.update(tasks[spec.run_id], state="running")

        def on_done(outcome: runner.RunOutcome) -> None:
            task = tasks[outcome.spec.run_id]
            progress.start_task(task)
            p99 = outcome.summary.get("p99_ttft_s")
            state = {"complete": f"[green]done[/] P99 TTFT {fmt('x_s', p99)}",
                     "skipped": f"[cyan]already complete[/] P99 TTFT {fmt('x_s', p99)}",
                     "incomplete": "[yellow]incomplete[/]", "failed": "[red]failed[/]"}[outcome.status]
            progress.update(task, completed=1, state=state)
            progress.stop_task(task)
            progress.advance(overall)

        try:
            exp_dir, outcomes = runner.run(config, args.results, jobs=args.jobs, source=source,
                                               on_start=on_start, on_done=on_done)
        except runner.GridInterrupted as stop:
            progress.stop()
            return _interrupted(console, stop)
    failed = [o for o in outcomes if o.status == "failed"]
    for o in failed:
        console.print(f"[red]failed[/] {o.spec.run_id}: {o.error}", highlight=False)
    if failed and len(failed) == len(outcomes):
        if all(o.user_error for o in failed):
            raise WarmbenchError(f"every run failed; first error: {failed[0].error}")
        return 1
    incomplete = [o for o in outcomes if o.status == "incomplete"]
    for o in incomplete:
        console.print(f"[yellow]incomplete[/] {o.spec.run_id}: left out of the table", highlight=False)
    bad = [o for o in outcomes if o.status in ("complete", "skipped") and o.mostly_failed]
    for o in bad:
        console.print(f"[red]mostly failed[/] {o.spec.run_id}: {_why(o)}", highlight=False)
    runs = [r for r in load_runs(exp_dir) if r.complete]
    wanted = args.baseline or config.baseline
    baseline = wanted if wanted in systems(runs) else (runs[0].system if runs else None)  # its runs may have failed
    print_tables(console, rich_tables(runs, baseline))
    if not args.no_report:
        report = build(exp_dir, baseline=baseline)
        console.print(f"report: [bold]{report.html_path}[/] (and {report.md_path.name})", soft_wrap=True)
    return 1 if failed or incomplete or bad else 0


def _why(outcome: runner.RunOutcome) -> str:
    s = outcome.requests_summary or {}
    if not s.get("total"):
        return "the run has no requests"
    return (f"{s['total'] - s['ok']} of {s['total']} requests not ok ({s['failed']} failed, "
            f"{s['unfinished']} unfinished); see its requests table for the errors")


def _interrupted(console: Console, stop: runner.GridInterrupted) -> int:
    """Ctrl-C: say which runs are done, which was cut short and which never started; exit 130."""
    done = [o for o in stop.outcomes if o.status in ("complete", "skipped")]
    cut = [o for o in stop.outcomes if o.status == "incomplete"]
    failed = [o for o in stop.outcomes if o.status == "failed"]
    console.print(f"[yellow]interrupted[/]: {len(done)} runs complete, {len(failed)} failed, {len(cut)} incomplete, "
                  f"{len(stop.missing)} not started (rerun the same command to resume)", highlight=False)
    for o in failed:
        console.print(f"  failed: {o.spec.run_id}: {o.error}", highlight=False)
    for o in cut:
        console.print(f"  incomplete: {o.spec.run_id}", highlight=False)
    for spec in stop.missing:
        console.print(f"  not started: {spec.run_id}", highlight=False)
    ids = {o.spec.run_id for o in done}  # not the not-started runs' old results
    runs = [r for r in load_runs(stop.exp_dir) if r.complete and r.run_id in ids] if done else []
    if runs:
        print_tables(console, rich_tables(runs, runs[0].system))
    return 130
