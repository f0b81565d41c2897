"""Live systems: adapters that reach or start real serving endpoints, and `run_live`.

`run_live(workload, system, options, out_dir, *, seed=0) -> RunResult` replays a workload with
the open-loop load generator (harness.loadgen). Systems: openai, vllm, warmserve,
serverlessllm; options are documented in systems.live.options.
"""

from systems.live.options import SYSTEM_OPTIONS
from systems.live.run import EXTRA_REQUEST_COLUMNS, read_metrics, run_live

SYSTEMS: tuple[str, ...] = tuple(SYSTEM_OPTIONS)

__all__ = ["EXTRA_REQUEST_COLUMNS", "SYSTEMS", "read_metrics", "run_live"]
