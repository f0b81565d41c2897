"""`warmbench sim`: run a system on a simulated cluster over a workload and write the run directory.

    python run.py sim --system vllm-ondemand --workload synthetic-week --cluster paper-16gpu
        [--duration-s 1200] [--seed 0] [--option engine_init_s=4] --out results/sim/run1
"""

from __future__ import annotations

import argparse
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from harness.argtypes import path_arg, positive_float, seed_int
from harness.contracts.errors import InputError, WarmbenchError


def parse_value(text: str) -> Any:
    """`4` -> 4, `0.5` -> 0.5, `true` -> True, anything else stays a string."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_options(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise WarmbenchError(f"--option {pair!r}: expected KEY=VALUE")
        out[key.strip()] = parse_value(value)
    return out


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sim", help="simulate a system on a cluster over a workload",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--system", required=True, help="registered system, e.g. dedicated, vllm-ondemand, warmserve (an unknown name lists them)")
    p.add_argument("--workload", required=True, help="preset name, trace file, canonical CSV/Parquet or recipe TOML")
    p.add_argument("--cluster", default="paper-16gpu", help="preset (paper-16gpu, paper-16gpu-h100, sim-512gpu) or cluster TOML")
    p.add_argument("--duration-s", type=positive_float, help="simulate only arrivals before this time")
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="core option (engine_init_s, block_size, ...) or the system's own; repeatable "
                        "(`warmbench presets` lists them: default, accepted values, meaning)")
    p.add_argument("--debug", action="store_true", help="check memory and engine invariants after every event")
    p.add_argument("--out", type=path_arg, required=True, help="run directory to write")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from harness.store import new_manifest, write_manifest, write_run
    from harness.validate import output_dir
    from systems.sim import simulate, split_options
    from systems.sim.specs import resolve_cluster
    from workloads import resolve

    output_dir(args.out, "--out")
    if (Path(args.out) / "manifest.json").exists():  # a record is never overwritten
        raise InputError("already holds a run (manifest.json); choose a new --out", file=str(args.out), field="--out")
    options = parse_options(args.option)
    split_options(args.system, options)  # unknown system, unknown option or a value out of bounds: exit 2 now
    cluster = resolve_cluster(args.cluster)
    workload = resolve(args.workload)
    if not len(workload):
        raise InputError("the workload has no requests", file=str(args.workload), field="--workload")
    if args.duration_s is not None and not (workload.requests["arrival_s"] < args.duration_s).any():
        raise InputError(f"--duration-s {args.duration_s:g} keeps no requests: the first arrives at "
                         f"{workload.requests['arrival_s'].min():g} s", field="--duration-s")
    started = datetime.now(UTC)
    t0 = time.perf_counter()
    config = {"system": args.system, "options": options, "cluster": str(args.cluster), "seed": args.seed,
              "duration_s": args.duration_s, "workload": str(args.workload)}
    manifest = new_manifest(kind="sim", system=args.system, config=config, seed=args.seed, workload=workload,
                            started_at=started.isoformat(), workload_spec=str(args.workload),
                            cluster_spec=str(args.cluster))
    created = not Path(args.out).exists()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    write_manifest(args.out, manifest)  # incomplete until the end: Ctrl-C or a crash never leaves bare tables
    try:
        result = simulate(workload, cluster, args.system, options=options, seed=args.seed,
                          duration_s=args.duration_s, debug=args.debug)
        wall_s = time.perf_counter() - t0
        result.manifest.update(manifest)
        result.manifest.update(status="complete", ended_at=datetime.now(UTC).isoformat(), wall_s=wall_s)
        out = write_run(result, args.out)
    except BaseException as exc:
        ended = datetime.now(UTC).isoformat()
        if isinstance(exc, WarmbenchError):  # bad input the simulator found (a model that fits no GPU): nothing ran
            (Path(args.out) / "manifest.json").unlink(missing_ok=True)
            if created:
                shutil.rmtree(args.out, ignore_errors=True)
        elif isinstance(exc, KeyboardInterrupt):
            write_manifest(args.out, {**manifest, "interrupted": True, "ended_at": ended})
        else:
            write_manifest(args.out, {**manifest, "status": "failed", "ended_at": ended,
                                      "error": f"{type(exc).__name__}: {exc}"})
        raise
    from harness.report.terminal import run_summary, split_line, ttft_line
    from harness.store import read_summary

    console = Console()
    counts = result.manifest["requests_summary"]  # the manifest's counts (store.requests_summary)
    console.print(f"[bold]{args.system}[/] on {cluster.name} ({cluster.num_gpus} GPUs): {counts['total']} requests, "
                  f"{counts['ok']} ok, {counts['failed']} failed, {counts['unfinished']} unfinished; "
                  f"simulated {result.manifest['simulated_s']:.1f} s in {wall_s:.2f} s wall")
    req = result.requests
    failed = req[~req["status"].isin(["ok", "unfinished"])]
    if len(failed):
        # one line per kind of failure (numbers stripped), so "why" is on screen, not only in the tables
        reasons = failed["error"].str.replace(r"\d+", "N", regex=True).value_counts()
        for reason, count in reasons.head(3).items():
            console.print(f"  failed: {count} x {reason}", markup=False)
    summary = run_summary(read_summary(out))  # what summary.json holds, so screen and record agree
    console.print(ttft_line(summary), highlight=False)
    console.print(split_line(summary), highlight=False)
    console.print(f"wrote {out}")
    if result.manifest["mostly_failed"]:
        Console(stderr=True).print(f"[red]mostly failed:[/] {counts['total'] - counts['ok']} of {counts['total']} "
                                   f"requests not ok ({counts['failed']} failed, {counts['unfinished']} unfinished)",
                                   highlight=False)
        return 1
    return 0
