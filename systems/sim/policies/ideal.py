"""`ideal`: an oracle with warm instances ready for the whole run: no request waits for a start.

Models: from the future workload, each model's peak concurrency (requests busy for prefill plus
decode on an idle instance); at t = 0 it starts warm instances for that peak at `capacity` each,
fills the GPUs left (less batching) and routes to the least loaded. Leaves out: the cost of
holding GPUs; on a too-small cluster it logs a capacity-limited `placement` event.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from systems.sim.policy import Policy
from systems.sim.registry import register
from workloads.concurrency import window_concurrency

if TYPE_CHECKING:
    from systems.sim.entities import Request
    from systems.sim.policy import ClusterAPI


def peak_concurrency(sim: ClusterAPI, model: str) -> float:
    """Peak number of `model`'s requests in service if each ran alone on a warm instance."""
    frame = sim.workload.requests
    rows = frame[frame["model"] == model]
    if rows.empty:
        return 0.0
    perf = sim.perf(model)
    inp = rows["input_tokens"].to_numpy()
    out = rows["output_tokens"].to_numpy()
    prefill = np.array([perf.prefill_s(int(i), 1, float(i) * float(i)) for i in inp])
    decode = np.maximum(out - 1, 0) * perf.decode_s(1, int(inp.mean() + out.mean() / 2))
    arrival = rows["arrival_s"].to_numpy()
    span = max(float(arrival.max()) + float((prefill + decode).max()), 1.0)
    _, peak = window_concurrency(arrival, prefill + decode, 0.0, 1, math.ceil(span / 0.25) * 0.25)
    return float(peak[0])


class Ideal(Policy):
    """Warm capacity for every request from t = 0; routing never parks while an instance exists."""

    #: vLLM's default; never used here: the instances exist before t = 0
    LOADER = "safetensors"

    def setup(self, sim: ClusterAPI) -> None:
        models = sorted(sim.workload_models, key=lambda m: (-sim.model(m).tp, m))
        want = {m: max(1, math.ceil(peak_concurrency(sim, m) / self.capacity)) for m in models}
        have = {m: 0 for m in models}
        limited = False
        while any(have[m] < want[m] for m in models):
            # the model furthest below its need (relative) goes next
            m = min((m for m in models if have[m] < want[m]), key=lambda m: (have[m] / want[m], m))
            group = sim.first_free_group(sim.model(m).tp)
            if group is None:
                limited = True
                want[m] = have[m]
                continue
            sim.start_instance(m, group, already_warm=True)
            have[m] += 1
        peak = {m: max(peak_concurrency(sim, m), 1e-9) for m in models}
        while not limited:   # GPUs left over: more instances, less batching, for the most loaded per instance
            for m in sorted(models, key=lambda m: (-peak[m] / max(have[m], 1), m)):
                group = sim.first_free_group(sim.model(m).tp)
                if group is not None:
                    sim.start_instance(m, group, already_warm=True)
                    have[m] += 1
                    break
            else:
                break
        detail = " ".join(f"{m}={have[m]}" for m in sorted(models))
        sim.log("placement", "", (), detail + (" capacity-limited" if limited else ""),
                fields={**{m: have[m] for m in sorted(models)}, "capacity_limited": limited})

    def on_request(self, sim: ClusterAPI, req: Request) -> None:
        insts = sim.instances(req.model)
        if insts:
            sim.dispatch(req, min(insts, key=lambda i: (i.in_flight, i.id)))


register("ideal", Ideal)
