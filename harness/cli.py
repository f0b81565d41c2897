"""The `warmbench` / `python run.py` command line.

Each subcommand is one module in `harness/commands/` exposing `register(subparsers)` and
`run(args) -> int`. User errors (WarmbenchError) print one line and exit 2, no traceback.
A handler's own exit code passes through as is: 1 a failed run or gate, 3 (errors.EXIT_INCONCLUSIVE)
a statistical gate whose seeds cannot decide.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rich.console import Console
from rich.markup import escape

from harness.contracts.errors import WarmbenchError

#: Subcommand name -> one-line help. `run` with no subcommand is the default. Only the module
#: of the command being run is imported (pandas, matplotlib and the simulator cost seconds).
COMMANDS: dict[str, str] = {
    "run": "run an experiment (TOML file or preset; default: the default experiment)",
    "trace": "trace statistics and multi-model workload recipes",
    "sim": "simulate a system on a cluster over a workload",
    "replay": "replay a workload against live endpoints (locust, open loop)",
    "calibrate": "fit the simulator's perf model to a live run; writes a cluster TOML",
    "report": "write report.html / report.md for a run or experiment directory",
    "compare": "compare two runs or experiments; exit 1 when a --fail-if bound is crossed or candidate runs are "
               "missing, failed or incomplete, 3 when the seeds cannot decide a bound",
    "history": "metrics per code revision with change points; writes history.html / history.json",
    "nightly": "run the nightly preset, write its history page, gate it against the previous revision "
               "(exit 1 only on a decided regression)",
    "presets": "list experiment, workload and cluster presets and simulated systems",
    "bench": "speed benchmarks: reader, sim, loadgen; simulator fidelity; the gate's false alarms and power",
    "reproduce": "run every claim of the WarmServe paper; writes REPRODUCTION.md / reproduction.html",
}


class _Parser(argparse.ArgumentParser):
    """A bad argument is one line naming the flag (exit 2), as every other input error is."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with `command` fully registered (all of them when None); others as help lines."""
    parser = _Parser(
        prog="warmbench",
        description="Trace-driven benchmarking of multi-LLM serving, live and simulated. "
                    "With no command, runs the default experiment.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        if command is None or name == command:
            importlib.import_module(f"harness.commands.{name}").register(subparsers)
        else:
            subparsers.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]  # `python run.py --quick` = the default experiment's quick variant
    if not argv:
        argv = ["run"]
    parser = build_parser(argv[0] if argv[0] in COMMANDS else "run")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad argument (2, one line on stderr)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    err = Console(stderr=True)
    try:
        return int(args.handler(args) or 0)
    except WarmbenchError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)  # one line, however long
        return 2
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        return 130
