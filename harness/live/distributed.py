"""Replay across machines with locust's own master/worker runners and messages.

The master brings the system up (endpoints must be static: openai, warmserve, serverlessllm,
or vllm in dedicated mode), waits for `expect_workers` workers, deals the requests out round
robin, and sends each worker its shard, the endpoints and a common start time (wall clock:
keep the machines NTP-synced). Each worker replays its shard open loop from that instant and
streams its records back in batches; the master appends them to its `requests.jsonl` as they
come, scrapes telemetry, and writes one run. A worker that disappears leaves its missing
requests as `unfinished` records, so every request is still accounted for.

Importing this module imports locust, which monkey-patches the process for gevent: it is only
imported by `replay --master` / `--worker`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import locust  # noqa: F401  (monkey-patches; must come before the rest)

# isort: split
import gevent
import numpy as np
import pandas as pd
from gevent.event import Event
from locust.env import Environment
from locust.rpc import Message
from locust.runners import STATE_MISSING, MasterRunner, WorkerRunner

from harness.contracts.endpoint import Endpoint
from harness.contracts.errors import WarmbenchError
from harness.contracts.files import write_json
from harness.contracts.live import LiveSystem
from harness.contracts.result import RunResult
from harness.live.run import execute, send_lag_ms
from harness.loadgen import Clock, ReplayConfig, StaticRouter, replay
from harness.loadgen.client import wall_to_perf
from harness.loadgen.recorder import JsonlRecorder
from harness.loadgen.replay import ReplayStats, new_record, shard
from workloads.workload import Workload

MSG_SHARD = "warmbench_shard"
MSG_RECORDS = "warmbench_records"
MSG_DONE = "warmbench_done"
MSG_STOP = "warmbench_stop"
BATCH_PERIOD_S = 0.5
SHARD_COLUMNS = ("request_id", "model", "scheduled_s", "input_tokens", "output_tokens")


def _plain(value: Any) -> Any:
    """msgpack-safe: numpy scalars to Python."""
    return value.item() if isinstance(value, np.generic) else value


class _MasterReplayer:
    """A `Replayer` that hands the schedule to locust workers and merges what they send back."""

    def __init__(self, runner: MasterRunner, expect_workers: int, start_delay_s: float,
                 wait_workers_s: float) -> None:
        self.runner, self.expect_workers = runner, expect_workers
        self.start_delay_s, self.wait_workers_s = start_delay_s, wait_workers_s
        self.workers: dict[str, dict[str, Any]] = {}
        self._done = Event()
        runner.register_message(MSG_RECORDS, self._on_records)
        runner.register_message(MSG_DONE, self._on_done)
        self.recorder: JsonlRecorder | None = None  # both set by __call__, before any shard is sent
        self.pending: set[int] = set()

    def _on_records(self, msg: Message, **_kw: Any) -> None:
        if self.recorder is None:  # no replay started: none of these requests is ours
            return
        for record in msg.data["records"]:
            if record["request_id"] in self.pending:
                self.pending.discard(record["request_id"])
                self.recorder.write(record)

    def _on_done(self, msg: Message, **_kw: Any) -> None:
        self.workers[msg.node_id].update(msg.data["stats"], done=True)
        if all(w.get("done") for w in self.workers.values()):
            self._done.set()

    def wait_for_workers(self) -> list[str]:
        deadline = time.monotonic() + self.wait_workers_s
        while time.monotonic() < deadline:
            ready = [c.id for c in self.runner.clients.all]
            if len(ready) >= self.expect_workers:
                return ready[: self.expect_workers]
            gevent.sleep(0.2)
        raise WarmbenchError(f"only {len(self.runner.clients.all)} of {self.expect_workers} locust workers "
                             f"connected within {self.wait_workers_s:.0f} s")

    def __call__(self, schedule: pd.DataFrame, live: LiveSystem, recorder: JsonlRecorder, clock: Clock,
                 config: ReplayConfig, stop: Event) -> ReplayStats:
        self.recorder = recorder
        self.pending = set(int(i) for i in schedule["request_id"])
        worker_ids = self.wait_for_workers()
        start_epoch = time.time() + (clock.t0 - time.perf_counter())
        endpoints = {m: dataclasses.asdict(ep) for m, ep in live.endpoints.items()}
        for worker_id, part in zip(worker_ids, shard(schedule, len(worker_ids))):
            rows = [{c: _plain(v) for c, v in zip(SHARD_COLUMNS, r)}
                    for r in part[list(SHARD_COLUMNS)].itertuples(index=False)]
            self.workers[worker_id] = {"requests": len(rows)}
            self.runner.send_message(MSG_SHARD, {"rows": rows, "endpoints": endpoints, "start_epoch": start_epoch,
                                                 "config": {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                                                            if f.name != "cut"}}, client_id=worker_id)
        wall0 = time.perf_counter()
        stopped = False
        while not self._done.is_set():
            if stop.is_set() and not stopped:
                stopped = True
                for worker_id in worker_ids:
                    self.runner.send_message(MSG_STOP, {}, client_id=worker_id)
            lost = [w for w in worker_ids if not self.workers[w].get("done")
                    and getattr(self.runner.clients.get(w), "state", STATE_MISSING) == STATE_MISSING]
            if lost:
                for w in lost:
                    self.workers[w].update(done=True, lost=True)
                if all(w.get("done") for w in self.workers.values()):
                    break
            self._done.wait(0.5)
        for request_id in sorted(self.pending):  # a lost worker's requests, or never sent
            row = schedule.loc[schedule["request_id"] == request_id].iloc[0]
            record = new_record(row)
            record["error"] = "not reported: its locust worker was lost"
            recorder.write(record)
        return ReplayStats(cpu_s=sum(w.get("cpu_s", 0.0) for w in self.workers.values()),
                           wall_s=max((w.get("wall_s", 0.0) for w in self.workers.values()), default=0.0)
                           or time.perf_counter() - wall0,
                           stopped_early=stopped or any(w.get("lost") for w in self.workers.values()),
                           n_unsent=sum(w.get("n_unsent", 0) for w in self.workers.values()))


def run_master(workload: Workload, system: str, options: dict, out_dir: Path, *, seed: int = 0,
               bind_host: str = "*", port: int = 5557, expect_workers: int = 1, start_delay_s: float = 3.0,
               wait_workers_s: float = 300.0) -> RunResult:
    """The master side of `replay --master`: one merged run in `out_dir`."""
    if system == "vllm" and options.get("mode", "dedicated") != "dedicated":
        raise WarmbenchError("a distributed replay needs static endpoints: use vllm mode 'dedicated'")
    env = Environment(user_classes=[])
    runner = env.create_master_runner(master_bind_host=bind_host, master_bind_port=port)
    replayer = _MasterReplayer(runner, expect_workers, start_delay_s, wait_workers_s)
    try:
        result = execute(workload, system, options, out_dir, seed=seed, stop=None, replayer=replayer,
                         start_lead_s=start_delay_s,
                         extra_manifest={"distributed": {"master_port": port, "expect_workers": expect_workers}})
        result.manifest["distributed"]["workers"] = replayer.workers
        write_json(Path(out_dir) / "manifest.json", result.manifest)
        return result
    finally:
        runner.quit()
        runner.server.close(linger=0)


def run_worker(master_host: str, master_port: int) -> int:
    """The worker side of `replay --worker`: replay the shards the master sends until it quits."""
    env = Environment(user_classes=[])
    runner = env.create_worker_runner(master_host, master_port)
    stop = Event()
    jobs: list[gevent.Greenlet] = []

    def on_shard(msg: Message, **_kw: Any) -> None:
        jobs.append(gevent.spawn(_replay_shard, runner, msg.data, stop))

    runner.register_message(MSG_SHARD, on_shard)
    runner.register_message(MSG_STOP, lambda msg, **_kw: stop.set())
    try:
        runner.greenlet.join()
    finally:
        gevent.joinall(jobs, timeout=60)
        runner.client.close(linger=0)
    return 0


def _replay_shard(runner: WorkerRunner, data: dict[str, Any], stop: Event) -> None:
    """Replay one shard on the common clock, sending records back every BATCH_PERIOD_S."""
    rows = pd.DataFrame(data["rows"], columns=list(SHARD_COLUMNS))
    endpoints = {m: Endpoint(**fields) for m, fields in data["endpoints"].items()}
    clock = Clock(wall_to_perf(data["start_epoch"]))
    batch: list[dict[str, Any]] = []
    recorder = JsonlRecorder(None, on_record=batch.append)

    def flush() -> None:
        if batch:
            runner.send_message(MSG_RECORDS, {"records": list(batch)})
            batch.clear()

    def flusher() -> None:
        while True:
            gevent.sleep(BATCH_PERIOD_S)
            flush()

    pump = gevent.spawn(flusher)
    try:
        stats = replay(rows, StaticRouter(endpoints), recorder, clock, ReplayConfig(**data["config"]), stop)
    finally:
        pump.kill()
        flush()
    runner.send_message(MSG_DONE, {"stats": {"cpu_s": stats.cpu_s, "wall_s": stats.wall_s,
                                             "n_unsent": stats.n_unsent,
                                             "send_lag_p99_ms": send_lag_ms(pd.DataFrame(recorder.records))
                                             ["send_lag_p99_ms"]}})


__all__ = ["run_master", "run_worker"]

