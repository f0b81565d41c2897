"""`bench loadgen`: how precisely the load generator sends and times, at rising request rates.

A stand-in server (its own process) answers every request with a first token exactly `TTFT_MS`
after it arrives, then `TOKENS - 1` more tokens `GAP_MS` apart. The full live path (`run_live`,
with its JSONL log and scrapes) replays Poisson arrivals at each rate; per rate we report the
send lag (sent - scheduled) and the TTFT error (client TTFT from the scheduled time minus the
server's known TTFT). Targets on a 2-core machine: P99 of both under 5 ms at 200 req/s x 128 tokens.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

TTFT_MS = 20.0
GAP_MS = 5.0
TOKENS = 128
TARGET_MS = 5.0
RATES_RPS = (25, 50, 100, 150, 200, 250, 300, 400)
QUICK_RATES_RPS = (50, 200)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "harness.loadgen.standin", "--port", str(port),
                             "--ttft-ms", str(TTFT_MS), "--gap-ms", str(GAP_MS)],
                            cwd=Path(__file__).resolve().parents[2])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("stand-in server did not start")


def _schedstat() -> tuple[float, float]:
    """(seconds on CPU, seconds waiting for a CPU) of this thread; zeros where Linux does not say."""
    try:
        on_ns, wait_ns, _ = Path("/proc/thread-self/schedstat").read_text().split()
        return int(on_ns) / 1e9, int(wait_ns) / 1e9
    except (OSError, ValueError):
        return 0.0, 0.0


def cpu_pressure() -> float | None:
    """Linux PSI: share of the last 10 s in which some task waited for a CPU (%); None if unknown."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return float(first.split("avg10=")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None


def _one_rate(url: str, rate_rps: float, duration_s: float, seed: int) -> dict[str, Any]:
    from systems.live import run_live
    from workloads.workload import Workload, canonical_frame

    rng = np.random.default_rng(seed)
    n = int(rate_rps * duration_s)
    arrivals = np.cumsum(rng.exponential(1.0 / rate_rps, n))
    frame = canonical_frame(arrivals, "bench", np.full(n, 32), np.full(n, TOKENS))
    on0, wait0 = _schedstat()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_live(Workload(frame, {"source": "bench loadgen"}), "openai",
                          {"url": url, "token_ids": True, "timeout_s": 30}, Path(tmp) / "run", seed=seed)
    on1, wait1 = _schedstat()
    req = result.requests
    ok = req[req["status"] == "ok"]
    lag_ms = (req["sent_s"] - req["scheduled_s"]).dropna().to_numpy() * 1000
    err_ms = ((ok["first_token_s"] - ok["scheduled_s"]).to_numpy() * 1000) - TTFT_MS
    pct = lambda a, p: float(np.percentile(a, p)) if len(a) else float("nan")  # noqa: E731
    return {
        "rate_rps": rate_rps, "requests": n, "ok": int(len(ok)),
        "send_lag_p50_ms": pct(lag_ms, 50), "send_lag_p99_ms": pct(lag_ms, 99),
        "ttft_error_p50_ms": pct(err_ms, 50), "ttft_error_p99_ms": pct(err_ms, 99),
        "client_cpu_percent": result.manifest["client"]["cpu_percent"],
        # Time the client spent runnable but waiting for a CPU (taken by other processes): on a
        # busy machine this, not the client's own work, is what makes sends late.
        "client_runqueue_wait_s": wait1 - wait0, "client_on_cpu_s": on1 - on0,
        "cpu_pressure_avg10_percent": cpu_pressure(),
    }


def run(quick: bool) -> dict[str, Any]:
    """Replay at each rate against one stand-in; returns the figures per rate."""
    rates = QUICK_RATES_RPS if quick else RATES_RPS
    duration_s = 3.0 if quick else 10.0
    port = _free_port()
    server = _start_server(port)
    try:
        rows = [_one_rate(f"http://127.0.0.1:{port}", rate, duration_s, seed=i) for i, rate in enumerate(rates)]
    finally:
        server.terminate()
        server.wait(timeout=10)
    meeting = [r["rate_rps"] for r in rows
               if r["send_lag_p99_ms"] < TARGET_MS and r["ttft_error_p99_ms"] < TARGET_MS and r["ok"] == r["requests"]]
    return {"server": {"ttft_ms": TTFT_MS, "gap_ms": GAP_MS, "tokens": TOKENS}, "duration_s": duration_s,
            "target_ms": TARGET_MS, "rates": rows,
            "highest_rate_meeting_targets_rps": max(meeting) if meeting else None}


def render(result: dict[str, Any], console: Console) -> None:
    s = result["server"]
    table = Table(title=f"load generator precision: {s['tokens']} tokens/request, server TTFT {s['ttft_ms']:g} ms, "
                        f"gap {s['gap_ms']:g} ms, {result['duration_s']:g} s per rate")
    for col in ("rate req/s", "ok", "send lag P50 ms", "send lag P99 ms", "TTFT err P50 ms", "TTFT err P99 ms",
                "client CPU %", "client waited for CPU s", "host CPU pressure %"):
        table.add_column(col, justify="right")
    for r in result["rates"]:
        table.add_row(f"{r['rate_rps']:g}", f"{r['ok']}/{r['requests']}", f"{r['send_lag_p50_ms']:.2f}",
                      f"{r['send_lag_p99_ms']:.2f}", f"{r['ttft_error_p50_ms']:.2f}", f"{r['ttft_error_p99_ms']:.2f}",
                      f"{r['client_cpu_percent']:.0f}", f"{r['client_runqueue_wait_s']:.2f}",
                      "n/a" if r["cpu_pressure_avg10_percent"] is None else f"{r['cpu_pressure_avg10_percent']:.0f}")
    console.print(table)
    best = result["highest_rate_meeting_targets_rps"]
    console.print(f"highest rate with P99 send lag and P99 TTFT error under {result['target_ms']:g} ms: "
                  f"{best if best is not None else 'none'} req/s")
