"""Fixtures for live-run tests: stand-in servers as real separate processes."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"stand-in exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"stand-in on port {port} did not open")


@contextlib.contextmanager
def standin_processes() -> Iterator[Callable[..., str]]:
    """Start `python -m harness.loadgen.standin` with the given flags (one process a call); each call
    returns its `127.0.0.1:PORT`. Every process is stopped on exit."""
    procs: list[subprocess.Popen] = []

    def start(*flags: str) -> str:
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "harness.loadgen.standin", "--port", str(port), *flags],
                                cwd=ROOT)
        procs.append(proc)
        wait_port(port, proc)
        return f"127.0.0.1:{port}"

    try:
        yield start
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.fixture
def standin() -> Iterator[Callable[..., str]]:
    """Start `python -m harness.loadgen.standin` with the given flags; returns its base URL."""
    with standin_processes() as start:
        yield lambda *flags: f"http://{start(*flags)}"
