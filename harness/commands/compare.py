"""`warmbench compare BASE CANDIDATE`: ratios per system, model and metric, and a regression gate.

By default a `--fail-if` bound is decided on the paired interval of candidate / base over the seeds
both sides ran (harness/report/gate.py); `--mode per-seed` fails on any one seed's ratio instead.
Exit 0: every bound holds and the candidate is whole. Exit 1: a bound is crossed (decided), or the
candidate cannot be trusted (the rules are in harness/report/compare.py). Exit 2: bad input.
Exit 3 (EXIT_INCONCLUSIVE): no failure, but the seeds cannot decide a bound.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from harness.argtypes import path_arg
from harness.contracts.errors import EXIT_INCONCLUSIVE, WarmbenchError
from harness.contracts.files import strict
from harness.metrics import ALL_MODELS
from harness.report import gate
from harness.report.compare import Bound, compare, failures, known_metrics, notes, parse_bound, problems
from harness.report.load import load_runs, missing_runs, point_label
from harness.report.table import KEY_METRICS, fmt, print_tables

EPILOG = """\
the gate (default --mode interval): per system, sweep point, model and bound, the runs of the same
seed pair up; the ratios candidate / base get a Student t interval on their mean log (the report's
paired ratio CI) at --confidence. METRIC:+PCT fails when the whole interval lies above 1+PCT/100,
holds when it lies at or below, and is inconclusive when it straddles the limit or fewer than
--min-seeds seeds pair (a fall bound mirrors it). --mode per-seed fails when any one run pair's
ratio crosses the bound (no statistics; one seed suffices). --seeds names the seeds to compare:
one that a side did not run is bad input (exit 2); too few seeds for --min-seeds is inconclusive.

exit codes: 0 = every bound holds and the candidate is whole; 1 = a bound is crossed, or the gate
cannot pass: a base run has no candidate run (same system and sweep point; a single run on each
side pairs as is), a run of the candidate's grid is missing, a candidate run failed, is incomplete
or mostly failed (more than half of its requests not ok, or none), a base run is failed, incomplete
or mostly failed, a bound's metric has a value on the base but none on the candidate, or the two
sides replayed different workloads (workload_sha256; see --allow-workload-change); 2 = bad input
(missing or unreadable directory or file, a manifest / summary that is not valid JSON or has wrong
types, a table that is not Parquet, a malformed bound, an unknown metric, nothing in common).
Candidate runs that the base lacks are listed, not failed; 3 = nothing failed but the seeds
cannot decide a bound (inconclusive; a failure anywhere wins: exit 1)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compare", help="compare two runs or experiments; exit 1 when a --fail-if bound is crossed "
                              "or the candidate is missing, failed or incomplete runs; 3 when the seeds cannot decide a bound",
                              epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base", type=path_arg, help="run or experiment directory (the accepted one)")
    p.add_argument("candidate", type=path_arg, help="run or experiment directory to judge")
    p.add_argument("--fail-if", action="append", default=[], metavar="METRIC:+PCT",
                   help="fail when METRIC rises (+) or falls (-) by more than PCT percent, e.g. p99_ttft_s:+10%%; "
                        "PCT a plain number, a rise up to 10000, a fall under 100")
    p.add_argument("--mode", choices=("interval", "per-seed"), default="interval",
                   help="interval (default): decide each bound on the paired interval over seeds; per-seed: fail "
                        "when any run pair crosses it")
    p.add_argument("--confidence", type=_confidence, default=gate.DEFAULT_CONFIDENCE, metavar="C",
                   help="two-sided confidence of the interval, in (0, 1) (default: %(default)s)")
    p.add_argument("--min-seeds", type=_min_seeds, default=gate.MIN_SEEDS, metavar="N",
                   help="fewest paired seeds a bound is decided on; fewer: inconclusive (default: %(default)s)")
    p.add_argument("--seeds", type=_seed_list, metavar="S,S,...",
                   help="compare only these seeds (each must be on both sides, else exit 2)")
    p.add_argument("--allow-workload-change", action="store_true",
                   help="compare even when the two sides replayed different workloads (a note, not a failure)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object on stdout: {metrics: [...], decisions: [...], failed: [...], inconclusive: "
                        "[...], problems: [...], notes: [...], outcome: pass|fail|inconclusive, passed: bool}")
    p.add_argument("--model", action="append", metavar="MODEL",
                   help="models in the table (repeatable; default: all = every model together; '*' = each model)")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    base, candidate = load_runs(args.base), load_runs(args.candidate)
    grid_missing = missing_runs(args.candidate, candidate)  # of the whole grid: --seeds does not hide it
    base_missing = missing_runs(args.base, base)
    if args.seeds:
        base, candidate = gate.select_seeds(base, args.seeds, "base"), gate.select_seeds(candidate, args.seeds, "candidate")
    bounds = [parse_bound(text, known_metrics(base + candidate)) for text in args.fail_if]
    rows = compare(base, candidate)
    known = {r["model"] for r in rows}
    for model in args.model or []:
        if model != "*" and model not in known:
            raise WarmbenchError(f"--model {model!r}: no such model in both sides' runs; models: {', '.join(sorted(known))}")
    found = problems(base, candidate, bounds, candidate_grid_missing=grid_missing,
                     allow_workload_change=args.allow_workload_change)
    said = notes(base, candidate) + [f"base run {i} is in its experiment's grid but not on disk; not compared"
                                     for i in base_missing]
    interval = args.mode == "interval"
    if interval:
        shown = [m for m, _ in KEY_METRICS]
        table = gate.decisions(base, candidate, bounds, shown, confidence=args.confidence, min_seeds=args.min_seeds)
        decided = [d for d in table if d.bound is not None]
        failed = [d.as_dict() for d in decided if d.decision == gate.FAIL]
        undecided = [d.as_dict() for d in decided if d.decision == gate.INCONCLUSIVE]
        result = gate.outcome(len(found), decided)
    else:
        decided, failed, undecided = [], failures(rows, bounds), []
        result = gate.FAIL if failed or found else gate.PASS
    if args.json:
        print(json.dumps(strict({"base": str(args.base), "candidate": str(args.candidate), "mode": args.mode,
                                 "confidence": args.confidence if interval else None,
                                 "min_seeds": args.min_seeds if interval else None,
                                 "bounds": [str(b) for b in bounds], "metrics": rows,
                                 "decisions": [d.as_dict() for d in decided], "failed": failed,
                                 "inconclusive": undecided, "problems": [p.as_dict() for p in found], "notes": said,
                                 "outcome": result, "passed": result == gate.PASS}), indent=2))
    else:
        console = Console()
        if interval:
            _render_interval(table, console, args.model or [ALL_MODELS], args.confidence)
        else:
            _render(rows, failed, bounds, console, args.model or [ALL_MODELS])
        for note in said:
            console.print(f"[dim]note:[/] {escape(note)}", highlight=False, soft_wrap=True)
        for problem in found:
            console.print(f"[bold red]FAIL[/] {problem.kind}: {escape(problem.message)}", highlight=False, soft_wrap=True)
        if result == gate.FAIL:
            console.print(f"[bold red]gate failed[/]: {len(found)} problem(s), {len(failed)} bound crossing(s)"
                          + (f", {len(undecided)} inconclusive" if undecided else ""), highlight=False)
        elif result == gate.INCONCLUSIVE:
            console.print(f"[bold yellow]gate inconclusive[/]: the seeds cannot decide {len(undecided)} row(s) "
                          f"(exit {EXIT_INCONCLUSIVE}); nothing failed", highlight=False)
        else:
            how = f" on the paired {args.confidence:.0%} interval over seeds" if interval else " for every run pair"
            console.print(f"[green]ok[/]: {len(bounds)} bound(s) hold{how}" if bounds else "no bounds given")
    return {gate.PASS: 0, gate.FAIL: 1, gate.INCONCLUSIVE: EXIT_INCONCLUSIVE}[result]


def _confidence(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.5 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 0.5 and under 1 (e.g. 0.95)")
    return value


def _min_seeds(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not gate.MIN_SEEDS <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"{text!r} must be from {gate.MIN_SEEDS} (a t interval needs two) to 10000")
    return value


def _seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part, 10) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integer seeds") from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"{text!r} names a seed twice")
    return seeds


def _render_interval(table: list[gate.Decision], console: Console, models: list[str], confidence: float) -> None:
    """One row per system, point, model and metric: the means, the ratio over seeds, its interval, the decision."""
    rank = {m: i for i, m in enumerate(dict.fromkeys([m for m, _ in KEY_METRICS] + [d.metric for d in table]))}
    with_point = any(point_label(d.point) for d in table)
    out = Table(title=f"compare over seeds (ratio = geometric mean of candidate / base over n paired seeds, "
                      f"with its {confidence:.0%} interval; red = fail, yellow = inconclusive)", title_justify="left")
    columns = ["system", *(["point"] if with_point else []), "model", "metric", "n", "base", "candidate", "ratio",
               "interval", "decision"]
    for col in columns:
        out.add_column(col, justify="left" if col in ("system", "point", "model", "metric", "decision") else "right",
                       no_wrap=True)
    picked = [d for d in table if "*" in models or d.model in models]
    order = {name: i for i, name in enumerate(dict.fromkeys(d.system for d in table))}
    picked.sort(key=lambda d: (order[d.system], json.dumps(d.point, default=str), d.model != ALL_MODELS, d.model,
                               rank[d.metric], d.bound or ""))
    for d in picked:
        span = "n/a" if d.low is None else f"{d.low:.3f}-{d.high:.3f}"
        style = {gate.FAIL: "bold red", gate.INCONCLUSIVE: "yellow", gate.PASS: "green"}.get(d.decision or "", "")
        out.add_row(escape(d.system), *([escape(point_label(d.point))] if with_point else []), escape(d.model), d.metric,
                    str(d.n), fmt(d.metric, d.base_mean), fmt(d.metric, d.candidate_mean),
                    "n/a" if d.ratio is None else f"{d.ratio:.3g}", span,
                    f"[{style}]{d.decision}[/]" if style else "")
    print_tables(console, [out])
    for d in table:
        if d.decision in (gate.FAIL, gate.INCONCLUSIVE):
            tag = "[bold red]FAIL[/]" if d.decision == gate.FAIL else "[yellow]INCONCLUSIVE[/]"
            where = " ".join(part for part in (d.system, point_label(d.point), f"model {d.model}") if part)
            ratio_text = "" if d.ratio is None else f"ratio {d.ratio:.3f}, "
            console.print(f"{tag} {escape(str(d.bound))}: " + escape(f"{where}: {ratio_text}{d.why}"), highlight=False,
                          soft_wrap=True)


def _render(rows: list[dict[str, Any]], failed: list[dict[str, Any]], bounds: list[Bound], console: Console,
            models: list[str]) -> None:
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
