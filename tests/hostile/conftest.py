"""Shared pieces of the hostile-input tests: the in-process CLI, the one-line-error check, and the
stand-in server as a separate process."""

from __future__ import annotations

import contextlib
import io
import subprocess
from collections.abc import Callable, Iterator

import pytest

from harness.cli import main
from tests.live.conftest import standin_processes


def cli_result(*args: str) -> subprocess.CompletedProcess:
    """`warmbench ARGS...` in this process: exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def cli(*args: str) -> tuple[int, str, str]:
    proc = cli_result(*args)
    return proc.returncode, proc.stdout, proc.stderr


def one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 3, err  # rich may wrap one line
    return " ".join(err.split())


@pytest.fixture
def standin() -> Iterator[Callable[..., str]]:
    """Start the stand-in with the given flags; returns its `127.0.0.1:PORT` (tests add the scheme
    and any credentials themselves)."""
    with standin_processes() as start:
        yield start
