"""Server and GPU telemetry on the run's timeline: Prometheus `/metrics` scrapes and NVML memory.

Scrapes land in a `metrics` table (`time_s, endpoint, model, name, labels, value`), written as
`metrics.parquet` beside the run's other tables. GPU memory goes to the run's `memory` table:
`free` per GPU, and `process` rows (a serving process's whole use: weights + KV, not split) per
process NVML reports, tagged with the model that process serves where known.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import gevent
from geventhttpclient import HTTPClient

METRIC_COLUMNS: tuple[str, ...] = ("time_s", "endpoint", "model", "name", "labels", "value")

#: Metric families not worth storing every second: the exporter's own process and runtime.
SKIP_PREFIXES: tuple[str, ...] = ("python_", "process_", "http_")

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Samples of a Prometheus text exposition: (name, labels, value); comments skipped."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        labels = dict(_LABEL.findall(m.group(2) or ""))
        samples.append((m.group(1), labels, value))
    return samples


def histogram_buckets(samples: list[tuple[str, dict[str, str], float]], name: str,
                      **match: str) -> dict[float, float]:
    """Cumulative bucket counts `{le: count}` of histogram `name` whose labels include `match`."""
    out: dict[float, float] = {}
    for sname, labels, value in samples:
        if sname != f"{name}_bucket" or any(labels.get(k) != v for k, v in match.items()):
            continue
        le = float(labels["le"]) if labels.get("le") not in (None, "+Inf") else math.inf
        out[le] = out.get(le, 0.0) + value
    return out


def fetch_metrics(url: str, timeout_s: float = 5.0, headers: dict[str, str] | None = None) -> str:
    """GET a `/metrics` page (gevent-friendly) with the endpoint's headers (credentials)."""
    parts = urlsplit(url)
    if parts.hostname is None:  # the client would fail with a TypeError, which the scraper does not expect
        raise OSError("the metrics URL names no host")
    client = HTTPClient(parts.hostname, parts.port, connection_timeout=timeout_s,
                        network_timeout=timeout_s, ssl=parts.scheme == "https")
    try:
        resp = client.get(parts.path or "/metrics", headers=headers or {})
        body = resp.read()
        if resp.status_code != 200:
            raise OSError(f"HTTP {resp.status_code} from {url}")
        return body.decode("utf-8", "replace")
    finally:
        client.close()


@dataclass
class Scraper:
    """Scrapes each target every `period_s` into `rows`; failures are counted, never fatal."""

    targets: Callable[[], dict[str, tuple]]  # label -> (metrics URL, model[, headers])
    now: Callable[[], float]
    period_s: float = 1.0
    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)
    _greenlet: Any = None

    def scrape_once(self) -> None:
        for endpoint, (url, model, *rest) in list(self.targets().items()):
            t = self.now()
            try:
                text = fetch_metrics(url, headers=rest[0] if rest else None)
            except (OSError, gevent.Timeout) as exc:
                self.failures[endpoint] = self.failures.get(endpoint, 0) + 1
                del exc
                continue
            for name, labels, value in parse_prometheus(text):
                if name.startswith(SKIP_PREFIXES):
                    continue
                label_text = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
                self.rows.append({"time_s": t, "endpoint": endpoint, "model": model, "name": name,
                                  "labels": label_text, "value": value})

    def _loop(self) -> None:
        while True:
            gevent.sleep(self.period_s)
            self.scrape_once()

    def start(self) -> None:
        """Scrape every `period_s` from now on (call `scrape_once` first for a baseline)."""
        self._greenlet = gevent.spawn(self._loop)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None


class GpuMemory:
    """NVML sampler; `available` is False on a machine without a GPU (or without a driver)."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.rows: list[dict[str, Any]] = []
        self.reason = ""
        self._greenlet: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self.count = pynvml.nvmlDeviceGetCount()
            self.available = self.count > 0
            if not self.available:
                self.reason = "not measured (no GPU)"
        except Exception as exc:  # noqa: BLE001 - NVML raises its own error types, or is absent
            self._nvml, self.count, self.available = None, 0, False
            self.reason = "not measured (no GPU)"
            self.detail = f"{type(exc).__name__}: {exc}"

    def sample(self, time_s: float, pid_models: dict[int, str]) -> None:
        nvml = self._nvml
        for gpu in range(self.count):
            handle = nvml.nvmlDeviceGetHandleByIndex(gpu)
            info = nvml.nvmlDeviceGetMemoryInfo(handle)
            self.rows.append({"time_s": time_s, "node": self.node, "gpu": gpu, "category": "free",
                              "model": "", "bytes": int(info.free)})
            for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                used = proc.usedGpuMemory
                if used is None:  # NVML could not say (MIG, some containers): no row, never a made-up 0
                    continue
                self.rows.append({"time_s": time_s, "node": self.node, "gpu": gpu,
                                  "category": "process", "model": pid_models.get(proc.pid, f"pid {proc.pid}"),
                                  "bytes": int(used)})

    def start(self, now: Callable[[], float], pid_models: Callable[[], dict[int, str]],
              period_s: float) -> None:
        if not self.available:
            return

        def loop() -> None:
            while True:
                self.sample(now(), pid_models())
                gevent.sleep(period_s)

        self._greenlet = gevent.spawn(loop)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None
