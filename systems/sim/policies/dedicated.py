"""`dedicated`: every model gets fixed, already-warm instances at t = 0, GPUs split by expected
load; no scaling. The upper bound on warm capacity (and the cost a static split pays)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.contracts.errors import WarmbenchError
from systems.sim.policy import Policy
from systems.sim.registry import register

if TYPE_CHECKING:
    from systems.sim.policy import ClusterAPI


def expected_concurrency(sim: ClusterAPI, model: str) -> float:
    """Mean requests in service of `model` if each ran alone: sum of (prefill + decodes) / span."""
    frame = sim.workload.requests
    rows = frame[frame["model"] == model]
    if rows.empty:
        return 0.0
    perf = sim.perf(model)
    inp = float(rows["input_tokens"].mean())
    out = float(rows["output_tokens"].mean())
    per_req = perf.prefill_s(int(inp), 1, inp * inp) + max(out - 1, 0) * perf.decode_s(1, int(inp + out / 2))
    span = max(sim.duration_s, 1.0)
    return len(rows) * per_req / span


class Dedicated(Policy):
    """Route to the least-loaded instance of the model; its engine queues the rest."""

    capacity = 1 << 30
    #: vLLM's default; never used here: the instances exist before t = 0
    LOADER = "safetensors"

    def setup(self, sim: ClusterAPI) -> None:
        models = sorted(sim.workload.models, key=lambda m: (-sim.model(m).tp, m))
        demand = {m: expected_concurrency(sim, m) for m in models}
        count = {m: 0 for m in models}
        for m in models:  # one each, widest TP first
            group = sim.first_free_group(sim.model(m).tp)
            if group is None:
                raise WarmbenchError(f"dedicated: {sim.cluster.name} has too few GPUs for one instance of every model "
                                     f"({len(models)} models); use a bigger cluster or fewer models")
            sim.start_instance(m, group, already_warm=True)
            count[m] = 1
        while True:  # then the GPUs left, to the model with most expected load per instance
            for m in sorted(models, key=lambda m: (-demand[m] / count[m], m)):
                group = sim.first_free_group(sim.model(m).tp)
                if group is not None:
                    sim.start_instance(m, group, already_warm=True)
                    count[m] += 1
                    break
            else:
                break
        sim.log("placement", fields={m: count[m] for m in sorted(models)})


register("dedicated", Dedicated)
