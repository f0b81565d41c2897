"""Memory of the simulated cluster: bytes per (category, model) on each GPU, which GPUs hold nothing,
checkpoints cached in each node's host memory, and the samples of the memory table.

Pure bookkeeping with no clock of its own: the core passes the virtual time of each change.
"""

from __future__ import annotations

from systems.sim.entities import Gpu, SimError
from systems.sim.specs import ClusterSpec

#: one row of the memory table (harness.contracts.result.MEMORY_COLUMNS): time_s, node, gpu, category, model, bytes
MemoryRow = tuple[float, int, int, str, str, int]


class Memory:
    """GPU and host memory of one cluster; every GPU change is sampled (the last one per instant wins)."""

    def __init__(self, cluster: ClusterSpec) -> None:
        self.cluster = cluster
        self.gpus: list[Gpu] = []
        self.node_gpus: list[list[int]] = []          # per node, its global GPU ids in order
        for n, node in enumerate(cluster.nodes):
            ids = []
            for i in range(node.gpus_per_node):
                gid = len(self.gpus)
                self.gpus.append(Gpu(gid, n, i, node.gpu.memory_bytes, {}))
                ids.append(gid)
            self.node_gpus.append(ids)
        self.host: list[dict[str, int]] = [{} for _ in cluster.nodes]   # per node: model -> cached bytes
        #: per node, GPUs holding nothing at all (kept up to date by alloc)
        self.empty: list[set[int]] = [set(ids) for ids in self.node_gpus]
        self.empty_count = len(self.gpus)
        #: bumps whenever a GPU becomes empty: lets first_free_group cache "no free group" answers
        self.empty_epoch = 0
        self._free_group_misses: dict[int, int] = {}   # tp -> empty_epoch of its last miss
        self._samples: dict[tuple[float, int], list[MemoryRow]] = {}   # (time, gpu) -> last snapshot then

    # ------------------------------------------------------------------ GPUs
    def alloc(self, gpu: int, category: str, model: str, nbytes: int, now_s: float) -> None:
        """Add `nbytes` (negative: free) of `category` for `model` on `gpu`; SimError past capacity."""
        g = self.gpus[gpu]
        if nbytes > 0 and g.used_bytes + nbytes > g.capacity_bytes:
            raise SimError(f"GPU {gpu} over capacity: {g.used_bytes} + {nbytes} > {g.capacity_bytes} ({category} {model})")
        key = (category, model)
        val = g.usage.get(key, 0) + nbytes
        if val < 0:
            raise SimError(f"GPU {gpu}: negative {category} bytes for {model}")
        if val:
            g.usage[key] = val
        else:
            g.usage.pop(key, None)
        was = g.used_bytes
        g.used_bytes += nbytes
        if was == 0 and g.used_bytes:
            self.empty[g.node].discard(gpu)
            self.empty_count -= 1
        elif was and g.used_bytes == 0:
            self.empty[g.node].add(gpu)
            self.empty_count += 1
            self.empty_epoch += 1
        self._sample(g, now_s)

    def _sample(self, g: Gpu, now_s: float) -> None:
        """Snapshot one GPU (every category and model, plus free); the last one per instant wins."""
        rows: list[MemoryRow] = [(now_s, g.node, g.index, cat, model, b) for (cat, model), b in g.usage.items()]
        rows.append((now_s, g.node, g.index, "free", "", g.capacity_bytes - g.used_bytes))
        self._samples[(now_s, g.id)] = rows

    def rows(self) -> list[MemoryRow]:
        """Every sample, in the order taken."""
        return [row for rows in self._samples.values() for row in rows]

    def free_bytes(self, gpu: int) -> int:
        g = self.gpus[gpu]
        return g.capacity_bytes - g.used_bytes

    def used_bytes(self, gpu: int, category: str | None = None) -> int:
        g = self.gpus[gpu]
        if category is None:
            return g.used_bytes
        return sum(b for (c, _), b in g.usage.items() if c == category)

    def first_free_group(self, tp: int) -> tuple[int, ...] | None:
        """The lowest TP-aligned group of `tp` empty GPUs on one node, or None (O(1) while no GPU has
        emptied since the last miss for this `tp`)."""
        if self._free_group_misses.get(tp) == self.empty_epoch or self.empty_count < tp:
            return None
        for node, ids in enumerate(self.node_gpus):
            empty = self.empty[node]
            if len(empty) < tp:
                continue
            for start in range(0, len(ids) - tp + 1, tp):
                group = tuple(ids[start:start + tp])
                if all(g in empty for g in group):
                    return group
        self._free_group_misses[tp] = self.empty_epoch
        return None

    def check(self, now_s: float) -> None:
        """Invariants (debug runs): per-GPU sums, capacity, no negative category."""
        for g in self.gpus:
            total = sum(g.usage.values())
            if total != g.used_bytes or g.used_bytes > g.capacity_bytes or any(v < 0 for v in g.usage.values()):
                raise SimError(f"t={now_s}: GPU {g.id} memory inconsistent: {g.usage} used={g.used_bytes} cap={g.capacity_bytes}")

    # ------------------------------------------------------------------ host memory (checkpoint cache)
    def host_free_bytes(self, node: int) -> int:
        return self.cluster.nodes[node].host_memory_bytes - sum(self.host[node].values())

    def host_put(self, node: int, model: str, nbytes: int) -> bool:
        """Cache `nbytes` of `model` in node's host memory; False if it was there (SimError: no room)."""
        if model in self.host[node]:
            return False
        if nbytes > self.host_free_bytes(node):
            raise SimError(f"host memory of node {node} is full ({self.host_free_bytes(node)} bytes free, {model} needs {nbytes})")
        self.host[node][model] = nbytes
        return True

    def host_evict(self, node: int, model: str) -> bool:
        """Drop `model` from node's host memory; False if it was not there."""
        return self.host[node].pop(model, None) is not None
