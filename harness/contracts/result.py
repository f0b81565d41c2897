"""RunResult: what every run (simulated or live) produces, with one schema for both."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

#: One row per request. Times are seconds from the run start (the workload's t=0).
#: `scheduled_s` is when the request was due; `sent_s` when the client sent it. Times that
#: were never reached (no first token, never ended) are NaN, never 0.
#: `input_tokens`/`output_tokens` are what was asked; `received_tokens` what came back.
#: `status`: ok | error | timeout | cancelled | unfinished. `start_kind`: warm | prewarmed |
#: cold | queued | "" (unknown). `queue_s`/`load_s`/`prefill_s`: TTFT split where known (NaN else).
REQUEST_COLUMNS: tuple[str, ...] = (
    "request_id", "model", "scheduled_s", "sent_s", "first_token_s", "end_s",
    "input_tokens", "output_tokens", "received_tokens", "status", "error", "start_kind",
    "queue_s", "load_s", "prefill_s",
)
#: Optional request columns: `itl_s` (list of inter-token gaps, live runs), `instance`, `node`;
#: live runs also `endpoint`, `server_input_tokens`, `streamed_tokens`, `claimed_tokens`,
#: `tokens_mismatch`, `bad_events` (harness.live.run.EXTRA_REQUEST_COLUMNS; older runs lack them).

#: Control-plane timeline. `kind`: instance_start, instance_ready, instance_stop, load_begin,
#: load_end, init_done, prewarm, evict, scale_up, scale_down, forecast, ... `gpus`: "0,1" style list.
#: `detail` is for people. Simulated runs add the optional column EVENT_FIELDS: the event's typed
#: payload as a JSON object (read it with `event_fields`, never by parsing `detail`); e.g. load_end
#: has `id load_s tier loader`, init_done `init_s` and its parts (`process_s fixed_s profile_s
#: graph_capture_s`; systems/sim/startup.py), instance_ready `id kind startup_s`.
EVENT_COLUMNS: tuple[str, ...] = ("time_s", "kind", "model", "node", "gpus", "detail")
EVENT_FIELDS = "fields"

#: GPU memory samples at each change. `category`: weights | kv | prewarmed | free.
MEMORY_COLUMNS: tuple[str, ...] = ("time_s", "node", "gpu", "category", "model", "bytes")

STATUSES: tuple[str, ...] = ("ok", "error", "timeout", "cancelled", "unfinished")
START_KINDS: tuple[str, ...] = ("warm", "prewarmed", "cold", "queued", "")


def empty_table(columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


def event_fields(events: pd.DataFrame) -> pd.DataFrame:
    """The typed payloads of `events` (its EVENT_FIELDS column), one column per field name and one
    row per event (same index); a field an event lacks is NaN. No column: an empty payload each."""
    raw = events[EVENT_FIELDS] if EVENT_FIELDS in events.columns else pd.Series("{}", index=events.index)
    return pd.DataFrame([json.loads(v) if v else {} for v in raw], index=events.index)


@dataclass
class RunResult:
    """Three tables and a manifest (config, versions, git revision, host, trace sha256, seed, ...)."""

    requests: pd.DataFrame
    events: pd.DataFrame = field(default_factory=lambda: empty_table(EVENT_COLUMNS))
    memory: pd.DataFrame = field(default_factory=lambda: empty_table(MEMORY_COLUMNS))
    manifest: dict[str, Any] = field(default_factory=dict)
