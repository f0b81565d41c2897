"""The cluster simulator: multi-LLM serving in virtual time.

    simulate(workload, cluster, system, *, options=None, seed=0, duration_s=None, debug=False) -> RunResult

`cluster` is a ClusterSpec, a preset name (`paper-16gpu`, `paper-16gpu-h100`, `sim-512gpu`) or a TOML path;
`system` a registered name (`SYSTEMS`); `options` the core's `CoreOptions` (e.g.
`engine_init_s`) plus the system's own `Policy.Options` (options.py); `duration_s` keeps arrivals before
it; `debug` checks memory and engine invariants after every event. Modules: specs (hardware,
models), perf (roofline), engine (each instance's batch scheduler), memory / loading / lifecycle
(GPU and host memory, load flows, instance and prewarm lives), core (time, events, requests, the
cluster API), tables (the output), policy (base class and the typed ClusterAPI), autoscale (the
shared autoscaler), registry (discovery of `policies/`), fidelity (the validation table of published measurements and
its re-simulation, `bench fidelity`), calibrate / calibrate_live / calibrate_table (fits).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from harness.contracts.options import validate
from systems.sim import registry
from systems.sim.core import Simulator
from systems.sim.entities import SimError
from systems.sim.options import CoreOptions, SimOptions
from systems.sim.specs import ClusterSpec, ModelSpec, model_spec, resolve_cluster

if TYPE_CHECKING:
    from harness.contracts.result import RunResult
    from workloads.workload import Workload

__all__ = ["simulate", "SYSTEMS", "SimError", "CoreOptions", "resolve_cluster", "model_spec", "split_options"]


def split_options(system: str, options: Mapping[str, Any] | None, *,
                  file: str | None = None) -> tuple[CoreOptions, SimOptions]:
    """The core's options and the policy's own, each validated by its model (systems/sim/options.py):
    coerced, defaults filled in, bounds checked; an unknown name or a bad value is an InputError
    naming the option (and `file`, when the options came from one)."""
    model = registry.options_model(system)
    values = dict(options or {})
    known = [*CoreOptions.model_fields, *model.model_fields]
    what = f"system {system!r}: "
    core = validate(CoreOptions, {k: v for k, v in values.items() if k in CoreOptions.model_fields},
                    what=what, file=file, known=known)
    mine = validate(model, {k: v for k, v in values.items() if k not in CoreOptions.model_fields},
                    what=what, file=file, known=known)
    return core, mine


def simulate(workload: Workload, cluster: ClusterSpec | str, system: str, *, options: Mapping[str, Any] | None = None,
             seed: int = 0, duration_s: float | None = None, debug: bool = False,
             models: Mapping[str, ModelSpec] | None = None) -> RunResult:
    """Run `system` on `cluster` over `workload` in virtual time; same inputs, same result.

    `models` gives specs for workload model names that are not presets (e.g. `model_spec_from_config`).
    """
    spec = resolve_cluster(cluster)
    core_opts, policy_opts = split_options(system, options)
    policy = registry.create(system, policy_opts)
    started = time.perf_counter()
    # A run allocates millions of long-lived objects (requests, events); the cyclic GC would rescan
    # them over and over (5x slower setup measured), so it is paused for the run and resumed after.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        sim = Simulator(workload, spec, policy, options=core_opts, seed=seed, duration_s=duration_s, debug=debug,
                        models=models)
        result = sim.run()
    finally:
        if gc_was_enabled:
            gc.enable()
    result.manifest.update({
        "kind": "sim",
        "system": system,
        "options": {**core_opts.model_dump(), **policy.options.model_dump()},
        "cluster": spec.name,
        "cluster_gpus": spec.num_gpus,
        "cluster_coefficients": [list(c) for c in spec.coefficients],  # calibrated overrides, if any
        "seed": seed,
        "duration_s": duration_s,
        "wall_s": time.perf_counter() - started,
    })
    return result


def __getattr__(name: str) -> Any:
    if name == "SYSTEMS":
        return registry.names()
    raise AttributeError(name)
