"""The simulator's output: the RunResult tables (harness/contracts/result.py) built from a finished run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from operator import attrgetter
from typing import Any

import numpy as np
import pandas as pd

from harness.contracts.result import EVENT_COLUMNS, EVENT_FIELDS, MEMORY_COLUMNS, REQUEST_COLUMNS, RunResult
from systems.sim.entities import Request
from systems.sim.memory import MemoryRow

#: an event's typed payload (the events table's EVENT_FIELDS column, as JSON)
EventFields = Mapping[str, int | float | str | bool]
#: one row of the events table: EVENT_COLUMNS (time_s, kind, model, node, gpus, detail), then its fields
EventRow = tuple[float, str, str, int, str, str, EventFields | None]


def format_fields(fields: EventFields) -> str:
    """`fields` as the `detail` text people read: `k=v` separated by spaces, times to the microsecond."""
    return " ".join(f"{k}={v:.6f}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items())


def run_result(reqs: list[Request], frame: pd.DataFrame, events: list[EventRow], memory: list[MemoryRow],
               manifest: dict[str, Any]) -> RunResult:
    """The run's tables from its requests (in `frame`'s row order), events and memory samples."""
    n = len(reqs)
    cols: tuple[tuple[Any, ...], ...] = tuple(zip(*map(attrgetter(
        "first_token_s", "end_s", "load_s", "prefill_s", "error", "start_kind", "inst"), reqs))) if n else ((),) * 7
    first_t, end_t, load_t, prefill_t, err_t, kind, insts = cols
    end = np.array(end_t, dtype=np.float64)
    first = np.array(first_t, dtype=np.float64)
    load = np.array(load_t, dtype=np.float64)
    prefill = np.array(prefill_t, dtype=np.float64)
    err = np.array(err_t, dtype=object)
    status = np.where(np.isnan(end), "unfinished", "ok").astype(object)
    status[err != ""] = "error"
    arrival = frame["arrival_s"].to_numpy(np.float64)
    output = frame["output_tokens"].to_numpy(np.int64)
    received = np.where(status == "ok", output, 0).astype(np.int64)
    queue = (first - arrival) - np.nan_to_num(load) - prefill
    requests = pd.DataFrame({
        "request_id": frame["request_id"].to_numpy(np.int64),
        "model": pd.Series(frame["model"].astype(str).to_numpy(dtype=object), dtype=object),
        "scheduled_s": arrival,
        "sent_s": arrival.copy(),
        "first_token_s": first,
        "end_s": end,
        "input_tokens": frame["input_tokens"].to_numpy(np.int64),
        "output_tokens": output,
        "received_tokens": received,
        "status": pd.Series(status, dtype=object),
        "error": pd.Series(err, dtype=object),
        "start_kind": pd.Series(np.array(kind, dtype=object), dtype=object),
        "queue_s": queue,
        "load_s": load,
        "prefill_s": prefill,
    }, columns=list(REQUEST_COLUMNS))
    requests["instance"] = np.array([i.id if i is not None else -1 for i in insts], dtype=np.int64)
    requests["node"] = np.array([i.node if i is not None else -1 for i in insts], dtype=np.int64)
    events_table = pd.DataFrame(events, columns=[*EVENT_COLUMNS, EVENT_FIELDS])
    events_table[EVENT_FIELDS] = [json.dumps(f) if f else "{}" for f in events_table[EVENT_FIELDS]]
    if len(events_table):
        events_table = events_table.astype({"time_s": "float64", "node": "int64"})
    memory_table = pd.DataFrame(memory, columns=list(MEMORY_COLUMNS))
    if len(memory_table):
        memory_table = memory_table.astype({"time_s": "float64", "node": "int64", "gpu": "int64", "bytes": "int64"})
    return RunResult(requests=requests, events=events_table, memory=memory_table, manifest=manifest)
