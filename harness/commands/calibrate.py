"""`warmbench calibrate`: fit the simulator to a live run, or to a validation table of published
(or your own) measurements, and write a cluster TOML that carries the fit.

    python run.py calibrate results/live/run1 --gpu H100-80GB [--model NAME=PRESET_OR_DIR ...]
        [--nodes 2 --gpus-per-node 8] --out calibrated.toml [--json]
    python run.py calibrate --table [FILE.csv] --gpu H100-80GB --out calibrated.toml [--json]
    python run.py sim --cluster calibrated.toml ...    # simulate at scale on the calibrated GPU

With --table (default: the shipped systems/sim/fidelity/published.csv) the table's serving rows on
that GPU are fitted, and each row's leave-one-out error (predicted by the fit on the other rows)
is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rich.console import Console
from rich.table import Table

from harness.argtypes import path_arg, positive_int
from harness.contracts.errors import WarmbenchError

if TYPE_CHECKING:
    from systems.sim.calibrate_live import LiveFit
    from systems.sim.calibrate_table import TableFit

_Fit = TypeVar("_Fit", "LiveFit", "TableFit")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("calibrate", help="fit the simulator's perf model to a live run; writes a cluster TOML",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=path_arg, nargs="?", help="a live run directory (from `replay`)")
    p.add_argument("--table", type=Path, nargs="?", const=Path("-shipped-"), metavar="FILE.csv",
                   help="fit to a validation table's serving rows instead of a live run (no FILE: the shipped "
                        "table; format: systems/sim/fidelity/published.csv)")
    p.add_argument("--gpu", required=True, help="GPU preset the live servers ran on (A100-80GB, H100-80GB, H200)")
    p.add_argument("--model", action="append", default=[], metavar="NAME=PRESET_OR_DIR",
                   help="shape of a live model: a preset or a Hugging Face directory (default: the directory "
                        "the vllm adapter served, else the preset of the same name); repeatable")
    p.add_argument("--nodes", type=positive_int, default=1, help="nodes in the written cluster (default 1)")
    p.add_argument("--gpus-per-node", type=positive_int, default=8)
    p.add_argument("--out", type=path_arg, help="cluster TOML to write")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:
    from harness.live.run import served_model_dirs
    from harness.store import read_run
    from harness.validate import output_file
    from systems.sim.calibrate_live import cluster_toml, fit_live_run

    if args.out:
        output_file(args.out, "--out")
    if (args.run is None) == (args.table is None):
        raise WarmbenchError("calibrate needs a live run directory or --table FILE.csv (one of the two)")
    if args.table is not None:
        if args.model:
            raise WarmbenchError("--model applies to a live run; a table names its models per row")
        return _calibrate_table(args)
    sources = {}
    for pair in args.model:
        name, sep, source = pair.partition("=")
        if not sep or not name or not source:
            raise WarmbenchError(f"--model expects NAME=PRESET_OR_DIR, got {pair!r}")
        sources[name] = source
    result = read_run(args.run)
    if result.manifest.get("kind") != "live":
        raise WarmbenchError(f"{args.run} is a {result.manifest.get('kind', 'unknown')} run; calibrate needs a live one")
    fit = fit_live_run(result.requests, args.gpu, {**served_model_dirs(result.manifest), **sources},
                       source=str(args.run), events=result.events)
    out = _write_fit(args, fit, cluster_toml)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0 if fit.converged else 1
    console = Console()
    table = Table(title=f"calibration on {fit.gpu}: prefill_scale {fit.prefill_scale:.4g}, "
                        f"decode_scale {fit.decode_scale:.4g} ({fit.requests} requests, "
                        f"{'converged' if fit.converged else 'NOT converged'} in {fit.iterations} rounds)",
                  title_justify="left")
    table.add_column("model", no_wrap=True)
    table.add_column("requests", justify="right")
    for what in ("TTFT", "TPOT"):
        table.add_column(f"{what} p50 live", justify="right")
        table.add_column("sim: before → after", justify="right")
        table.add_column("|err| p50", justify="right")
    for model, m in fit.models.items():
        cells = [model, str(m["requests"])]
        for what in ("ttft", "tpot"):
            cells += [_ms(m[f"live_{what}_p50_s"]),
                      f"{_ms(m[f'sim_{what}_p50_before_s'])} → {_ms(m[f'sim_{what}_p50_after_s'])}",
                      f"{m[f'{what}_error_before']:.0%} → {m[f'{what}_error_after']:.0%}"]
        table.add_row(*cells)
    console.print(table)
    for model, st in fit.starts.items():
        console.print(f"engine start of {model}: {st['start_p50_s']:.2f} s median over {st['starts']} "
                      f"(instance_start -> instance_ready); engine_init_s {st['engine_init_s']:.2f} s "
                      "after the simulator's weight load")
    if fit.engine_init_s is None:
        console.print("engine starts: not measured (the run logged no instance_start/instance_ready)")
    else:
        console.print(f"simulate with --option engine_init_s={fit.engine_init_s:.3g} to use the measured starts")
    if args.out:
        console.print(f"wrote {args.out}: simulate with --cluster {args.out}")
    return 0 if fit.converged else 1


def _write_fit(args: argparse.Namespace, fit: _Fit, cluster_toml: Callable[[_Fit, int, int], str]) -> dict[str, Any]:
    """The fit as JSON; with --out, the cluster TOML carrying it is written and named under "written"."""
    out = fit.to_json()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(cluster_toml(fit, args.nodes, args.gpus_per_node))
        out["written"] = str(args.out)
    return out


def _calibrate_table(args: argparse.Namespace) -> int:
    from harness.bench.fidelity import serving_value
    from systems.sim.calibrate_table import cluster_toml, fit_table
    from systems.sim.fidelity.table import PUBLISHED_CSV, read_table

    path = PUBLISHED_CSV if str(args.table) == "-shipped-" else args.table
    fit = fit_table(read_table(path), args.gpu, serving_value, source=str(path))
    out = _write_fit(args, fit, cluster_toml)
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    console = Console(width=None if sys.stdout.isatty() else 120)
    how = " (one shared scale: these rows do not separate prefill from decode)" if fit.shared else ""
    table = Table(title=f"calibration of {fit.gpu} from {path}: prefill_scale {fit.prefill_scale:.4g}, "
                        f"decode_scale {fit.decode_scale:.4g}{how}", title_justify="left")
    for col in ("row", "metric", "published", "sim before", "sim after", "left out", "left-out error"):
        table.add_column(col, justify="left" if col in ("row", "metric") else "right", no_wrap=True)
    for r in fit.rows:
        unit = r["unit"]
        loo = "-" if r["loo"] is None else f"{r['loo']:.4g} {unit}"
        err = "-" if r["loo_ratio"] is None else f"{r['loo_ratio'] - 1:+.1%}"
        table.add_row(r["id"], r["metric"], f"{r['published']:.4g} {unit}", f"{r['before']:.4g} {unit}",
                      f"{r['after']:.4g} {unit}", loo, err)
    console.print(table)
    for rid, why in fit.skipped.items():
        console.print(f"not used: {rid}: {why}")
    loo = out["leave_one_out"]
    if loo["rows"]:
        console.print(f"leave-one-out |error|: median {loo['median_abs_error']:.1%}, worst "
                      f"{loo['worst_abs_error']:.1%} over {loo['rows']} rows (each predicted by the fit on the others)")
    else:
        console.print("leave-one-out: needs 2 or more rows on this GPU")
    if args.out:
        console.print(f"wrote {args.out}: simulate with --cluster {args.out}")
    return 0


def _ms(value: float) -> str:
    return f"{value * 1000:.3g}ms"
