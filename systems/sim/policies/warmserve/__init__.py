"""WarmServe (docs/paper.md s.2) and its ablations as simulator systems.

Modules: `placement` (evict-aware prewarm placement), `load` (window concurrency, KV
reservation), `options` (its options and the ablations'), `policy` (the controller). Registered
names: `warmserve`, `warmserve-no-kv-prewarm`, `warmserve-no-prewarm` (autoscaler only),
`warmserve-no-placement` (round-robin); the window-size ablation is the `window_s` option.
"""

from __future__ import annotations

from systems.sim.policies.warmserve.options import NoKvPrewarmOptions, NoPlacementOptions, NoPrewarmOptions
from systems.sim.policies.warmserve.policy import WarmServe
from systems.sim.registry import register


class WarmServeNoKvPrewarm(WarmServe):
    """Prewarms only on GPUs without an instance: dedicated instances keep all their KV."""

    Options = NoKvPrewarmOptions


class WarmServeNoPrewarm(WarmServe):
    """The autoscaler and router alone: no forecast, no prewarmed weights."""

    Options = NoPrewarmOptions


class WarmServeNoPlacement(WarmServe):
    """Prewarm replicas placed round-robin instead of evict-aware."""

    Options = NoPlacementOptions


register("warmserve", WarmServe)
register("warmserve-no-kv-prewarm", WarmServeNoKvPrewarm)
register("warmserve-no-prewarm", WarmServeNoPrewarm)
register("warmserve-no-placement", WarmServeNoPlacement)

__all__ = ["WarmServe", "WarmServeNoKvPrewarm", "WarmServeNoPrewarm", "WarmServeNoPlacement"]
