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
