"""Evict-aware placement: replica counts, scores, nesting rules and memory (hypothesis)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from systems.sim.policies.warmserve.placement import (
    CHUNK_BYTES,
    Demand,
    Replica,
    align_up,
    best_group,
    candidate_groups,
    nests,
    place,
    place_round_robin,
    replica_counts,
    replica_scores,
    rescore,
)

GB = 2**30


def test_counts_and_scores_match_the_reference_formulas() -> None:
    assert replica_counts(40.0, 100.0, 0) == (2, 2)
    assert replica_counts(40.0, 100.0, 1) == (1, 2)
    assert replica_counts(40.0, 100.0, 5) == (0, 0)
    d = Demand("m", 32 * GB, 2, mean=40.0, peak=100.0, instances=0)
    cold_s = 32 * GB / 2 / (32 * GB)  # 0.5 s per GPU shard over 32 GB/s
    burst = 100.0 / 40.0
    expected = [cold_s, math.exp(-1 / 4) * cold_s, math.exp(-2 / 4) * cold_s * burst, math.exp(-3 / 4) * cold_s * burst]
    assert replica_scores(d) == pytest.approx(expected)


def test_alignment_is_2mb() -> None:
    assert align_up(1) == CHUNK_BYTES and align_up(CHUNK_BYTES) == CHUNK_BYTES
    assert align_up(CHUNK_BYTES + 1) == 2 * CHUNK_BYTES


def test_rescore_keeps_existing_first_and_lists_missing() -> None:
    d = Demand("m", 8 * GB, 1, mean=40.0, peak=40.0, instances=0)  # 2 replicas wanted
    old = [Replica("m", 1, align_up(8 * GB), 0.0, (0,)), Replica("m", 1, align_up(8 * GB), 0.0, (1,)),
           Replica("m", 1, align_up(8 * GB), 0.0, (2,))]
    existing, new = rescore(old, [d])
    assert [r.score for r in existing] == pytest.approx(replica_scores(d) + [0.0])
    assert new == []
    existing, new = rescore(old[:1], [d])
    assert len(new) == 1 and new[0].score == pytest.approx(replica_scores(d)[1])


def test_nesting_rules() -> None:
    a = Replica("a", 2, 1, 1.0, (0, 1))
    assert nests(a, Replica("b", 2, 1, 1.0, (0, 1)))
    assert not nests(a, Replica("b", 2, 1, 1.0, (1, 2)))       # same TP, different set
    assert nests(a, Replica("b", 1, 1, 1.0, (1,)))             # smaller TP inside
    assert nests(a, Replica("b", 4, 1, 1.0, (0, 1, 2, 3)))     # larger TP around
    assert not nests(a, Replica("b", 4, 1, 1.0, (1, 2, 3, 4)))  # larger TP that cuts it
    assert not nests(a, Replica("a", 1, 1, 1.0, (1,)))         # same model twice on a GPU
    assert nests(a, Replica("a", 2, 1, 1.0, (2, 3)))


def test_prefers_groups_the_replica_outranks() -> None:
    new = Replica("n", 1, GB, 5.0)
    placed = [Replica("x", 1, GB, 9.0, (0,)), Replica("y", 1, GB, 1.0, (1,)), Replica("z", 1, GB, 2.0, (2,))]
    groups = candidate_groups(new, [10 * GB] * 3, 8, placed)
    assert best_group(new, groups) == (1,)   # outranks y (1 < 5) and z; y has the lower sum
    low = Replica("n", 1, GB, 0.5)
    assert best_group(low, candidate_groups(low, [10 * GB] * 3, 8, placed)) == (1,)  # least overlapped score


def test_placement_evicts_only_aligned_groups() -> None:
    placed = [Replica("big", 4, GB, 3.0, (0, 1, 2, 3))]
    out = place([Replica("small", 2, GB, 1.0)], [10 * GB] * 8, 8, placed)
    assert out[0].gpus in {(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3), (4, 5), (4, 6), (4, 7), (5, 6), (5, 7), (6, 7)}
    out = place([Replica("small", 2, GB, 5.0)], [10 * GB] * 8, 8, placed)
    assert set(out[0].gpus) <= {4, 5, 6, 7}  # a free group beats overlapping (sum 0 < 3)


MODELS = st.sampled_from([("a", 1), ("b", 1), ("c", 2), ("d", 2), ("e", 4), ("f", 8)])


@st.composite
def scenarios(draw):
    gpus_per_node = draw(st.sampled_from([2, 4, 8]))
    nodes = draw(st.integers(1, 3))
    free = [draw(st.integers(0, 40)) * GB for _ in range(gpus_per_node * nodes)]
    reps = []
    for _ in range(draw(st.integers(1, 14))):
        model, tp = draw(MODELS)
        if tp > gpus_per_node:
            continue
        reps.append(Replica(model, tp, align_up(draw(st.integers(1, 20)) * GB // 2), draw(st.floats(0, 10))))
    reps.sort(key=lambda r: -r.score)
    split = draw(st.integers(0, len(reps)))
    return gpus_per_node, free, reps[:split], reps[split:]


def _check(placed: list[Replica], free: list[int], gpus_per_node: int, *, nesting: bool) -> None:
    used = [0] * len(free)
    for i, r in enumerate(placed):
        assert len(r.gpus) == r.tp == len(set(r.gpus))
        assert len({g // gpus_per_node for g in r.gpus}) == 1, "a replica spans nodes"
        for g in r.gpus:
            used[g] += r.bytes_per_gpu
        for other in placed[:i]:
            if nesting:
                assert nests(r, other), (r, other)
            else:
                assert not (set(r.gpus) & set(other.gpus)) or r.model != other.model
    assert all(u <= f for u, f in zip(used, free)), "placement overfills a GPU"


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_every_placement_nests_and_fits(scenario) -> None:
    gpus_per_node, free, first, second = scenario
    placed = place(first, free, gpus_per_node, [])
    _check(placed, free, gpus_per_node, nesting=True)
    left = list(free)
    for r in placed:
        for g in r.gpus:
            left[g] -= r.bytes_per_gpu
    more = place(second, left, gpus_per_node, placed)
    _check(placed + more, free, gpus_per_node, nesting=True)


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_round_robin_fits_and_never_doubles_a_model(scenario) -> None:
    gpus_per_node, free, first, second = scenario
    out = place_round_robin(first + second, free, gpus_per_node, [])
    _check(out, free, gpus_per_node, nesting=False)


def test_nodes_of_different_sizes() -> None:
    from systems.sim.policies.warmserve.placement import node_ranges

    assert node_ranges(6, [2, 4]) == [range(0, 2), range(2, 6)]
    assert node_ranges(8, 4) == [range(0, 4), range(4, 8)]
    out = place([Replica("a", 4, GB, 1.0)], [10 * GB] * 6, [2, 4], [])
    assert out[0].gpus == (2, 3, 4, 5)   # the 2-GPU node cannot hold a TP4 group


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_lazy_choice_equals_the_full_enumeration(scenario) -> None:
    from systems.sim.policies.warmserve.placement import iter_groups

    gpus_per_node, free, first, second = scenario
    placed = place(first, free, gpus_per_node, [])
    for r in second:
        groups = candidate_groups(r, free, gpus_per_node, placed)
        outrank = [g for g in groups if g[1] < r.score]
        pool = outrank or groups
        expected = min(pool, key=lambda g: g[2])[0] if pool else None
        assert best_group(r, iter_groups(r, free, gpus_per_node, placed)) == expected
