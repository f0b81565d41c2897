"""`bench loadgen`: how precisely the load generator sends and times, at rising request rates.

A stand-in server (its own process) aims to answer every request with a first token `TTFT_MS`
after it arrives, then `TOKENS - 1` more tokens `GAP_MS` apart, each its own SSE event. The full
live path (`run_live`, with its JSONL log and scrapes) replays Poisson arrivals at each rate.

Two TTFT errors are reported, and only the second is judged:

- `ttft_error_vs_nominal_*`: client TTFT (first token read - scheduled) minus the nominal
  `TTFT_MS`. It mixes the client's error with the server's: on a 2-core host the stand-in's
  timers fire late while it writes thousands of tokens a second, and that lateness is the
  server's, not the load generator's.
- `ttft_error_*` (judged): client TTFT minus the TTFT the server actually delivered, read from
  the stand-in's own log (`--log`: per request id, when the request arrived and when its first
  token was written, both on the host's monotonic clock). This is the load generator's own
  error: its send lag, the request's trip to the server and the delay before it reads the
  first token. `server_lateness_*` is the rest (server TTFT minus nominal), so
  vs_nominal = own error + server lateness for every request.

The send lag (sent - scheduled) is always the client's. Targets on a 2-core machine: P99 send lag
and P99 own TTFT error under 5 ms at 200 req/s x 128 tokens. CPU is reported per process (client,
stand-in, everything else on the host) so a missed target can be traced to whoever used the cores.
With two or more CPUs the stand-in is pinned to one and the client to the others (`cpu_split`),
as if the server ran on its own machine.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from harness.metrics import percentile, send_lag_s, send_lag_stats_s, ttft_s

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


def split_cpus() -> tuple[set[int], set[int]] | None:
    """(client CPUs, stand-in CPUs): the stand-in on the last CPU this process may use, the
    client on the rest; None with fewer than two CPUs or where Linux affinity is not available.

    The server under test normally runs on another machine; on one host, a stand-in that shares
    the client's core would add its own CPU bursts to the client's figures."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
    if len(cpus) < 2:
        return None
    return set(cpus[:-1]), {cpus[-1]}


def _start_server(port: int, log_path: Path, cpus: set[int] | None) -> subprocess.Popen:
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    proc = subprocess.Popen([sys.executable, "-m", "harness.loadgen.standin", "--port", str(port),
                             "--ttft-ms", str(TTFT_MS), "--gap-ms", str(GAP_MS), "--log", str(log_path)],
                            cwd=Path(__file__).resolve().parents[2], preexec_fn=pin)
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


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` (Linux /proc); NaN where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def _host_busy_cpu_s() -> float:
    """CPU seconds all cores of the host spent busy since boot (Linux /proc/stat); NaN where unknown."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        steal = fields[7] if len(fields) > 7 else 0
        return (sum(fields[:8]) - idle - steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def cpu_pressure() -> float | None:
    """Linux PSI: share of the last 10 s in which some task waited for a CPU (%); None if unknown."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
        return float(first.split("avg10=")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None


def read_server_log(path: Path, offset: int) -> tuple[pd.DataFrame, int]:
    """The stand-in's first-token lines written after byte `offset`, and the new offset."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        data = fh.read()
    complete = data[:data.rfind(b"\n") + 1]
    rows = [json.loads(line) for line in complete.splitlines() if line.strip()]
    frame = pd.DataFrame(rows, columns=["request_id", "received_s", "first_token_s"])
    frame["request_id"] = pd.to_numeric(frame["request_id"], errors="coerce").astype("Int64")
    return frame, offset + len(complete)


def ttft_errors(requests: pd.DataFrame, server: pd.DataFrame, t0_perf_s: float | None) -> pd.DataFrame:
    """Per successful request: client TTFT, the server's delivered TTFT and the errors (seconds).

    `server` holds the stand-in's log rows (perf_counter seconds). `own_error_s` = client TTFT -
    server TTFT (needs no common clock: each is a difference on one process's clock);
    `lateness_s` = server TTFT - nominal. With `t0_perf_s` (the run's t=0 on the same clock as
    the server's log) the own error is split into the client's send lag, the request's trip
    (sent -> server received) and the read delay (first token written -> read by the client).
    """
    ok = requests[requests["status"] == "ok"]
    merged = ok.merge(server.rename(columns={"received_s": "srv_received_s", "first_token_s": "srv_first_s"}),
                      on="request_id", how="inner")
    out = pd.DataFrame({"request_id": merged["request_id"]})
    out["client_ttft_s"] = ttft_s(merged)  # harness.metrics' TTFT: from the scheduled time
    out["server_ttft_s"] = merged["srv_first_s"] - merged["srv_received_s"]
    out["own_error_s"] = out["client_ttft_s"] - out["server_ttft_s"]
    out["vs_nominal_s"] = out["client_ttft_s"] - TTFT_MS / 1000
    out["lateness_s"] = out["server_ttft_s"] - TTFT_MS / 1000
    if t0_perf_s is not None:
        out["send_lag_s"] = send_lag_s(merged)
        out["trip_s"] = (merged["srv_received_s"] - t0_perf_s) - merged["sent_s"]
        out["read_delay_s"] = merged["first_token_s"] - (merged["srv_first_s"] - t0_perf_s)
    return out


def _pct_ms(values: Any, p: float) -> float:
    return percentile(np.asarray(values, dtype=float), p) * 1000


def _one_rate(url: str, rate_rps: float, duration_s: float, seed: int, server: subprocess.Popen,
              log_path: Path, log_offset: int) -> tuple[dict[str, Any], int]:
    from harness.live import run_live
    from workloads.workload import Workload, canonical_frame

    rng = np.random.default_rng(seed)
    n = int(rate_rps * duration_s)
    arrivals = np.cumsum(rng.exponential(1.0 / rate_rps, n))
    frame = canonical_frame(arrivals, "bench", np.full(n, 32), np.full(n, TOKENS))
    on0, wait0 = _schedstat()
    srv0, host0, wall0 = _process_cpu_s(server.pid), _host_busy_cpu_s(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = run_live(Workload(frame, {"source": "bench loadgen"}), "openai",
                          {"url": url, "token_ids": True, "ignore_eos": True, "timeout_s": 30}, Path(tmp) / "run", seed=seed)
    srv1, host1, wall1 = _process_cpu_s(server.pid), _host_busy_cpu_s(), time.perf_counter()
    on1, wait1 = _schedstat()
    time.sleep(0.05)  # the stand-in writes its log line just after the first token; let it land
    server_log, log_offset = read_server_log(log_path, log_offset)
    req = result.requests
    ok = req[req["status"] == "ok"]
    clock = result.manifest.get("run_clock", {})
    shared_clock = "CLOCK_MONOTONIC" in str(clock.get("clock", ""))
    err = ttft_errors(req, server_log, clock.get("t0_perf_counter_s") if shared_clock else None)
    lag = send_lag_stats_s(req)  # as the run's manifest and summary have it
    tokens = int(ok["received_tokens"].sum())
    client = result.manifest["client"]
    wall_s = wall1 - wall0
    server_cpu_s = srv1 - srv0
    row = {
        "rate_rps": rate_rps, "requests": n, "ok": int(len(ok)), "server_logged": int(len(err)),
        "send_lag_p50_ms": lag["p50"] * 1000, "send_lag_p99_ms": lag["p99"] * 1000,
        # judged: the client's own error (client TTFT minus the TTFT the server delivered)
        "ttft_error_p50_ms": _pct_ms(err["own_error_s"], 50), "ttft_error_p99_ms": _pct_ms(err["own_error_s"], 99),
        "ttft_error_vs_nominal_p50_ms": _pct_ms(err["vs_nominal_s"], 50),
        "ttft_error_vs_nominal_p99_ms": _pct_ms(err["vs_nominal_s"], 99),
        "server_lateness_p50_ms": _pct_ms(err["lateness_s"], 50),
        "server_lateness_p99_ms": _pct_ms(err["lateness_s"], 99),
        "request_trip_p99_ms": _pct_ms(err["trip_s"], 99) if "trip_s" in err else None,
        "read_delay_p99_ms": _pct_ms(err["read_delay_s"], 99) if "read_delay_s" in err else None,
        "tokens": tokens,
        "client_cpu_percent": client["cpu_percent"],
        "client_cpu_us_per_token": 1e6 * client["cpu_s"] / tokens if tokens else None,
        "server_cpu_percent": 100 * server_cpu_s / wall_s,
        "server_cpu_us_per_token": 1e6 * server_cpu_s / tokens if tokens else None,
        # CPU used by anything else on the host while this rate ran (other jobs, the kernel's
        # softirqs not billed to either process): time the two processes could not have.
        "other_cpu_percent": 100 * max(0.0, (host1 - host0) - (on1 - on0) - server_cpu_s) / wall_s,
        # Time the client spent runnable but waiting for a CPU (taken by other processes): on a
        # busy machine this, not the client's own work, is what makes sends late.
        "client_runqueue_wait_s": wait1 - wait0, "client_on_cpu_s": on1 - on0,
        "cpu_pressure_avg10_percent": cpu_pressure(),
    }
    return row, log_offset


def run(quick: bool, rates_rps: tuple[float, ...] | None = None, duration_s: float | None = None) -> dict[str, Any]:
    """Replay at each rate against one stand-in; returns the figures per rate."""
    rates = rates_rps or (QUICK_RATES_RPS if quick else RATES_RPS)
    duration_s = duration_s or (3.0 if quick else 10.0)
    port = _free_port()
    split = split_cpus()
    own_cpus = os.sched_getaffinity(0) if split else None
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "standin-first-tokens.jsonl"
        server = _start_server(port, log_path, split[1] if split else None)
        if split:
            os.sched_setaffinity(0, split[0])
        try:
            rows, offset = [], 0
            for i, rate in enumerate(rates):
                row, offset = _one_rate(f"http://127.0.0.1:{port}", rate, duration_s, i, server, log_path, offset)
                rows.append(row)
        finally:
            if own_cpus:
                os.sched_setaffinity(0, own_cpus)
            server.terminate()
            server.wait(timeout=10)
    meeting = [r["rate_rps"] for r in rows
               if r["send_lag_p99_ms"] < TARGET_MS and r["ttft_error_p99_ms"] < TARGET_MS
               and r["ok"] == r["requests"] == r["server_logged"]]
    return {"server": {"ttft_ms": TTFT_MS, "gap_ms": GAP_MS, "tokens": TOKENS}, "duration_s": duration_s,
            "target_ms": TARGET_MS, "cpus": os.cpu_count(),
            "cpu_split": {"client": sorted(split[0]), "standin": sorted(split[1])} if split else None,
            "judged": "send_lag_p99_ms and ttft_error_p99_ms (client TTFT minus the TTFT the stand-in "
                      "logged it delivered: the load generator's own error)",
            "rates": rows,
            "highest_rate_meeting_targets_rps": max(meeting) if meeting else None}


def render(result: dict[str, Any], console: Console) -> None:
    s = result["server"]
    table = Table(title=f"load generator precision: {s['tokens']} tok/req, server TTFT {s['ttft_ms']:g} ms, "
                        f"gap {s['gap_ms']:g} ms, {result['duration_s']:g} s/rate, {result['cpus']} CPUs")
    for col in ("req/s", "ok", "lag P50/P99 ms", "own err P50/P99", "vs nom P99", "srv late P99",
                "CPU% cli/srv/other", "µs/tok cli/srv"):
        table.add_column(col, justify="right")
    for r in result["rates"]:
        table.add_row(f"{r['rate_rps']:g}", "all" if r["ok"] == r["requests"] else f"{r['ok']}/{r['requests']}",
                      f"{r['send_lag_p50_ms']:.1f}/{r['send_lag_p99_ms']:.1f}",
                      f"{r['ttft_error_p50_ms']:.1f}/{r['ttft_error_p99_ms']:.1f}",
                      f"{r['ttft_error_vs_nominal_p99_ms']:.1f}", f"{r['server_lateness_p99_ms']:.1f}",
                      f"{r['client_cpu_percent']:.0f}/{r['server_cpu_percent']:.0f}/{r['other_cpu_percent']:.0f}",
                      f"{r['client_cpu_us_per_token'] or 0:.0f}/{r['server_cpu_us_per_token'] or 0:.0f}")
    console.print(table)
    best = result["highest_rate_meeting_targets_rps"]
    split = result.get("cpu_split")
    if split:
        console.print(f"client on CPU {split['client']}, stand-in on CPU {split['standin']}")
    console.print("judged: send lag and own TTFT error (client TTFT minus the TTFT the stand-in logged it "
                  "delivered); 'vs nom' adds the stand-in's own lateness ('srv late')")
    console.print(f"highest rate with P99 send lag and P99 own TTFT error under {result['target_ms']:g} ms: "
                  f"{best if best is not None else 'none'} req/s")
