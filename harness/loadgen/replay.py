"""Open-loop replay: each request gets its own greenlet at its scheduled time, whatever the
server is doing, so slow responses never delay later sends (no coordinated omission).

Times are seconds on the run clock (`Clock.now()`: 0 = the workload's t=0). A stop event
ends sending; in-flight requests then have `drain_s` to finish before they are cancelled, and
requests never sent are recorded as `unfinished`: every request is accounted for.
"""

from __future__ import annotations

import gc
import math
import resource
import time
from dataclasses import dataclass
from typing import Any, Protocol

import gevent
import pandas as pd
from gevent.event import Event
from gevent.pool import Group

from harness.contracts.endpoint import Endpoint, Unavailable
from harness.loadgen.bodies import build_request
from harness.loadgen.client import ClientPool, send
from harness.loadgen.http import sleep_at_priority
from harness.loadgen.recorder import JsonlRecorder

NAN = math.nan
# Each request's greenlet is started this long before its time and waits on its own timer, at a
# priority above stream reads: when it falls due it runs first in that loop iteration, not after
# a spawn queued behind every token read of the iteration.
LEAD_S = 0.05
SEND_PRIORITY = 1


class Clock:
    """Run time in seconds from `t0` (a perf_counter instant)."""

    def __init__(self, t0: float | None = None) -> None:
        self.t0 = time.perf_counter() if t0 is None else t0

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def at(self, perf_s: float) -> float:
        return perf_s - self.t0


class Router(Protocol):
    """What a live system gives the load generator: an endpoint per request."""

    def acquire(self, model: str) -> tuple[Endpoint, str, float]:
        """(endpoint, start_kind, seconds spent waiting for an instance). May block (cold start)."""

    def release(self, model: str) -> None:
        """The request that acquired `model` has ended."""


@dataclass
class ReplayConfig:
    """Client settings. `timeout_s` bounds a whole request; `drain_s` the wait after a stop."""

    timeout_s: float = 600.0
    connect_timeout_s: float = 10.0
    drain_s: float = 30.0
    max_connections: int = 8192
    seed: int = 0
    #: Set (e.g. by a second Ctrl-C) to end the drain at once: in-flight requests are cancelled.
    cut: Event | None = None


@dataclass
class ReplayStats:
    """How busy the client was and whether it stopped early (its send lag is in the records:
    harness.metrics.send_lag_stats_s)."""

    cpu_s: float
    wall_s: float
    stopped_early: bool
    n_unsent: int


def new_record(row: Any) -> dict[str, Any]:
    return {
        "request_id": int(row.request_id), "model": str(row.model),
        "scheduled_s": float(row.scheduled_s), "sent_s": NAN, "first_token_s": NAN, "end_s": NAN,
        "input_tokens": int(row.input_tokens), "output_tokens": int(row.output_tokens),
        "received_tokens": 0, "status": "unfinished", "error": "", "start_kind": "",
        "queue_s": NAN, "load_s": NAN, "prefill_s": NAN, "itl_s": [], "endpoint": "",
        "server_input_tokens": None, "streamed_tokens": None, "claimed_tokens": None,
        "tokens_mismatch": False, "bad_events": 0, "sent_input_tokens": None, "sent_output_tokens": None,
    }


def _sleep_until(clock: Clock, t_s: float) -> None:
    """Wait for run time `t_s` on a high-priority timer (re-checked: a timer may fire early)."""
    while (delay := t_s - clock.now()) > 0:
        sleep_at_priority(delay, SEND_PRIORITY)


def _one(pool: ClientPool, router: Router, record: dict[str, Any], clock: Clock,
         recorder: JsonlRecorder, config: ReplayConfig, stop: Event) -> None:
    # The body is built in the lead time for the endpoint the router names for this model (a
    # 1k-token id prompt costs ~0.1 ms to draw and encode); rebuilt if acquire answers another.
    guess = getattr(router, "endpoints", {}).get(record["model"])
    prepared = None
    if guess is not None:
        try:
            prepared = (guess, *build_request(guess, record["request_id"], record["input_tokens"],
                                              record["output_tokens"], config.seed))
        except Exception:  # noqa: BLE001 - send() builds it again and records what fails
            prepared = None
    try:
        _sleep_until(clock, record["scheduled_s"])
    except gevent.GreenletExit:
        stop.set()  # killed before its time: never sent
    if stop.is_set():
        record["error"] = "not sent: the replay was stopped"
        recorder.write(record)
        return
    record["sent_s"] = clock.now()
    acquired = False
    try:
        try:
            ep, record["start_kind"], wait_s = router.acquire(record["model"])
            acquired = True
        except Unavailable as exc:
            record["end_s"] = clock.now()
            record["status"], record["error"] = "error", f"no instance: {exc}"[:300]
            return
        except gevent.GreenletExit:
            record["end_s"] = clock.now()
            record["status"], record["error"] = "cancelled", "cancelled while waiting for an instance"
            return
        except Exception as exc:  # noqa: BLE001 - a broken adapter must still leave a record
            record["end_s"] = clock.now()
            record["status"], record["error"] = "error", f"no instance: {type(exc).__name__}: {exc}"[:300]
            return
        if wait_s > 0:
            record["load_s"] = wait_s
        record["endpoint"] = ep.url
        remaining_s = config.timeout_s - (clock.now() - record["sent_s"])
        send(pool, ep, record, clock.now, config.seed, max(remaining_s, 0.001),
             prepared[1:] if prepared is not None and prepared[0] == ep else None)
    finally:
        if acquired:
            router.release(record["model"])
        recorder.write(record)


def _drain(group: Group, drain_s: float, cut: Event | None) -> None:
    """Wait up to `drain_s` for in-flight requests, or until `cut` is set."""
    if cut is None:
        group.join(timeout=drain_s)
        return
    deadline = time.perf_counter() + drain_s
    while len(group) and not cut.is_set():
        left_s = deadline - time.perf_counter()
        if left_s <= 0:
            break
        group.join(timeout=min(left_s, 0.1))


def replay(requests: pd.DataFrame, router: Router, recorder: JsonlRecorder, clock: Clock,
           config: ReplayConfig, stop: Event | None = None) -> ReplayStats:
    """Send every request of `requests` (columns request_id, model, scheduled_s, input_tokens,
    output_tokens; sorted by scheduled_s) at its time; returns when all have ended."""
    stop = stop or Event()
    pool = ClientPool(config.timeout_s, config.connect_timeout_s, config.max_connections)
    group = Group()
    rows = list(requests.sort_values("scheduled_s", kind="stable").itertuples(index=False))
    usage0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    sent = 0  # requests handed to a greenlet
    # What exists before the replay (modules, pandas, the schedule) is not garbage: frozen, a
    # full collection during the replay walks only the replay's own objects, not a ~80 ms pause
    # of the event loop that makes every send due meanwhile late.
    gc.freeze()
    try:
        for row in rows:
            delay = float(row.scheduled_s) - LEAD_S - clock.now()
            if delay > 0 and stop.wait(delay):
                break
            if stop.is_set():
                break
            record = new_record(row)
            group.spawn(_one, pool, router, record, clock, recorder, config, stop)
            sent += 1  # handed to its greenlet, which records it whether it sends or not
        if stop.is_set():
            _drain(group, config.drain_s, config.cut)
            group.kill(block=True, timeout=5)
        else:
            group.join()
        for row in rows[sent:]:
            record = new_record(row)
            record["error"] = "not sent: the replay was stopped"
            recorder.write(record)
    finally:
        pool.close()
        gc.unfreeze()
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    n_unsent = sum(1 for r in recorder.records if math.isnan(r["sent_s"]))
    return ReplayStats(
        cpu_s=(usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime),
        wall_s=time.perf_counter() - wall0, stopped_early=stop.is_set(), n_unsent=n_unsent)


class StaticRouter:
    """Fixed endpoints, one per model (several models may share one URL); always warm."""

    def __init__(self, endpoints: dict[str, Endpoint]) -> None:
        self.endpoints = endpoints

    def acquire(self, model: str) -> tuple[Endpoint, str, float]:
        ep = self.endpoints.get(model)
        if ep is None:
            raise Unavailable(f"no endpoint configured for model {model!r}")
        return ep, "", 0.0

    def release(self, model: str) -> None:
        pass


def shard(schedule: pd.DataFrame, n_workers: int) -> list[pd.DataFrame]:
    """Round robin in arrival order: each of `n_workers` gets every n-th request (equal rates)."""
    ordered = schedule.sort_values("scheduled_s", kind="stable").reset_index(drop=True)
    return [ordered.iloc[i::n_workers] for i in range(n_workers)]
