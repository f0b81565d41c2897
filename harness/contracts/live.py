"""What every live system adapter provides, and the event log they share with the run."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.contracts.endpoint import Endpoint, Unavailable


@dataclass
class EventLog:
    """Control-plane events stamped on perf_counter; turned into run times at the end."""

    node: str = field(default_factory=socket.gethostname)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, kind: str, model: str = "", detail: str = "", gpus: str = "") -> None:
        self.rows.append({"perf_s": time.perf_counter(), "kind": kind, "model": model,
                          "node": self.node, "gpus": gpus, "detail": detail})

    def table_rows(self, t0: float) -> list[dict[str, Any]]:
        return [{"time_s": r["perf_s"] - t0, **{k: v for k, v in r.items() if k != "perf_s"}}
                for r in self.rows]


class LiveSystem:
    """Base adapter: fixed endpoints, nothing to start. Subclasses that manage servers override
    `start`/`stop` and may block in `acquire` (cold start)."""

    name = "live"

    def __init__(self, endpoints: dict[str, Endpoint], events: EventLog, run_dir: Path,
                 metrics: bool = True) -> None:
        self.endpoints, self.events, self.run_dir, self.metrics = endpoints, events, run_dir, metrics

    def start(self) -> None:
        """Bring the system up before the replay's t=0 (no-op for existing endpoints)."""

    def stop(self) -> None:
        """Tear down whatever `start` or `acquire` started."""

    def acquire(self, model: str) -> tuple[Endpoint, str, float]:
        ep = self.endpoints.get(model)
        if ep is None:
            raise Unavailable(f"no endpoint for model {model!r}")
        return ep, "", 0.0

    def release(self, model: str) -> None:
        pass

    def metrics_targets(self) -> dict[str, tuple[str, str, dict[str, str]]]:
        """label -> (Prometheus URL, model, headers) for every endpoint up now; one per distinct URL."""
        if not self.metrics:
            return {}
        out: dict[str, tuple[str, str, dict[str, str]]] = {}
        for model, ep in self.endpoints.items():
            url = ep.url.rstrip("/") + "/metrics"
            if url in {u for u, _, _ in out.values()}:
                continue
            out[model] = (url, model, dict(ep.headers))
        return out

    def gpu_pids(self) -> dict[int, str]:
        """Process id -> model, for NVML per-process memory."""
        return {}

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the system."""
        return {"endpoints": {m: ep.url for m, ep in self.endpoints.items()}}
