"""WarmServe's options, and the ablations' (the same with one switch off)."""

from __future__ import annotations

from pydantic import Field

from systems.sim.options import MIN_TICK_S, Count, Flag, Seconds, SimOptions
from systems.sim.policy import BATCH_CAPACITY


class WarmServeOptions(SimOptions):
    """Options of `warmserve`."""

    window_s: Seconds = Field(300.0, ge=1.0, le=86_400.0)
    """Forecast and re-planning window (>= 1 s: a tiny window would mean millions of windows per run)."""
    capacity: Count = Field(BATCH_CAPACITY, ge=1, le=1_000_000)
    """Concurrent requests per instance (reference BATCH_SIZE)."""
    tick_s: Seconds = Field(0.5, ge=MIN_TICK_S, le=3600.0)
    """Controller period (autoscaler, KV reservation, prewarm checks)."""
    warm_engine_init_s: Seconds = Field(0.5, le=86_400.0)
    """Engine start with device + engine prewarming (an assumption); it holds no profile run: the
    reference's workers hand the prewarm pool's free memory to determine_num_available_blocks,
    which then skips profile_run "for faster coldstart" (LLMServe/WarmServe controller/utils.py,
    vllm/worker/worker.py), and with unified memory every engine starts from a prewarm."""
    prewarm: Flag = True
    """Model prewarming (false: autoscaler only)."""
    kv_prewarm: Flag = True
    """Lend unneeded KV of dedicated instances to prewarms."""
    placement: Flag = True
    """Evict-aware placement (false: round-robin)."""
    host_cache: Flag = True
    """Checkpoints of every model pinned in host memory where they fit."""
    replan_s: Seconds = Field(5.0, gt=0.0, le=86_400.0)
    """After cluster changes, re-plan prewarms at most this often."""
    n_recent: Count = Field(10, ge=1, le=10_000)
    """CSP correction windows."""
    warm_start: Flag = True
    """The first window's prewarms are resident when the replay starts (the replay is a slice of a
    running day, as dedicated's instances and serverlessllm's host cache are); false loads them
    from t = 0, a cold cluster."""


class NoKvPrewarmOptions(WarmServeOptions):
    """Options of `warmserve-no-kv-prewarm`."""

    kv_prewarm: Flag = False
    """Off: prewarms only on GPUs without an instance."""


class NoPrewarmOptions(WarmServeOptions):
    """Options of `warmserve-no-prewarm`."""

    prewarm: Flag = False
    """Off: the autoscaler and router alone."""


class NoPlacementOptions(WarmServeOptions):
    """Options of `warmserve-no-placement`."""

    placement: Flag = False
    """Off: prewarm replicas placed round-robin."""
