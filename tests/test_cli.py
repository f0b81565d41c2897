"""The CLI skeleton: user errors exit 2 with one line, no traceback."""

from __future__ import annotations

import subprocess
import sys

from harness.cli import build_parser
from tests.conftest import ROOT


def test_help_lists_commands() -> None:
    text = build_parser().format_help()
    assert "bench" in text


def test_unknown_command_exits_2() -> None:
    proc = subprocess.run([sys.executable, "run.py", "no-such-command"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_each_command_registers_with_its_help_line() -> None:
    """The lazy parser lists every command; each module registers under its own name."""
    from harness.cli import COMMANDS

    full = build_parser().format_help()
    for name in COMMANDS:
        assert name in full
        sub = build_parser(name)
        assert sub.parse_args([name, *_minimal_args(name)]).command == name


def _minimal_args(name: str) -> list[str]:
    return {
        "trace": ["stats", "x.csv"],
        "sim": ["--system", "dedicated", "--workload", "synthetic-week", "--out", "o"],
        "bench": ["sim"],
        "report": ["d"],
        "compare": ["a", "b"],
        "calibrate": ["run_dir", "--gpu", "H100-80GB"],
    }.get(name, [])
