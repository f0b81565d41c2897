"""Roofline performance model: iteration times of a model shard on a GPU from shapes alone.

Every fitted number lives in `Coefficients` (one table per GPU in `COEFFICIENTS`), so a
calibration can replace them without touching the formulas. Linear layers per transformer
layer cost `max(flops / (peak * flops_eff), bytes / (hbm * hbm_eff)) + layer_fixed_s +
tokens * layer_token_s` (the last two: small kernels, norms, rotary, adds). Attention
costs compute (prefill) or KV reads (decode); tensor parallelism adds two all-reduces per
layer; every iteration pays `iteration_s + seqs * seq_s` (scheduler, sampling, Python).

A decode step of `b` sequences holding `ctx` tokens of KV in total is exactly
`decode_fixed_s(b) + decode_ctx_slope_s * ctx`: linear in `ctx`, which lets the engine
jump over a stretch of unchanged-batch decode steps in closed form.

Engine mode (`cuda_graphs`, the core option): vLLM captures CUDA graphs of the decode forward pass
at start-up and replays them for decode-only batches of up to `CUDA_GRAPH_MAX_SEQS` sequences;
prefill and mixed iterations run eager (vLLM's model runner, `_use_captured_graph`: `decode_only
and not enforce_eager and batch_size <= max captured`). A replayed step does not pay the per-kernel
launch and Python costs of eager mode, so it replaces `iteration_s` and the per-layer floors
(`layer_fixed_s + attn_layer_s`, fitted to eager operator profiles) by `graph_iteration_s` and
`graph_layer_s`; the all-reduce latency keeps its measured (Vidur) value in both modes. Not modelled: vLLM V1's piecewise graphs for mixed batches (attention stays eager
there; the prefill they run is compute-bound, so the launch share is small) and the padding of a
batch up to the next captured size.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from systems.sim.specs import GpuSpec, ModelSpec

#: Largest decode batch vLLM replays from a CUDA graph: its default capture sizes 1, 2, 4, 8, 16, ...,
#: 256 (vLLM V0 `_BATCH_SIZES_TO_CAPTURE`, capped by max_num_seqs, default 256); a larger batch runs eager.
CUDA_GRAPH_MAX_SEQS = 256
#: Graph-mode decode overheads (see Coefficients.graph_iteration_s), as
#: `systems.sim.calibrate.fit_graph_overheads()` fits them to the shipped table's vLLM CUDA-graph rows
#: vllm-ci-a100-8b (1585 ms), vllm-ci-h100-8b (998 ms), vllm-ci-h100-70b (2444 ms) (source vllm-ci:
#: 8 x 32 in / 128 out; simulated/published after the fit 1.001, 1.000, 1.000; with the eager
#: costs 1.25, 1.36, 1.29). The per-layer floor comes out ~0: what a replayed step costs beyond the
#: roofline and the all-reduces is per step (CPU side), not per layer. tests/sim/test_fidelity.py
#: checks that these equal the fit.
GRAPH_ITERATION_S = 2.02e-3
GRAPH_LAYER_S = 8.17e-7


@dataclass(frozen=True)
class Coefficients:
    """Efficiency factors and fixed costs. All but `graph_*` are fitted to Vidur's A100/H100 operator
    profiles, which time operators launched eagerly: they are the eager-mode (`cuda_graphs = false`)
    costs; `graph_*` are fitted to published end-to-end CUDA-graph latencies (see below)."""

    flops_eff: float = 0.62          # share of dense fp16 peak a GEMM reaches
    hbm_eff: float = 0.72            # share of HBM bandwidth a weight-streaming GEMM reaches
    layer_fixed_s: float = 25e-6     # per layer, per iteration: small kernels' launch floor
    layer_token_s: float = 0.0       # per layer, per token: elementwise ops not in the roofline
    attn_flops_eff: float = 0.45     # prefill attention (flash attention) share of peak
    attn_hbm_eff: float = 0.6        # decode attention: share of HBM bandwidth reading KV
    attn_layer_s: float = 10e-6      # per layer, per iteration: attention kernel floor
    allreduce_s: float = 12e-6       # per all-reduce latency (two per layer when TP > 1)
    nvlink_eff: float = 0.6          # share of NVLink bandwidth an all-reduce reaches
    iteration_s: float = 3e-3        # per iteration: scheduling, sampling, Python (vLLM eager)
    seq_s: float = 30e-6             # per sequence in the batch, per iteration
    # A decode step replayed from a CUDA graph (`cuda_graphs = true`): per-step CPU cost (scheduler,
    # input preparation, sampling, one graph launch) and per-layer GPU floor left once kernel
    # launches are gone. Fitted by `systems.sim.calibrate.fit_graph_overheads` to the vLLM
    # CUDA-graph serving rows of systems/sim/fidelity/published.csv (vllm-ci-a100-8b,
    # vllm-ci-h100-8b, vllm-ci-h100-70b; source vllm-ci), one pair for every GPU.
    graph_iteration_s: float = GRAPH_ITERATION_S
    graph_layer_s: float = GRAPH_LAYER_S
    # Multipliers fitted to a live run (`warmbench calibrate`): everything the roofline leaves out
    # (kernels slower than the profiles, HTTP and tokenizer time, another engine version). An
    # iteration that prefills runs at prefill_scale; a pure decode step at decode_scale.
    prefill_scale: float = 1.0
    decode_scale: float = 1.0

    def with_values(self, **values: float) -> Coefficients:
        known = {f.name for f in fields(self)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown coefficients {sorted(unknown)}; known: {sorted(known)}")
        return replace(self, **values)


#: Per GPU preset; a GPU not listed uses DEFAULT_COEFFICIENTS.
DEFAULT_COEFFICIENTS = Coefficients()
#: Linear-layer terms fitted by `systems.sim.calibrate.fit_linear` to Vidur's profiles (RMS
#: relative error 7.2% on A100 over 5,736 rows, 9.6% on H100 over 2,088 rows); all-reduce latency
#: and NVLink efficiency read off Vidur's DGX all-reduce profiles (`calibrate.allreduce_error`).
#: H200 shares the H100's compute die; its HBM bandwidth comes from GpuSpec.
COEFFICIENTS: dict[str, Coefficients] = {
    "A100-80GB": Coefficients(flops_eff=0.66, hbm_eff=0.75, layer_fixed_s=5.74e-05, layer_token_s=9.28e-08,
                              allreduce_s=25e-6, nvlink_eff=0.6),
    "H100-80GB": Coefficients(flops_eff=0.61, hbm_eff=0.84, layer_fixed_s=4.77e-05, layer_token_s=5.41e-08,
                              allreduce_s=25e-6, nvlink_eff=0.75),
}
COEFFICIENTS["H200"] = COEFFICIENTS["H100-80GB"]


def coefficients_for(gpu: GpuSpec, overrides: tuple[tuple[str, str, float], ...] = ()) -> Coefficients:
    """The GPU's fitted table, with a cluster's (gpu, coefficient, value) overrides applied."""
    base = COEFFICIENTS.get(gpu.name, DEFAULT_COEFFICIENTS)
    mine = {name: value for g, name, value in overrides if g == gpu.name}
    return base.with_values(**mine) if mine else base


class PerfModel:
    """Iteration times of one model on `tp` GPUs of one kind; constants precomputed once."""

    def __init__(self, model: ModelSpec, gpu: GpuSpec, tp: int, coeffs: Coefficients | None = None,
                 cuda_graphs: bool = True, test_slowdown: float = 1.0) -> None:
        c = coeffs or coefficients_for(gpu)
        if test_slowdown != 1.0:  # testing only (core option test_slowdown): every iteration this much slower
            c = replace(c, prefill_scale=c.prefill_scale * test_slowdown, decode_scale=c.decode_scale * test_slowdown)
        self.model, self.gpu, self.tp, self.coeffs = model, gpu, tp, c
        self.cuda_graphs = cuda_graphs
        h, kvd = model.hidden, model.kv_heads * model.head_dim
        layer_params = 2 * h * h + 2 * h * kvd + 3 * h * model.intermediate
        self._layer_flops_per_token = 2.0 * layer_params / tp
        self._layer_bytes = layer_params * model.dtype_bytes / tp
        self._flops_rate = gpu.peak_flops * c.flops_eff
        self._hbm_rate = gpu.hbm_bytes_per_s * c.hbm_eff
        self._head_flops_per_seq = 2.0 * model.vocab * h / tp
        self._head_bytes = model.vocab * h * model.dtype_bytes / tp
        # Attention: causal prefill does ~2 * p^2 * hidden FLOPs per layer (QK^T and PV, halved).
        self._attn_flops_rate = gpu.peak_flops * c.attn_flops_eff
        self._attn_flop_per_sq = 2.0 * h * model.layers / tp
        self._kv_read_per_ctx_s = model.kv_bytes_per_token / tp / (gpu.hbm_bytes_per_s * c.attn_hbm_eff)
        decode_attn_flops_s = 4.0 * h * model.layers / tp / self._attn_flops_rate
        #: decode step time grows by this much per token of KV held by the batch
        self.decode_ctx_slope_s = max(self._kv_read_per_ctx_s, decode_attn_flops_s) * c.decode_scale
        self._allreduce_per_token_s = 0.0
        self._allreduce_fixed_s = 0.0
        if tp > 1:
            ring = 2.0 * (tp - 1) / tp
            self._allreduce_per_token_s = 2 * model.layers * ring * h * model.dtype_bytes / (gpu.nvlink_bytes_per_s * c.nvlink_eff)
            self._allreduce_fixed_s = 2 * model.layers * c.allreduce_s
        self._decode_fixed: dict[int, float] = {}
        self._fixed_s = c.iteration_s + model.layers * (c.layer_fixed_s + c.attn_layer_s) + self._allreduce_fixed_s
        #: a decode step replayed from a CUDA graph pays these fixed costs instead (module docstring)
        self._graph_fixed_s = c.graph_iteration_s + model.layers * c.graph_layer_s + self._allreduce_fixed_s

    def allreduce_s(self, nbytes: float) -> float:
        """One all-reduce of `nbytes` over this TP group (ring: 2 (tp-1)/tp of the bytes cross NVLink)."""
        if self.tp == 1:
            return 0.0
        c = self.coeffs
        return c.allreduce_s + 2.0 * (self.tp - 1) / self.tp * nbytes / (self.gpu.nvlink_bytes_per_s * c.nvlink_eff)

    def linear_layer_s(self, tokens: int) -> float:
        """One transformer layer's non-attention operators for `tokens` tokens (what Vidur profiles)."""
        c = self.coeffs
        return (max(tokens * self._layer_flops_per_token / self._flops_rate, self._layer_bytes / self._hbm_rate)
                + c.layer_fixed_s + tokens * c.layer_token_s)

    def _body_s(self, tokens: int, seqs: int, graph: bool = False) -> float:
        """Everything but attention: linear layers, LM head for `seqs` sampled rows, all-reduces, overheads
        (those of a CUDA-graph replay when `graph`)."""
        c = self.coeffs
        linear = max(tokens * self._layer_flops_per_token / self._flops_rate, self._layer_bytes / self._hbm_rate)
        head = max(seqs * self._head_flops_per_seq / self._flops_rate, self._head_bytes / self._hbm_rate)
        fixed = self._graph_fixed_s if graph else self._fixed_s
        return (fixed + self.model.layers * (linear + tokens * c.layer_token_s) + head
                + tokens * self._allreduce_per_token_s + seqs * c.seq_s)

    def prefill_s(self, tokens: int, seqs: int, attn_sq_tokens: float) -> float:
        """A prefill-only iteration: `tokens` prompt tokens of `seqs` sequences; `attn_sq_tokens` =
        sum over sequences of prompt_len^2 (or chunk * (2 * context + chunk) for a chunk)."""
        return self.coeffs.prefill_scale * (self._body_s(tokens, seqs)
                                            + attn_sq_tokens * self._attn_flop_per_sq / self._attn_flops_rate)

    def decode_fixed_s(self, seqs: int) -> float:
        """The part of a decode step of `seqs` sequences that does not depend on their context."""
        v = self._decode_fixed.get(seqs)
        if v is None:
            graph = self.cuda_graphs and seqs <= CUDA_GRAPH_MAX_SEQS
            v = self._decode_fixed[seqs] = self._body_s(seqs, seqs, graph) * self.coeffs.decode_scale
        return v

    def decode_s(self, seqs: int, ctx_tokens: int) -> float:
        """One decode step of `seqs` sequences holding `ctx_tokens` tokens of KV in total."""
        return self.decode_fixed_s(seqs) + self.decode_ctx_slope_s * ctx_tokens

    def mixed_s(self, prefill_tokens: int, prefill_seqs: int, attn_sq_tokens: float,
                decode_seqs: int, ctx_tokens: int) -> float:
        """A chunked-prefill iteration: prefill chunks and one decode token per running sequence."""
        return (self.coeffs.prefill_scale * (self._body_s(prefill_tokens + decode_seqs, prefill_seqs + decode_seqs)
                                             + attn_sq_tokens * self._attn_flop_per_sq / self._attn_flops_rate)
                + self.decode_ctx_slope_s * ctx_tokens)
