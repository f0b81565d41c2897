"""`warmbench reproduce`: run every claim of the WarmServe paper, write REPRODUCTION.md / .html.

    python run.py reproduce [--quick] [--claims NAME,...] [--results DIR] [--jobs N]

Each claim's experiments go through the ordinary runner (harness.runner / harness.capacity)
into RESULTS/reproduce/, so they resume and keep their identity. Exit 0 when everything ran
(verdicts are findings, not failures), 1 when a run failed, 2 bad input, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from harness import capacity, experiment, runner
from harness.argtypes import positive_int
from harness.contracts.errors import InputError
from harness.validate import check_runs


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("reproduce", help="run the WarmServe paper's claims; writes REPRODUCTION.md / .html")
    p.add_argument("--quick", action="store_true", help="each experiment's quick variant (< 5 min on 2 cores)")
    p.add_argument("--claims", default="", help="comma-separated claim names: headline-ttft, capacity-muxserve, "
                                                "ablation, window, 512gpu (default: all)")
    p.add_argument("--results", type=Path, default=experiment.DEFAULT_RESULTS, help="results root (default: results/)")
    p.add_argument("--jobs", type=positive_int, default=min(2, os.cpu_count() or 1), help="runs in parallel")
    p.add_argument("--no-sensitivity", action="store_true", help="skip the sensitivity study")
    p.set_defaults(handler=handle)


def selected(text: str) -> list[str]:
    """Claim names from `--claims` (all when empty); an unknown name is bad input (exit 2)."""
    from harness.reproduce.claims import CLAIMS

    names = [n.strip() for n in text.split(",") if n.strip()] or list(CLAIMS)
    unknown = [n for n in names if n not in CLAIMS]
    if unknown:
        raise InputError(f"unknown claim {unknown[0]!r}; claims: {', '.join(CLAIMS)}", field="--claims")
    return list(dict.fromkeys(names))


def handle(args: argparse.Namespace) -> int:
    from harness.reproduce import claims as C
    from harness.reproduce import document
    from harness.reproduce import sensitivity as S
    from harness.reproduce import verdicts as V

    names = selected(args.claims)
    console = Console()
    root = Path(args.results) / "reproduce"
    root.mkdir(parents=True, exist_ok=True)
    started = time.time()
    # every experiment validated before anything runs (bad input: exit 2, nothing run)
    jobs: list[tuple[str, experiment.ExperimentConfig, list[experiment.RunSpec]]] = []
    for name in names:
        for raw in C.CLAIMS[name].experiments():
            jobs.append((raw["name"], *_prepare(raw, args.quick)))
    studies = [S.STUDIES[s] for n in names if not args.no_sensitivity for s in S.FOR_CLAIM.get(n, [])]
    sens_jobs: dict[str, list[tuple[Any, str]]] = {}
    for study in studies:
        for assumption, raw in S.experiments(study, root, args.quick):
            if all(raw["name"] != j[0] for j in jobs):  # studies of one claim share their runs
                cfg, specs = _prepare(raw, args.quick)
                jobs.append((raw["name"], cfg, specs))
            sens_jobs.setdefault(study.name, []).append((assumption, raw["name"]))
    total = sum(len(specs) for _, _, specs in jobs)
    console.print(f"[bold]reproduce[/]{' --quick' if args.quick else ''}: {len(names)} claim(s), "
                  f"{len(jobs)} experiments, ~{total} runs -> {root}", soft_wrap=True)
    dirs: dict[str, Path] = {}
    failed: list[str] = []
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=20),
                  TextColumn("{task.fields[state]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console) as progress:
        overall = progress.add_task("[bold]all runs", total=total, state="")
        for raw_name, cfg, specs in jobs:
            task = progress.add_task(cfg.name, total=len(specs), state="running")

            def on_done(outcome: runner.RunOutcome, task: Any = task) -> None:
                progress.advance(task)
                progress.advance(overall)
                if outcome.status == "failed":
                    failed.append(f"{outcome.spec.experiment}/{outcome.spec.run_id}: {outcome.error}")

            if cfg.capacity is not None:
                exp_dir, searches, _ = capacity.search(cfg, root, jobs=args.jobs, on_done=on_done)
                failed.extend(f"{cfg.name}/{s.system}: {s.error}" for s in searches if s.status == "error")
            else:
                exp_dir, _ = runner.run(cfg, root, jobs=args.jobs, on_done=on_done)
            dirs[raw_name] = exp_dir
            progress.update(task, state="[green]done[/]", completed=len(specs))
    rows = [row for n in names for row in C.CLAIMS[n].measure(dirs)]
    sens = []
    for study in studies:
        base_name = sens_jobs[study.name][0][1]
        base_runs = V.complete_runs(dirs[base_name])
        per = [(a, V.complete_runs(dirs[n])) for a, n in sens_jobs[study.name][1:]]
        base, found = S.effects(study, base_runs, per, args.quick)
        sens.append((study, base, found))
        for row in rows:
            if row.claim == study.row and row.verdict != V.REPRODUCED:
                row.why = f"{row.why}; sensitivity: {S.closing(study, base, found)}".lstrip("; ")
    wall_s = time.time() - started
    notes = [f"`python run.py reproduce{' --quick' if args.quick else ''}`: {total} runs, {wall_s:.0f} s wall on "
             f"{os.cpu_count()} cores (--jobs {args.jobs}); results in {root}."
             + (" Quick variant: shorter replays, fewer rates and seeds; the table is indicative." if args.quick else "")]
    md, html_path = document.write(root, rows, dirs, sens, notes)
    print_table(console, rows)
    console.print(f"wall {wall_s:.0f} s; report: [bold]{md}[/] and {html_path.name}", soft_wrap=True)
    for f in failed:
        console.print(f"[red]failed[/] {f}", highlight=False)
    return 1 if failed else 0


def _prepare(raw: dict[str, Any], quick: bool) -> tuple[experiment.ExperimentConfig, list[experiment.RunSpec]]:
    from harness.reproduce.claims import SOURCE

    cfg = experiment.parse(raw, SOURCE, quick=quick)
    if cfg.capacity is not None:
        capacity.check_bounds(cfg, SOURCE)
        specs = capacity.probe_specs(cfg, cfg.capacity.high) * capacity.max_probes(
            cfg.capacity.low, cfg.capacity.high, cfg.capacity.tolerance)
    else:
        specs = experiment.grid(cfg)
        check_runs(specs, SOURCE)
    return cfg, specs


def print_table(console: Console, rows: list[Any]) -> None:
    table = Table(title="WarmServe paper: claims reproduced", title_justify="left", show_lines=False)
    for col in ("claim", "paper", "ours", "ratio", "verdict"):
        table.add_column(col, overflow="fold")
    for r in rows:
        color = {"reproduced": "green", "same direction": "yellow", "not reproduced": "red"}.get(r.verdict, "cyan")
        table.add_row(r.claim, r.paper, r.ours, r.ratio, f"[{color}]{r.verdict}[/]")
    console.print(table)
