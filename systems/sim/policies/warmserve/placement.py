"""Evict-aware prewarm placement (reference `scheduler.py`) as pure functions.

Replica counts and scores come from the forecast; replicas are placed in descending score on
TP-sized GPU groups inside one node whose overlaps with already placed replicas nest (same TP:
identical group; smaller TP: contained; larger TP: superset; never one model twice on a GPU),
so starting one replica only evicts replicas aligned with it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import combinations

from systems.sim.policy import BATCH_CAPACITY

#: The reference estimates a cold start as per-GPU bytes over PCIe at 32 GB/s.
PCIE_BYTES_PER_S = 32 * 2**30
CHUNK_BYTES = 2 * 2**20


def align_up(n_bytes: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Round up to the 2 MB physical chunks GPU memory is carved into (reference `vmm.py`)."""
    return -(-int(n_bytes) // chunk_bytes) * chunk_bytes


@dataclass(frozen=True)
class Replica:
    """A (planned or placed) prewarmed copy of one model on `gpus` (global GPU ids)."""

    model: str
    tp: int
    bytes_per_gpu: int
    score: float
    gpus: tuple[int, ...] = ()


@dataclass(frozen=True)
class Demand:
    """What the planner knows of one model: size, TP, forecast and running instances."""

    model: str
    weight_bytes: int
    tp: int
    mean: float
    peak: float
    instances: int


def replica_counts(mean: float, peak: float, instances: int, batch: int = BATCH_CAPACITY) -> tuple[int, int]:
    """(foundation, burst) prewarm replicas beyond the running instances."""
    n_foundation = max(math.ceil(mean / batch - 1e-9) - instances, 0)
    n_burst = max(math.ceil(peak / batch - 1e-9) - instances - n_foundation, 0)
    return n_foundation, n_burst


def replica_scores(d: Demand, batch: int = BATCH_CAPACITY, pcie_bytes_per_s: float = PCIE_BYTES_PER_S) -> list[float]:
    """Scores of the model's wanted replicas in order: foundation then burst ones."""
    n_f, n_b = replica_counts(d.mean, d.peak, d.instances, batch)
    total = n_f + n_b
    cold_s = d.weight_bytes / d.tp / pcie_bytes_per_s
    burstiness = d.peak / d.mean if d.mean > 0 else 1.0
    scores = [math.exp(-i / total) * cold_s for i in range(n_f)]
    scores += [math.exp(-(n_f + i) / total) * cold_s * burstiness for i in range(n_b)]
    return scores


def rescore(existing: Iterable[Replica], demands: Sequence[Demand], batch: int = BATCH_CAPACITY) -> tuple[list[Replica], list[Replica]]:
    """Give existing replicas their model's first scores (0 beyond the wanted count) and list the missing ones.

    Returns (existing rescored, new unplaced replicas sorted by descending score).
    """
    scores = {d.model: replica_scores(d, batch) for d in demands}
    by_model = {d.model: d for d in demands}
    used: dict[str, int] = {}
    out: list[Replica] = []
    for r in existing:
        i = used.get(r.model, 0)
        used[r.model] = i + 1
        wanted = scores.get(r.model, [])
        out.append(replace(r, score=wanted[i] if i < len(wanted) else 0.0))
    new: list[Replica] = []
    for model, wanted in scores.items():
        d = by_model[model]
        per_gpu = align_up(d.weight_bytes // d.tp)
        new += [Replica(model, d.tp, per_gpu, s) for s in wanted[used.get(model, 0):]]
    new.sort(key=lambda r: -r.score)
    return out, new


def nests(a: Replica, b: Replica) -> bool:
    """Whether two replicas may share GPUs: disjoint, or different models whose groups nest."""
    sa, sb = set(a.gpus), set(b.gpus)
    if not sa & sb:
        return True
    if a.model == b.model:
        return False
    if a.tp == b.tp:
        return sa == sb
    return sa <= sb if a.tp < b.tp else sb <= sa


def node_ranges(n_gpus: int, gpus_per_node: int | Sequence[int]) -> list[range]:
    """GPU id ranges of the nodes: every node `gpus_per_node` GPUs, or one size per node."""
    sizes = [gpus_per_node] * -(-n_gpus // gpus_per_node) if isinstance(gpus_per_node, int) else list(gpus_per_node)
    out, start = [], 0
    for size in sizes:
        out.append(range(start, min(start + size, n_gpus)))
        start += size
    return out


def iter_groups(new: Replica, free_bytes: Sequence[int], gpus_per_node: int | Sequence[int],
                placed: Sequence[Replica]) -> Iterator[tuple[tuple[int, ...], float, float]]:
    """Lazily, in node then lexicographic order: every TP-sized group in one node that fits `new`
    and nests with `placed`, as (gpus, max overlapped score, summed overlapped score)."""
    covering: list[list[Replica]] = [[] for _ in free_bytes]
    for r in placed:
        for g in r.gpus:
            covering[g].append(r)
    tp = new.tp
    for node in node_ranges(len(free_bytes), gpus_per_node):
        fit = [g for g in node
               if free_bytes[g] >= new.bytes_per_gpu and all(r.model != new.model for r in covering[g])]
        for gpus in combinations(fit, tp):
            overlapped = {id(r): r for g in gpus for r in covering[g]}
            if not overlapped:
                yield gpus, 0.0, 0.0
                continue
            group = set(gpus)
            ok = True
            for r in overlapped.values():
                other = set(r.gpus)
                ok = other == group if r.tp == tp else (other <= group if r.tp < tp else group <= other)
                if not ok:
                    break
            if ok:
                scores = [r.score for r in overlapped.values()]
                yield gpus, max(scores), sum(scores)


def candidate_groups(new: Replica, free_bytes: Sequence[int], gpus_per_node: int | Sequence[int],
                     placed: Sequence[Replica]) -> list[tuple[tuple[int, ...], float, float]]:
    """Every TP-sized group in one node that fits `new` and nests with `placed`: (gpus, max, sum) overlapped score."""
    return list(iter_groups(new, free_bytes, gpus_per_node, placed))


def best_group(new: Replica, groups: Iterable[tuple[tuple[int, ...], float, float]]) -> tuple[int, ...] | None:
    """Prefer groups where `new` outranks all it overlaps, then the least overlapped score (first
    such group on ties). A group overlapping nothing is optimal for a positive score: stop there."""
    best_hi = best_lo = None
    for g in groups:
        if g[1] < new.score:
            if best_hi is None or g[2] < best_hi[2]:
                best_hi = g
                if g[2] == 0.0:
                    break
        elif best_lo is None or g[2] < best_lo[2]:
            best_lo = g
    chosen = best_hi or best_lo
    return None if chosen is None else chosen[0]


def place(new: Sequence[Replica], free_bytes: Sequence[int], gpus_per_node: int | Sequence[int],
          placed: Sequence[Replica]) -> list[Replica]:
    """Place replicas in the given order (descending score); those that fit nowhere are skipped."""
    free = list(free_bytes)
    all_placed = list(placed)
    out: list[Replica] = []
    for r in new:
        gpus = best_group(r, iter_groups(r, free, gpus_per_node, all_placed))
        if gpus is None:
            continue
        done = replace(r, gpus=gpus)
        for g in gpus:
            free[g] -= r.bytes_per_gpu
        all_placed.append(done)
        out.append(done)
    return out


def place_round_robin(new: Sequence[Replica], free_bytes: Sequence[int], gpus_per_node: int | Sequence[int],
                      placed: Sequence[Replica]) -> list[Replica]:
    """Ablation without the placement algorithm: models in turn, first GPUs that fit, no nesting."""
    free = list(free_bytes)
    models_on = [{r.model for r in placed if g in r.gpus} for g in range(len(free))]
    queues: dict[str, list[Replica]] = {}
    for r in new:
        queues.setdefault(r.model, []).append(r)
    out: list[Replica] = []
    progress = True
    while progress:
        progress = False
        for model, queue in queues.items():
            if not queue:
                continue
            r = queue.pop(0)
            for node in node_ranges(len(free), gpus_per_node):
                fit = [g for g in node
                       if free[g] >= r.bytes_per_gpu and model not in models_on[g]]
                if len(fit) >= r.tp:
                    gpus = tuple(fit[:r.tp])
                    for g in gpus:
                        free[g] -= r.bytes_per_gpu
                        models_on[g].add(model)
                    out.append(replace(r, gpus=gpus))
                    progress = True
                    break
    return out
