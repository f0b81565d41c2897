"""The live run: stand up (or reach) a live system from systems.live's registry, replay a workload
with the load generator, record telemetry and write the run (`run_live`); the locust
master/worker runners (harness.live.distributed) and the web UI (harness.live.webui)."""

from harness.live.run import EXTRA_REQUEST_COLUMNS, read_metrics, run_live

__all__ = ["EXTRA_REQUEST_COLUMNS", "read_metrics", "run_live"]
