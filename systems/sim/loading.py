"""Checkpoint loads in flight: each GPU's PCIe link, each node's SSD link, and the flows sharing them.

A load moves each GPU's shard over links: the GPU's PCIe link (from host memory) and, from SSD,
the node's SSD link too; concurrent flows share each link equally, and a flow's rate is what its
loader reaches on its fair shares (systems/sim/startup.py: safetensors alternates the disk read and
a CPU copy, pipelined loaders run at the slower link), recomputed whenever a flow starts or ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from systems.sim.entities import Flow, Instance, Link, Prewarm
from systems.sim.specs import ClusterSpec
from systems.sim.startup import Loader


class LoadHost(Protocol):
    """What the load network needs from the simulator core."""

    @property
    def now_s(self) -> float:
        """Virtual time now."""
    def push(self, t: float, fn: Callable[[Any], None], arg: Any) -> None:
        """Schedule `fn(arg)` at virtual time `t`."""
    def new_id(self) -> int:
        """A fresh id (instances, prewarms and flows share one counter)."""
    def flow_done(self, f: Flow) -> None:
        """`f` moved its last byte (already off its links and its owner's flows)."""


class LoadNetwork:
    """The cluster's links and the flows on them; a flow's end calls `host.flow_done`."""

    def __init__(self, cluster: ClusterSpec, host: LoadHost) -> None:
        self.host = host
        self.pcie: list[Link] = []   # per global GPU id
        self.ssd: list[Link] = []    # per node
        for n, node in enumerate(cluster.nodes):
            for _ in range(node.gpus_per_node):
                self.pcie.append(Link(f"pcie{len(self.pcie)}", node.pcie_bytes_per_s))
            self.ssd.append(Link(f"ssd{n}", node.ssd_bytes_per_s))

    def links(self, node: int, gpu: int, from_host: bool) -> tuple[list[Link], str]:
        """The links a load to `gpu` crosses and its source: host memory (PCIe) or SSD (SSD, PCIe)."""
        if from_host:
            return [self.pcie[gpu]], "host"
        return [self.ssd[node], self.pcie[gpu]], "ssd"

    def start(self, gpu: int, nbytes: float, links: list[Link], owner: Instance | Prewarm, source: str,
              how: Loader, tp: int) -> None:
        """Move `nbytes` to `gpu` for `owner` over `links` with loader `how` (a shard of TP `tp`)."""
        f = Flow(self.host.new_id(), gpu, float(nbytes), links, owner, source, self.host.now_s)
        f.loader, f.tp = how, tp
        owner.flows[gpu] = f
        if isinstance(owner, Instance):
            owner.pending_flows += 1
        for link in links:
            link.flows[f.id] = f
        self._reflow(links)

    def cancel(self, f: Flow) -> None:
        """Stop a flow (its owner stopped or was evicted); the others speed up."""
        for link in f.links:
            link.flows.pop(f.id, None)
        f.version += 1
        self._reflow(f.links)

    def _reflow(self, links: list[Link]) -> None:
        """Bring every flow on `links` up to now, then give each its new fair-share rate and end event."""
        now = self.host.now_s
        affected: dict[int, Flow] = {}
        for link in links:
            affected.update(link.flows)
        for fid in sorted(affected):
            f = affected[fid]
            f.bytes_left = max(0.0, f.bytes_left - f.rate * (now - f.last_s))
            f.last_s = now
        for fid in sorted(affected):
            f = affected[fid]
            links = f.links   # [ssd, pcie] from SSD, [pcie] from host memory
            pcie = links[-1].bytes_per_s / len(links[-1].flows)
            ssd = links[0].bytes_per_s / len(links[0].flows) if len(links) > 1 else None
            f.rate = f.loader.rate_bytes_per_s(ssd, pcie, f.tp)
            f.version += 1
            self.host.push(now + f.bytes_left / f.rate, self._on_flow_done, (f, f.version))

    def _on_flow_done(self, arg: tuple[Flow, int]) -> None:
        f, version = arg
        if version != f.version:
            return
        f.bytes_left = 0.0
        f.version += 1
        for link in f.links:
            link.flows.pop(f.id, None)
        self._reflow(f.links)
        f.owner.flows.pop(f.gpu, None)
        self.host.flow_done(f)
