"""MuxServe placement: demand order, even load, memory fit, compute and KV shares."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from systems.sim.policies.muxserve import MuxModel, compute_shares, kv_split, place_models, split_groups

GB = 2**30


def test_groups_cut_nodes() -> None:
    assert split_groups([8, 8], 4) == [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11), (12, 13, 14, 15)]
    assert split_groups([3], 2) == [(0, 1), (2,)]


def test_greedy_keeps_load_even() -> None:
    models = [MuxModel(n, 10 * GB, 1, 1, d) for n, d in [("a", 8.0), ("b", 5.0), ("c", 4.0), ("d", 1.0)]]
    groups, unplaced = place_models(models, [(0,), (1,)], 70 * GB)
    assert not unplaced
    # a -> g0 (8); b -> g1 (5); c -> g1 (9 would be worse than 8+4=12? no: max(8, 9)=9 < max(12, 5)=12)
    assert groups[0].models == ("a", "d") and groups[1].models == ("b", "c")


def test_memory_and_tp_limits() -> None:
    big = MuxModel("big", 140 * GB, 1, 4, 10.0)
    small = MuxModel("small", 14 * GB, 1, 1, 1.0)
    groups, unplaced = place_models([big, small], [(0,), (1, 2, 3, 4)], 70 * GB)
    assert groups[1].models[0] == "big" and not unplaced
    groups, unplaced = place_models([big], [(0, 1)], 70 * GB)
    assert unplaced == ["big"]


def test_shares() -> None:
    ms = [MuxModel("a", 1, 512, 1, 3.0), MuxModel("b", 1, 256, 1, 1.0)]
    assert compute_shares(ms) == pytest.approx({"a": 0.75, "b": 0.25})
    assert compute_shares([MuxModel("a", 1, 1, 1, 1.0), MuxModel("b", 1, 1, 1, 0.0)])["b"] > 0
    kv = kv_split(ms, 1, 768 * 100 + 5)
    assert kv == {"a": 512 * 100, "b": 256 * 100}  # same 100 tokens each


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 80), st.sampled_from([1, 2, 4]), st.floats(0, 100)), min_size=1, max_size=12),
       st.sampled_from([1, 2, 4, 8]))
def test_placement_fits_memory(specs, group_size) -> None:
    models = [MuxModel(f"m{i}", w * GB, 1, tp, d) for i, (w, tp, d) in enumerate(specs)]
    groups, unplaced = place_models(models, split_groups([8, 8], group_size), 70 * GB)
    placed = [n for g in groups for n in g.models]
    assert sorted(placed + unplaced) == sorted(m.name for m in models)
    by_name = {m.name: m for m in models}
    for g in groups:
        assert sum(-(-by_name[n].weight_bytes // len(g.gpus)) for n in g.models) <= 63 * GB
        assert all(by_name[n].min_tp <= len(g.gpus) for n in g.models)


def test_default_group_size_uses_every_gpu() -> None:
    from systems.sim.policies.muxserve import default_group_size

    assert default_group_size(4, 4, [8, 8], [32, 32, 40, 64]) == 4      # the paper's four: one group each
    assert default_group_size(2, 1, [8], [32, 32]) == 4                 # two 7B on 8 GPUs: 2 groups of 4
    assert default_group_size(2, 1, [8], [28, 32]) == 4                 # 28 heads split over 4, not 8
    assert default_group_size(16, 1, [8], [32] * 16) == 1               # more models than GPUs: share
