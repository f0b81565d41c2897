"""`run_live`: stand up (or reach) a system, replay a workload against it, write the run.

The run directory gets `requests.jsonl` while the replay runs (flushed at least every second)
and `manifest.json` with status `incomplete` (written through harness.store's one manifest writer);
at the end the Parquet tables, `metrics.parquet` (Prometheus scrapes) and the final manifest
(status `complete`, or `incomplete` with `interrupted: true` after Ctrl-C; a second Ctrl-C cuts
the drain of in-flight requests short).
"""

from __future__ import annotations

import math
import os
import platform
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gevent
import pandas as pd
from gevent.event import Event

from harness.contracts.errors import WarmbenchError
from harness.contracts.live import EventLog, LiveSystem
from harness.contracts.redact import redact_frame
from harness.contracts.result import EVENT_COLUMNS, MEMORY_COLUMNS, REQUEST_COLUMNS, RunResult
from harness.loadgen import Clock, ReplayConfig, replay
from harness.loadgen.bodies import probe_request
from harness.loadgen.recorder import JsonlRecorder
from harness.loadgen.replay import ReplayStats
from harness.loadgen.telemetry import METRIC_COLUMNS, GpuMemory, Scraper
from harness.metrics import send_lag_stats_s
from harness.store import new_manifest, write_manifest, write_run
from systems.live import registry
from workloads.workload import Workload

#: Extra request columns of live runs: gaps between streamed tokens, the URL that served it,
#: and the prompt length the server reported (usage.prompt_tokens; None if not reported).
#: t=0 of the replay is this long after the system is up, so that setting up the schedule and
#: the telemetry greenlets never makes the first sends late.
START_LEAD_S = 0.3

#: `streamed_tokens`: token events seen in the stream (None without a stream); `claimed_tokens`:
#: the server's own count (usage / trailer; None if none); `tokens_mismatch`: the claim is
#: contradicted by the stream (see harness.loadgen.protocols.trusted_tokens: `received_tokens`,
#: and so TPOT, then use the streamed count; the record stays `ok`); `bad_events`: malformed
#: stream events (not JSON, unexpected shape), counted rather than skipped silently.
#: `sent_input_tokens` / `sent_output_tokens`: the lengths asked of the server after its caps
#: (e.g. WarmServe's 2048-token context; None if the request was never built): below
#: `input_tokens` / `output_tokens` when a length was capped (see length_warnings).
EXTRA_REQUEST_COLUMNS: tuple[str, ...] = ("itl_s", "endpoint", "server_input_tokens", "streamed_tokens",
                                          "claimed_tokens", "tokens_mismatch", "bad_events",
                                          "sent_input_tokens", "sent_output_tokens")


def schedule(workload: Workload, time_scale: float) -> pd.DataFrame:
    """The workload's requests with `scheduled_s` = arrival_s x time_scale."""
    frame = workload.requests.copy()
    frame["scheduled_s"] = frame["arrival_s"].astype(float) * time_scale
    return frame


def send_lag_ms(requests: pd.DataFrame) -> dict[str, float | None]:
    """`send_lag_p50_ms` ... `send_lag_max_ms` (harness.metrics.send_lag_stats_s in ms); None when
    no request was sent."""
    return {f"send_lag_{k}_ms": (v * 1000 if math.isfinite(v) else None)
            for k, v in send_lag_stats_s(requests).items()}


def client_health(stats: ReplayStats, requests: pd.DataFrame, threshold_ms: float) -> dict[str, Any]:
    """Send-lag percentiles of `requests` and the generator's CPU; `overloaded` when P99 lag > threshold."""
    lag = send_lag_ms(requests)
    p99 = lag["send_lag_p99_ms"]
    return {**lag,
            "cpu_s": stats.cpu_s, "wall_s": stats.wall_s,
            "cpu_percent": 100 * stats.cpu_s / stats.wall_s if stats.wall_s > 0 else None,
            "overload_threshold_ms": threshold_ms,
            "overloaded": bool(p99 is not None and p99 > threshold_ms)}


def requests_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Records -> the requests table (REQUEST_COLUMNS + live extras), sorted by request id."""
    columns = [*REQUEST_COLUMNS, *EXTRA_REQUEST_COLUMNS]
    frame = pd.DataFrame(records, columns=columns)
    for col in ("scheduled_s", "sent_s", "first_token_s", "end_s", "queue_s", "load_s", "prefill_s"):
        frame[col] = frame[col].astype(float)
    for col in ("request_id", "input_tokens", "output_tokens", "received_tokens"):
        frame[col] = frame[col].astype("int64")
    for col in ("server_input_tokens", "streamed_tokens", "claimed_tokens", "sent_input_tokens",
                "sent_output_tokens"):
        frame[col] = frame[col].astype("Int64")
    frame["bad_events"] = frame["bad_events"].fillna(0).astype("int64")
    frame["tokens_mismatch"] = frame["tokens_mismatch"].fillna(False).astype(bool)
    return frame.sort_values("request_id", kind="stable").reset_index(drop=True)


def stream_warnings(requests: pd.DataFrame) -> list[str]:
    """What the streams contradicted: token counts the server claimed, malformed events."""
    out = []
    mismatch = int(requests["tokens_mismatch"].sum())
    if mismatch:
        out.append(f"{mismatch} requests: the server's token count contradicts its stream "
                   "(tokens_mismatch; TPOT uses the streamed count)")
    bad = int(requests["bad_events"].sum())
    if bad:
        out.append(f"{bad} malformed stream events in {int((requests['bad_events'] > 0).sum())} requests (bad_events)")
    return out


def length_warnings(requests: pd.DataFrame, system: str) -> list[str]:
    """Lengths that were not what the workload asked: capped before sending, or (ServerlessLLM,
    no stream to check) generated in a different number than asked."""
    out = []
    sent_in, sent_out = requests["sent_input_tokens"], requests["sent_output_tokens"]
    capped_in = int((sent_in.notna() & (sent_in < requests["input_tokens"])).sum())
    capped_out = int((sent_out.notna() & (sent_out < requests["output_tokens"])).sum())
    if capped_in or capped_out:
        out.append(f"lengths capped to the server's limits (sent_input_tokens / sent_output_tokens): "
                   f"{capped_in} prompts and {capped_out} outputs shorter than the workload asked")
    if system == "serverlessllm":
        ok = requests[(requests["status"] == "ok") & sent_out.notna()]
        off = int((ok["received_tokens"] != ok["sent_output_tokens"]).sum())
        if off:
            out.append(f"{off} requests: the server generated another number of tokens than asked "
                       "(usage.completion_tokens != sent_output_tokens: this server version does not "
                       "pin the output length)")
    return out


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("warmbench", "locust", "gevent", "geventhttpclient", "pandas"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


#: Sends a schedule through a live system: (schedule, system, recorder, clock, config, stop) -> stats.
Replayer = Callable[[pd.DataFrame, LiveSystem, JsonlRecorder, Clock, ReplayConfig, Event], ReplayStats]


def run_live(workload: Workload, system: str, options: dict | None, out_dir: Path, *,
             seed: int = 0, stop: Event | None = None,
             on_record: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    """Replay `workload` against a live `system` (openai | vllm | warmserve | serverlessllm).

    `options`: see systems.live.options (client options and each system's). Returns the RunResult also written to `out_dir`.
    Ctrl-C (SIGINT, main thread) or setting `stop` ends sending, drains for `drain_s`, and
    leaves a readable run whose manifest says `incomplete`. `on_record` sees each finished
    request's record (e.g. to feed a live view).
    """
    return execute(workload, system, options, out_dir, seed=seed, stop=stop, replayer=replay,
                   on_record=on_record)


def execute(workload: Workload, system: str, options: dict | None, out_dir: Path, *, seed: int,
            stop: Event | None, replayer: Replayer, start_lead_s: float = 0.0,
            extra_manifest: dict[str, Any] | None = None,
            on_record: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    """Everything around one replay: system up, telemetry, records, manifest, tables, teardown."""
    client, sys_opts = registry.parse_options(system, options)
    out = Path(out_dir)
    check_out_dir(out)
    jsonl = out / "requests.jsonl"
    if jsonl.exists():
        raise WarmbenchError(f"{out} already holds a run (requests.jsonl); choose a new --out")
    if not len(workload):
        raise WarmbenchError("the workload has no requests to replay")
    stop = stop or Event()
    node = socket.gethostname()
    gpu = GpuMemory(node)
    events = EventLog(node=node)
    live = registry.build(system, sys_opts, registry.Context(
        models=workload.models, events=events, run_dir=out, gpu_present=gpu.available,
        served_names=client.served_names, headers=client.request_headers(), probe_request=probe_request))
    try:
        out.mkdir(parents=True, exist_ok=True)  # only once every input has been checked
    except OSError as exc:
        raise WarmbenchError(f"--out {out}: cannot create it ({exc.strerror or exc})") from None
    run_options = {"client": client.model_dump(), "system": sys_opts.model_dump()}
    manifest = new_manifest(
        kind="live", system=system, seed=seed, workload=workload,
        config={"system": system, "options": run_options, "seed": seed},
        options=run_options, n_requests=len(workload), models=workload.models,
        platform=platform.platform(), argv=sys.argv,
        started_at=datetime.now(UTC).isoformat(),
        gpu_memory="measured (NVML)" if gpu.available else gpu.reason,
        **(extra_manifest or {}),
    )
    manifest["versions"] = {**manifest["versions"], **_versions()}
    manifest["git_revision"] = manifest["code"]["revision"]  # schema 1 readers
    write_manifest(out, manifest)
    main_thread = threading.current_thread() is threading.main_thread()
    old_handler = signal.getsignal(signal.SIGINT) if main_thread else None
    interrupts: list[float] = []
    cut = Event()  # set by a second Ctrl-C: stop waiting for in-flight requests

    def on_sigint() -> None:
        interrupts.append(time.time())
        (stop if len(interrupts) == 1 else cut).set()

    sig = gevent.signal_handler(signal.SIGINT, on_sigint) if main_thread else None
    recorder = JsonlRecorder(jsonl, on_record=on_record)
    scraper: Scraper | None = None
    stats: ReplayStats | None = None
    clock = Clock()
    try:
        _start_unless_stopped(live, stop)
        manifest["system_detail"] = live.describe()
        clock = Clock(time.perf_counter() + max(START_LEAD_S, start_lead_s))
        scraper = Scraper(live.metrics_targets, clock.now, client.scrape_period_s)
        scraper.scrape_once()  # baseline counters, before any request is sent
        late_s = time.perf_counter() + 0.05 - clock.t0
        if late_s > 0:  # the baseline scrape ate the lead: move t=0 (nothing has happened yet)
            clock.t0 += late_s
            for row in scraper.rows:
                row["time_s"] -= late_s
        # t=0 of the run on this host's perf_counter (CLOCK_MONOTONIC on Linux, one clock for
        # every process): lets a server's own log be put on the run's timeline.
        manifest["run_clock"] = {"t0_perf_counter_s": clock.t0,
                                 "clock": time.get_clock_info("perf_counter").implementation}
        scraper.start()
        gpu.start(clock.now, live.gpu_pids, client.scrape_period_s)
        config = ReplayConfig(timeout_s=client.timeout_s, connect_timeout_s=client.connect_timeout_s,
                              drain_s=client.drain_s, max_connections=client.max_connections, seed=seed,
                              cut=cut)
        stats = replayer(schedule(workload, client.time_scale), live, recorder, clock, config, stop)
        scraper.stop()
        scraper.scrape_once()  # final counters, after the last request
    except BaseException as exc:
        if interrupts or isinstance(exc, KeyboardInterrupt):  # Ctrl-C: not a failure of the system
            manifest.update(status="incomplete", interrupted=True, error=f"{type(exc).__name__}: {exc}"[:500])
            write_manifest(out, manifest, requests_table(recorder.records))
            raise KeyboardInterrupt from exc
        manifest.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:500])
        write_manifest(out, manifest, requests_table(recorder.records))
        raise
    finally:
        if scraper is not None:
            scraper.stop()
        gpu.stop()
        recorder.close()
        live.stop()
        if sig is not None:
            sig.cancel()
            signal.signal(signal.SIGINT, old_handler)
    incomplete = stats is None or stats.stopped_early
    requests = requests_table(recorder.records)
    manifest.update(
        status="incomplete" if incomplete else "complete", interrupted=bool(interrupts),
        ended_at=datetime.now(UTC).isoformat(),
        client=client_health(stats, requests, client.overload_threshold_ms),
        scrape_failures=scraper.failures if scraper else {},
        metrics_table="metrics.parquet",
    )
    if manifest["client"]["overloaded"]:
        manifest.setdefault("warnings", []).append(
            f"client overloaded: P99 send lag {manifest['client']['send_lag_p99_ms']:.1f} ms > "
            f"{client.overload_threshold_ms:g} ms; latencies include the client's own delay")
    if not gpu.available:
        manifest.setdefault("warnings", []).append(f"GPU memory: {gpu.reason}")
    manifest.setdefault("warnings", []).extend(stream_warnings(requests) + length_warnings(requests, system))
    result = RunResult(
        requests=requests,
        events=pd.DataFrame(events.table_rows(clock.t0), columns=list(EVENT_COLUMNS)),
        memory=pd.DataFrame(gpu.rows, columns=list(MEMORY_COLUMNS)),
        manifest=manifest,
    )
    write_run(result, out)
    redact_frame(pd.DataFrame(scraper.rows if scraper else [], columns=list(METRIC_COLUMNS))).to_parquet(
        out / "metrics.parquet", index=False)
    return result


def check_out_dir(out: Path) -> None:
    """A run directory that can be created (or is an empty-enough directory): not a file, under a
    writable folder; checked before anything is created."""
    try:
        if out.exists() and not out.is_dir():
            raise WarmbenchError(f"--out {out} is a file, not a directory")
        probe = out
        while not probe.exists():
            probe = probe.parent
    except OSError as exc:  # a name too long, a loop of links...
        raise WarmbenchError(f"--out {out}: cannot create it ({exc.strerror or exc})") from None
    if not probe.is_dir():
        raise WarmbenchError(f"--out {out}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise WarmbenchError(f"--out {out}: {probe} is not writable")


def _start_unless_stopped(live: LiveSystem, stop: Event) -> None:
    """Bring the system up; Ctrl-C while servers start aborts the start (and the run)."""
    starter = gevent.spawn(live.start)
    while not starter.ready():
        if stop.wait(0.2):
            starter.kill()
            raise WarmbenchError("interrupted while the system was starting; nothing was sent")
    starter.get()


def served_model_dirs(manifest: dict[str, Any]) -> dict[str, str]:
    """model -> the directory the vllm adapter served it from, as `execute` recorded it in the
    manifest (`options.system.models`); empty for other systems."""
    return dict(((manifest.get("options") or {}).get("system") or {}).get("models") or {})


def read_metrics(run_dir: Path) -> pd.DataFrame:
    """The Prometheus scrapes of a live run (empty table if none)."""
    path = Path(run_dir) / "metrics.parquet"
    return pd.read_parquet(path) if path.exists() else pd.DataFrame(columns=list(METRIC_COLUMNS))


__all__ = ["EXTRA_REQUEST_COLUMNS", "read_metrics", "run_live"]
