"""RunResult: what every run (simulated or live) produces, with one schema for both."""

from __future__ import annotations

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
#: `tokens_mismatch`, `bad_events` (systems.live.run.EXTRA_REQUEST_COLUMNS; older runs lack them).

#: Control-plane timeline. `kind`: instance_start, instance_ready, instance_stop, load_begin,
#: load_end, init_done, prewarm, evict, scale_up, scale_down, forecast, ... `gpus`: "0,1" style list.
#: Simulated starts: load_end's detail has `load_s= tier= loader=`, init_done's `init_s=` and its
#: parts (`process_s= fixed_s= profile_s= graph_capture_s=`; systems/sim/startup.py).
EVENT_COLUMNS: tuple[str, ...] = ("time_s", "kind", "model", "node", "gpus", "detail")

#: GPU memory samples at each change. `category`: weights | kv | prewarmed | free.
MEMORY_COLUMNS: tuple[str, ...] = ("time_s", "node", "gpu", "category", "model", "bytes")

STATUSES: tuple[str, ...] = ("ok", "error", "timeout", "cancelled", "unfinished")
START_KINDS: tuple[str, ...] = ("warm", "prewarmed", "cold", "queued", "")


def empty_table(columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


@dataclass
class RunResult:
    """Three tables and a manifest (config, versions, git revision, host, trace sha256, seed, ...)."""

    requests: pd.DataFrame
    events: pd.DataFrame = field(default_factory=lambda: empty_table(EVENT_COLUMNS))
    memory: pd.DataFrame = field(default_factory=lambda: empty_table(MEMORY_COLUMNS))
    manifest: dict[str, Any] = field(default_factory=dict)
