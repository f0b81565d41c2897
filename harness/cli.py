"""The `warmbench` / `python run.py` command line.

Each subcommand is one module in `harness/commands/` exposing `register(subparsers)` and
`run(args) -> int`. User errors (WarmbenchError) print one line and exit 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from rich.console import Console

from harness.errors import WarmbenchError

#: Subcommand name -> module under harness.commands. `run` with no subcommand is the default.
COMMANDS: tuple[str, ...] = ("run", "trace", "sim", "replay", "report", "compare", "presets", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="warmbench",
        description="Trace-driven benchmarking of multi-LLM serving, live and simulated. "
                    "With no command, runs the default experiment.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"harness.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"harness.commands.{name}":
                continue  # command not built yet
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["run", *argv]  # `python run.py --quick` = the default experiment's quick variant
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["run", *argv])
    err = Console(stderr=True)
    try:
        return int(args.handler(args) or 0)
    except WarmbenchError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]")
        return 130
