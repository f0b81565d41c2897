"""The canonical workload: one table of requests every reader produces and every system consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness.contracts.errors import WarmbenchError

#: Columns every workload has, in this order (an optional `session_id` may follow).
REQUEST_COLUMNS: tuple[str, ...] = ("request_id", "arrival_s", "model", "input_tokens", "output_tokens")

#: Per-model load history for forecasting systems. `window_start_s` is relative to the
#: workload start (negative: before the replay); windows are `meta["window_s"]` long.
HISTORY_COLUMNS: tuple[str, ...] = ("model", "window_start_s", "mean_concurrency", "peak_concurrency")


@dataclass(frozen=True)
class Workload:
    """Requests sorted by arrival, plus where they came from.

    `requests`: columns REQUEST_COLUMNS (`request_id` int64 unique, `arrival_s` float64 seconds
    from the workload start, `model` str, token counts int64 >= 0), sorted by `arrival_s`.
    `meta`: source, source sha256, every parameter that produced it, rows read / kept and
    drops by reason. `history`: optional HISTORY_COLUMNS table for forecasters.
    """

    requests: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    history: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        missing = [c for c in REQUEST_COLUMNS if c not in self.requests.columns]
        if missing:
            raise WarmbenchError(f"workload is missing columns {missing}; it has {list(self.requests.columns)}")
        if self.history is not None:
            hmissing = [c for c in HISTORY_COLUMNS if c not in self.history.columns]
            if hmissing:
                raise WarmbenchError(f"workload history is missing columns {hmissing}")

    @property
    def models(self) -> list[str]:
        """Model names in order of first appearance."""
        return list(pd.unique(self.requests["model"]))

    @property
    def duration_s(self) -> float:
        """Arrival time of the last request (0 for an empty workload)."""
        return float(self.requests["arrival_s"].max()) if len(self.requests) else 0.0

    def __len__(self) -> int:
        return len(self.requests)


def canonical_frame(arrival_s: np.ndarray, model: np.ndarray | list[str] | str,
                    input_tokens: np.ndarray, output_tokens: np.ndarray) -> pd.DataFrame:
    """Build a sorted request table with fresh ids 0..n-1 in arrival order (stable sort)."""
    n = len(arrival_s)
    frame = pd.DataFrame({
        "arrival_s": np.asarray(arrival_s, dtype=np.float64),
        "model": np.full(n, model, dtype=object) if isinstance(model, str) else np.asarray(model, dtype=object),
        "input_tokens": np.asarray(input_tokens, dtype=np.int64),
        "output_tokens": np.asarray(output_tokens, dtype=np.int64),
    })
    frame = frame.sort_values("arrival_s", kind="stable").reset_index(drop=True)
    frame.insert(0, "request_id", np.arange(n, dtype=np.int64))
    return frame
