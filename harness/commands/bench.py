"""`warmbench bench TARGET`: speed benchmarks (figures, not pass/fail). One module per target in harness/bench/."""

from __future__ import annotations

import argparse
import importlib
import json

from rich.console import Console

TARGETS: dict[str, str] = {
    "reader": "harness.bench.reader",
    "sim": "harness.bench.sim",
    "loadgen": "harness.bench.loadgen",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("bench", help="speed benchmarks: reader, sim, loadgen")
    p.add_argument("target", choices=sorted(TARGETS))
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument("--quick", action="store_true", help="smaller scenarios, for a smoke check")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Each bench module has `run(quick: bool) -> dict` and `render(result, console)`."""
    module = importlib.import_module(TARGETS[args.target])
    result = module.run(quick=args.quick)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        module.render(result, Console())
    return 0
