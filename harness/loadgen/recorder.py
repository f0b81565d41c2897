"""Append-only request log: one JSON line per finished request, flushed at least every second."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent

from harness.contracts.redact import redact_text


def _clean(value: Any) -> Any:
    """JSON for one field: NaN -> null, strings with credentials masked (an error may quote a URL)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str):
        return redact_text(value)
    return value


class JsonlRecorder:
    """Keeps every record in memory and appends it to `path`; a greenlet flushes twice a second.

    `on_record` (optional) sees each record as it is written, e.g. to forward it to a locust
    master.
    """

    def __init__(self, path: Path | None, flush_period_s: float = 0.5,
                 on_record: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.records: list[dict[str, Any]] = []
        self.on_record = on_record
        self._fh = path.open("a", buffering=1 << 16) if path is not None else None
        self._dirty = False
        self._flusher = gevent.spawn(self._flush_loop, flush_period_s) if self._fh else None

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self._fh is not None:
            self._fh.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
            self._dirty = True
        if self.on_record is not None:
            self.on_record(record)

    def _flush_loop(self, period_s: float) -> None:
        while True:
            gevent.sleep(period_s)
            self.flush()

    def flush(self) -> None:
        if self._fh is not None and self._dirty:
            self._fh.flush()
            self._dirty = False

    def close(self) -> None:
        if self._flusher is not None:
            self._flusher.kill()
        self.flush()
        if self._fh is not None:
            self._fh.close()
            self._fh = None
