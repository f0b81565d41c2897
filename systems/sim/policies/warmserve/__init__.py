"""WarmServe (PAPER.md s.2) and its ablations as simulator systems.

Modules: `forecast` (CSP), `placement` (evict-aware prewarm placement), `load` (window
concurrency, KV reservation), `policy` (the controller). Registered names: `warmserve`,
`warmserve-no-kv-prewarm`, `warmserve-no-prewarm` (autoscaler only), `warmserve-no-placement`
(round-robin); the window-size ablation is the `window_s` option.
"""

from __future__ import annotations

from systems.sim.policies.warmserve.policy import WarmServe
from systems.sim.registry import register


class WarmServeNoKvPrewarm(WarmServe):
    """Prewarms only on GPUs without an instance: dedicated instances keep all their KV."""

    OPTIONS = {**WarmServe.OPTIONS, "kv_prewarm": False}


class WarmServeNoPrewarm(WarmServe):
    """The autoscaler and router alone: no forecast, no prewarmed weights."""

    OPTIONS = {**WarmServe.OPTIONS, "prewarm": False}


class WarmServeNoPlacement(WarmServe):
    """Prewarm replicas placed round-robin instead of evict-aware."""

    OPTIONS = {**WarmServe.OPTIONS, "placement": False}


register("warmserve", WarmServe)
register("warmserve-no-kv-prewarm", WarmServeNoKvPrewarm)
register("warmserve-no-prewarm", WarmServeNoPrewarm)
register("warmserve-no-placement", WarmServeNoPlacement)

__all__ = ["WarmServe", "WarmServeNoKvPrewarm", "WarmServeNoPrewarm", "WarmServeNoPlacement"]
