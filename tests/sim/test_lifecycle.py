"""Instance start (load tiers, fair link sharing, engine init), prewarm, eviction, KV resizing, memory."""

import pytest

from harness.contracts.result import event_fields
from systems.sim.core import SimError
from systems.sim.perf import PerfModel
from systems.sim.policy import Policy
from systems.sim.specs import GPUS, MODELS
from tests.sim.util import run_policy, small_cluster, workload

SEVEN_B = MODELS["llama-2-7b"].weight_bytes
SSD, PCIE, INIT = 6e9, 32e9, 2.0


def prefill(inp=512, model="llama-2-7b", tp=1):
    return PerfModel(MODELS[model], GPUS["A100-80GB"], tp).prefill_s(inp, 1, inp * inp)


class Script(Policy):
    """Runs `fn(sim)` at setup; routes to any accepting instance of the model."""

    capacity = 1 << 30

    def __init__(self, fn):
        super().__init__({})
        self.fn = fn
        self.prewarmed = []

    def setup(self, sim):
        self.fn(sim)

    def on_prewarm_done(self, sim, pw):
        self.prewarmed.append((sim.now_s, pw))


def test_cold_start_from_ssd_is_bytes_over_bandwidth_plus_init_plus_prefill():
    wl = workload([0.0])
    _, res = run_policy(wl, Script(lambda sim: sim.start_instance("llama-2-7b", [0])), engine_init_s=INIT)
    row = res.requests.iloc[0]
    load = SEVEN_B / SSD
    assert row["start_kind"] == "cold"
    assert row["first_token_s"] == pytest.approx(load + INIT + prefill(), rel=1e-9)
    assert row["load_s"] == pytest.approx(load + INIT, rel=1e-9)
    kinds = list(res.events["kind"])
    assert kinds.index("instance_start") < kinds.index("load_begin") < kinds.index("load_end") < kinds.index("instance_ready")


def test_host_memory_loads_over_pcie():
    def fn(sim):
        sim.host_put(0, "llama-2-7b")
        sim.start_instance("llama-2-7b", [0])
    _, res = run_policy(workload([0.0]), Script(fn), engine_init_s=INIT)
    assert res.requests["first_token_s"].iloc[0] == pytest.approx(SEVEN_B / PCIE + INIT + prefill(), rel=1e-9)


def test_concurrent_ssd_loads_share_the_node_link_fairly():
    def fn(sim):
        sim.start_instance("llama-2-7b", [0])
        sim.start_instance("llama-2-7b#1", [1])
    wl = workload([0.0, 0.0], model=["llama-2-7b", "llama-2-7b#1"])
    _, res = run_policy(wl, Script(fn), engine_init_s=INIT)
    ready = res.events[res.events["kind"] == "load_end"]["time_s"].to_numpy()
    assert ready == pytest.approx([2 * SEVEN_B / SSD] * 2, rel=1e-9)


def test_tp_group_loads_shards_in_parallel_over_the_shared_ssd():
    _, res = run_policy(workload([0.0], model="llama-2-70b"),
                        Script(lambda sim: sim.start_instance("llama-2-70b", [0, 1, 2, 3])), engine_init_s=INIT)
    end = res.events[res.events["kind"] == "load_end"]["time_s"].iloc[0]
    # four shards share one 6 GB/s SSD: the whole model at SSD speed (PCIe is not the bottleneck)
    assert end == pytest.approx(MODELS["llama-2-70b"].shard_bytes(4) * 4 / SSD, rel=1e-9)


def test_prewarmed_start_costs_engine_init_only():
    holder = {}

    def fn(sim):
        holder["pw"] = sim.prewarm("llama-2-7b", [0])

    class Later(Script):
        def on_request(self, sim, req):
            assert holder["pw"].done and holder["pw"].progress == 1.0
            sim.dispatch(req, sim.start_instance("llama-2-7b", [0]))

    t = SEVEN_B / SSD + 1.0
    _, res = run_policy(workload([t]), Later(fn), engine_init_s=INIT)
    row = res.requests.iloc[0]
    assert row["start_kind"] == "prewarmed"
    assert row["first_token_s"] - t == pytest.approx(INIT + prefill(), rel=1e-9)
    assert "prewarm_done" in set(res.events["kind"])


def test_a_prewarm_resident_before_the_run_starts_in_engine_init_at_t0_and_only_at_t0():
    class AtZero(Script):
        def on_request(self, sim, req):
            with pytest.raises(SimError, match="only at t = 0"):
                sim.prewarm("llama-2-7b#1", [1], already_loaded=True)
            sim.dispatch(req, sim.start_instance("llama-2-7b", [0]))

    policy = AtZero(lambda sim: sim.prewarm("llama-2-7b", [0], already_loaded=True))
    _, res = run_policy(workload([0.25]), policy, engine_init_s=INIT)
    row = res.requests.iloc[0]
    assert row["start_kind"] == "prewarmed"
    assert row["first_token_s"] - 0.25 == pytest.approx(INIT + prefill(), rel=1e-9)
    assert [t for t, _ in policy.prewarmed] == []   # no load ran, so no on_prewarm_done callback
    ev = res.events
    assert (event_fields(ev[ev["kind"] == "prewarm"])["source"] == "before-run").all()
    assert (ev.loc[ev["kind"] == "prewarm_done", "time_s"] == 0.0).all()
    assert "load_begin" not in set(ev["kind"])


def test_partly_prewarmed_start_loads_only_the_remaining_bytes():
    class Later(Script):
        def on_request(self, sim, req):
            pw = sim.prewarms("llama-2-7b")[0]
            assert 0.4 < pw.progress < 0.6
            sim.dispatch(req, sim.start_instance("llama-2-7b", [0]))

    half = SEVEN_B / SSD / 2
    _, res = run_policy(workload([half]), Later(lambda sim: sim.prewarm("llama-2-7b", [0])), engine_init_s=INIT)
    row = res.requests.iloc[0]
    assert row["start_kind"] == "prewarmed"
    assert row["first_token_s"] == pytest.approx(2 * half + INIT + prefill(), rel=1e-9)


def test_evict_frees_memory_and_prewarm_memory_is_categorised():
    class Evict(Script):
        def on_request(self, sim, req):
            pw = sim.prewarms("llama-2-7b")[0]
            assert sim.used_bytes(3, "prewarmed") == SEVEN_B
            sim.evict(pw)
            assert sim.used_bytes(3) == 0 and sim.free_bytes(3) == sim.gpus[3].capacity_bytes
            sim.dispatch(req, sim.start_instance("llama-2-7b", [0]))

    _, res = run_policy(workload([1.0]), Evict(lambda sim: sim.prewarm("llama-2-7b", [3])))
    mem = res.memory
    assert {"prewarmed", "weights", "kv", "free"} <= set(mem["category"])
    assert set(res.events["kind"]) >= {"prewarm", "evict"}
    # one snapshot per GPU per instant: GPU 3 at t = 1 is all free again
    at1 = mem[(mem["time_s"] == 1.0) & (mem["gpu"] == 3)]
    assert list(at1["category"]) == ["free"]


def test_memory_over_capacity_is_refused():
    def fn(sim):
        sim.start_instance("llama-2-7b", [0], already_warm=True)   # KV takes the rest up to 90%
        sim.prewarm("llama-2-13b", [0, 1])
    with pytest.raises(SimError, match="bytes free"):
        run_policy(workload([0.0]), Script(fn))


def test_kv_can_shrink_to_what_is_used_and_grow_into_free_memory():
    seen = {}

    class Resize(Script):
        def on_request(self, sim, req):
            inst = sim.instances("llama-2-7b")[0]
            sim.dispatch(req, inst)
            seen["shrunk"] = sim.set_kv_bytes(inst, 0)          # clamps to what the request will hold
            assert seen["shrunk"] >= sim.kv_needed_bytes(inst) > 0
            pw = sim.prewarm("llama-2-13b", [0, 1])             # lend the freed space
            with pytest.raises(SimError):
                sim.set_kv_bytes(inst, 70 << 30)
            sim.evict(pw)
            seen["grown"] = sim.set_kv_bytes(inst, 40 << 30)

    _, res = run_policy(workload([0.0]), Resize(lambda sim: sim.start_instance("llama-2-7b", [0], already_warm=True)))
    assert res.requests["status"].iloc[0] == "ok"
    assert seen["grown"] == 40 << 30


def test_stop_with_keep_weights_leaves_a_prewarm_and_drain_waits_for_requests():
    class Stopper(Script):
        def on_request(self, sim, req):
            inst = sim.instances(req.model)[0]
            sim.dispatch(req, inst)
            sim.stop_instance(inst, drain=True, keep_weights=True)
            assert not inst.accepting and inst.state == "ready"

        def on_stopped(self, sim, inst):
            assert sim.prewarms("llama-2-7b")[0].done
            self.stopped_at = sim.now_s

    pol = Stopper(lambda sim: sim.start_instance("llama-2-7b", [0], already_warm=True))
    _, res = run_policy(workload([1.0]), pol)
    assert res.requests["status"].iloc[0] == "ok"
    assert pol.stopped_at == pytest.approx(res.requests["end_s"].iloc[0])
    last = res.memory[res.memory["gpu"] == 0].groupby("category")["time_s"].max()
    assert "prewarmed" in last.index


def test_stop_without_drain_returns_requests_to_the_parked_queue():
    class Bounce(Script):
        def on_request(self, sim, req):
            inst = sim.instances(req.model)[0]
            sim.dispatch(req, inst)
            if len(sim.instances(req.model)) == 1:
                sim.stop_instance(inst, drain=False)
                assert list(sim.parked(req.model)) == [req]
                sim.dispatch(req, sim.start_instance(req.model, [1]))

    _, res = run_policy(workload([0.5]), Bounce(lambda sim: sim.start_instance("llama-2-7b", [0], already_warm=True)))
    assert res.requests["status"].iloc[0] == "ok" and res.requests["start_kind"].iloc[0] == "cold"


def test_memory_samples_never_exceed_capacity():
    def fn(sim):
        for g in range(0, 8, 2):
            sim.prewarm("llama-2-13b", [g, g + 1])
        sim.start_instance("llama-2-7b", [0], kv_bytes_per_gpu=10 << 30)
    _, res = run_policy(workload([0.0, 1.0]), Script(fn), cluster=small_cluster())
    mem = res.memory
    cap = GPUS["A100-80GB"].memory_bytes
    used = mem[mem["category"] != "free"].groupby(["time_s", "gpu"])["bytes"].sum()
    assert used.max() <= cap
    assert (mem[mem["category"] == "free"]["bytes"] >= 0).all()
