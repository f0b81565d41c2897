"""`warmbench bench TARGET`: benchmarks. One module per target in harness/bench/.

reader, sim, loadgen: speed figures, not pass/fail. fidelity: the simulator against published
measurements; exits 1 when a row is out of its band (a gate), 2 on a bad --table. gate: the
statistical gate's false-alarm rate and power on simulated nights (a measurement, exit 0).
"""

from __future__ import annotations

import argparse
import importlib
import json

from rich.console import Console

from harness.argtypes import path_arg, positive_int

TARGETS: dict[str, str] = {
    "reader": "harness.bench.reader",
    "sim": "harness.bench.sim",
    "loadgen": "harness.bench.loadgen",
    "fidelity": "harness.bench.fidelity",
    "gate": "harness.bench.gate",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="speed benchmarks (reader, sim, loadgen); simulator fidelity "
                                            "against published measurements (fidelity); the gate's false-alarm "
                                            "rate and power (gate)")
    p.add_argument("target", choices=sorted(TARGETS))
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--quick", action="store_true", help="smaller scenarios, for a smoke check")
    p.add_argument("--table", type=path_arg, metavar="FILE.csv",
                   help="fidelity: a validation table in published.csv's format (default: the shipped one)")
    p.add_argument("--plot", type=path_arg, metavar="FILE.png", help="fidelity: write a parity plot")
    p.add_argument("--nights", type=positive_int, metavar="N", help="gate: simulated nights per scenario (default 20)")
    p.add_argument("--seeds", type=positive_int, metavar="N",
                   help="gate: seeds a side (default: the nightly preset's)")
    p.add_argument("--fail-if", action="append", metavar="METRIC:+PCT",
                   help="gate: bounds (repeatable; default: the nightly recipe's)")
    p.add_argument("--jobs", type=positive_int, metavar="N", help="gate: simulations in parallel (default: CPUs)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Each bench module has `run(quick: bool) -> dict` and `render(result, console)`, or
    `run_cli(args) -> exit code` (fidelity)."""
    from harness.contracts.errors import WarmbenchError

    module = importlib.import_module(TARGETS[args.target])
    if hasattr(module, "run_cli"):
        return module.run_cli(args)
    if args.table is not None or args.plot is not None:
        raise WarmbenchError(f"--table and --plot apply to `bench fidelity`, not `bench {args.target}`")
    if args.nights or args.seeds or args.fail_if or args.jobs:
        raise WarmbenchError(f"--nights, --seeds, --fail-if and --jobs apply to `bench gate`, not `bench {args.target}`")
    result = module.run(quick=args.quick)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        module.render(result, Console())
    return 0
