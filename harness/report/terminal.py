"""The lines `sim` and `replay` print about one run, read from the run's summary (summary.json).

The terminal shows the figures the record holds, computed once by harness.metrics (TTFT over every
request that got a first token, not over `ok` ones only), so the screen and summary.json never
disagree. What was not measured reads "n/a".
"""

from __future__ import annotations

import math
from typing import Any

from harness.metrics import ALL_MODELS, START_ORDER, from_jsonable
from harness.report.table import fmt


def run_summary(summary: dict[str, Any]) -> dict[str, float]:
    """The all-models metrics of a summary as `store.read_summary` returns it (None read as NaN)."""
    out: dict[str, float] = from_jsonable((summary.get("models") or {}).get(ALL_MODELS) or {})
    return out


def _at(s: dict[str, float], key: str) -> str:
    return fmt(key, s.get(key, math.nan))


def ttft_line(s: dict[str, float]) -> str:
    """TTFT mean / P50 / P99 (every request with a first token, from its scheduled time)."""
    return (f"TTFT mean {_at(s, 'mean_ttft_s')}, P50 {_at(s, 'p50_ttft_s')}, P99 {_at(s, 'p99_ttft_s')} "
            "(requests with a first token, from the scheduled time)")


def split_line(s: dict[str, float]) -> str:
    """Mean queue / load / prefill (where the system reports them) and the start kinds."""
    kinds = ", ".join(f"{k} {_at(s, 'start_' + k)}" for k in (*START_ORDER, "unknown") if s.get("start_" + k))
    return (f"split (mean): queue {_at(s, 'mean_queue_s')}, load {_at(s, 'mean_load_s')}, "
            f"prefill {_at(s, 'mean_prefill_s')}; start kinds: {kinds or 'none'}")
