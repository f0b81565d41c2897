"""Ground the roofline in measurements: compare and fit it to Vidur's A100/H100 operator profiles.

Vidur's public profiles (microsoft/vidur, MIT; `data/profiling/compute/<gpu>/meta-llama/<model>/mlp.csv`)
hold, per token count and TP degree, the median time in ms of every non-attention operator of one
transformer layer; their sum is what `PerfModel.linear_layer_s` predicts. They are not shipped
(their copy's SOURCE.md asks not to): `PROFILES_DIR` looks beside the checkout, in
`../shared/profiles/vidur/compute/`; `profile_error` and `fit_linear` take another `root`. Without
them `profile_error` is None (`bench sim` prints no error table) and the tests generate profiles in
the same layout. `profile_error()` reports the error by token count;
`fit_linear(gpu)` refits the four linear-layer coefficients (flops_eff, hbm_eff, layer_fixed_s,
layer_token_s) by least relative squared error (grid over the efficiencies, exact least squares
for the two fixed costs).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from systems.sim.fidelity.serving import RowValue, cuda_graphs_of, unsupported
from systems.sim.fidelity.table import read_table
from systems.sim.perf import Coefficients, PerfModel, coefficients_for
from systems.sim.specs import GPUS, GpuSpec, ModelSpec

VIDUR_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "profiles" / "vidur"
PROFILES_DIR = VIDUR_DIR / "compute"
#: Vidur's GPU folder -> our GPU preset.
GPU_DIRS = {"a100": "A100-80GB", "h100": "H100-80GB"}
#: Token-count buckets of the error report (inclusive upper bounds).
BUCKETS: tuple[tuple[str, int, int], ...] = (
    ("1", 1, 1), ("2-16", 2, 16), ("17-128", 17, 128), ("129-512", 129, 512),
    ("513-2048", 513, 2048), ("2049+", 2049, 1 << 30),
)


@dataclass(frozen=True)
class Profile:
    name: str              # e.g. a100/Llama-2-7b-hf
    gpu: GpuSpec
    model: ModelSpec
    tokens: np.ndarray     # num_tokens per row
    tp: np.ndarray         # TP degree per row
    measured_s: np.ndarray  # sum of operator medians per layer, seconds


def load_profiles(root: Path = PROFILES_DIR) -> list[Profile]:
    """Every mlp.csv under `root` (empty when ../shared is absent)."""
    out = []
    for gpu_dir, gpu_name in GPU_DIRS.items():
        for csv in sorted((root / gpu_dir).glob("*/*/mlp.csv")):
            frame = pd.read_csv(csv)
            medians = [c for c in frame.columns if c.endswith(".median")]
            row = frame.iloc[0]
            heads, kv_heads = int(row["n_head"]), int(row["n_kv_head"])
            hidden, inter = int(row["n_embd"]), int(row["n_expanded_embd"])
            model = ModelSpec(csv.parent.name, 1, hidden, heads, kv_heads, inter, int(row["vocab_size"]), 0)
            out.append(Profile(f"{gpu_dir}/{csv.parent.name}", GPUS[gpu_name], model,
                               frame["num_tokens"].to_numpy(np.int64),
                               frame["num_tensor_parallel_workers"].to_numpy(np.int64),
                               frame[medians].sum(axis=1).to_numpy(np.float64) / 1e3))
    return out


def predict(profile: Profile, coeffs: Coefficients | None = None) -> np.ndarray:
    """The model's linear-layer time per layer for each profile row, seconds."""
    out = np.empty(len(profile.tokens))
    models: dict[int, PerfModel] = {}
    for i, (n, tp) in enumerate(zip(profile.tokens, profile.tp)):
        pm = models.get(tp)
        if pm is None:
            pm = models[tp] = PerfModel(profile.model, profile.gpu, int(tp), coeffs or coefficients_for(profile.gpu))
        out[i] = pm.linear_layer_s(int(n))
    return out


def profile_error(coeffs_by_gpu: dict[str, Coefficients] | None = None,
                  root: Path = PROFILES_DIR) -> dict[str, Any] | None:
    """Median absolute % error of the roofline's linear-layer time against every profile under
    `root`, by token-count bucket; None when the profiles are absent."""
    profiles = load_profiles(root)
    if not profiles:
        return None
    rows: dict[str, Any] = {}
    for p in profiles:
        coeffs = (coeffs_by_gpu or {}).get(p.gpu.name)
        err = np.abs(predict(p, coeffs) / p.measured_s - 1.0) * 100
        by = {}
        for label, lo, hi in BUCKETS:
            mask = (p.tokens >= lo) & (p.tokens <= hi)
            if mask.any():
                by[label] = round(float(np.median(err[mask])), 1)
        rows[p.name] = {"by_tokens": by, "all": round(float(np.median(err)), 1), "rows": int(len(err)),
                        "max": round(float(err.max()), 1)}
    return {"buckets": [b[0] for b in BUCKETS], "profiles": rows,
            "metric": "median |model/measured - 1| in %, linear layers of one transformer layer"}


def fit_linear(gpu_name: str, base: Coefficients | None = None,
               root: Path = PROFILES_DIR) -> tuple[Coefficients, float]:
    """Refit flops_eff, hbm_eff, layer_fixed_s, layer_token_s on every profile of one GPU under
    `root`; returns the coefficients and their RMS relative error."""
    profiles = [p for p in load_profiles(root) if p.gpu.name == gpu_name]
    if not profiles:
        raise FileNotFoundError(f"no Vidur profiles for {gpu_name} under {root}")
    base = base or coefficients_for(GPUS[gpu_name])
    flops, bytes_, tokens, measured = [], [], [], []
    for p in profiles:
        h, kvd = p.model.hidden, p.model.kv_heads * p.model.head_dim
        layer_params = 2 * h * h + 2 * h * kvd + 3 * h * p.model.intermediate
        flops.append(2.0 * layer_params / p.tp * p.tokens)
        bytes_.append(layer_params * 2.0 / p.tp)
        tokens.append(p.tokens.astype(float))
        measured.append(p.measured_s)
    f, b, n, y = (np.concatenate(x) for x in (flops, bytes_, tokens, measured))
    gpu = GPUS[gpu_name]
    best = (np.inf, base)
    for ef in np.arange(0.30, 0.96, 0.01):
        for em in np.arange(0.30, 0.96, 0.01):
            roof = np.maximum(f / (gpu.peak_flops * ef), b / (gpu.hbm_bytes_per_s * em))
            # relative least squares for y ~ roof + c + d * n
            w = 1.0 / y
            a = np.stack([w, n * w], axis=1)
            rhs = (y - roof) * w
            (c, d), *_ = np.linalg.lstsq(a, rhs, rcond=None)
            c, d = max(c, 0.0), max(d, 0.0)
            rms = float(np.sqrt(np.mean(((roof + c + d * n) / y - 1.0) ** 2)))
            if rms < best[0]:
                best = (rms, replace(base, flops_eff=round(float(ef), 2), hbm_eff=round(float(em), 2),
                                     layer_fixed_s=float(f"{c:.3g}"), layer_token_s=float(f"{d:.3g}")))
    return best[1], best[0]


def allreduce_error() -> dict[str, Any] | None:
    """Median absolute % error of `PerfModel.allreduce_s` against Vidur's DGX all-reduce medians,
    per GPU and TP degree, split at 1 MB (latency- vs bandwidth-bound); None without profiles."""
    out: dict[str, Any] = {}
    for gpu_dir, gpu_name in GPU_DIRS.items():
        path = VIDUR_DIR / "network" / f"{gpu_dir}_dgx" / "all_reduce.csv"
        if not path.exists():
            continue
        frame = pd.read_csv(path)
        frame = frame[frame["devices_per_node"] == frame["num_workers"]]
        spec = ModelSpec("probe", 1, 64, 8, 8, 64, 64, 0)
        for tp, rows in frame.groupby("num_workers"):
            med = rows.groupby("size")["time_stats.all_reduce.median"].median() / 1e3
            pm = PerfModel(spec, GPUS[gpu_name], int(tp))
            pred = np.array([pm.allreduce_s(float(size)) for size in med.index])
            err = np.abs(pred / med.to_numpy() - 1.0) * 100
            small = med.index.to_numpy() < (1 << 20)
            out[f"{gpu_dir}/tp{tp}"] = {"under_1MB": round(float(np.median(err[small])), 1),
                                        "from_1MB": round(float(np.median(err[~small])), 1)}
    return out or None


# ------------------------------------------------------------------ from published end-to-end rows

#: The graph-mode coefficients `fit_graph_overheads` fits (perf.Coefficients.graph_*).
GRAPH_COEFFICIENTS: tuple[str, ...] = ("graph_iteration_s", "graph_layer_s")


@dataclass(frozen=True)
class GraphFit:
    """Graph-mode decode overheads fitted to CUDA-graph serving rows, and the rows' ratios after."""

    graph_iteration_s: float
    graph_layer_s: float
    rows: tuple[str, ...]
    ratios: tuple[float, ...]        # simulated / published after the fit, one per row


def _linear_terms(value: RowValue, rows: list[Any], names: tuple[str, ...], probes: tuple[float, ...],
                  base: tuple[tuple[str, str, float], ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Each row's simulated value at all-zero `names` (b) and its slope in each of them (A): the
    value is exactly linear in per-step fixed costs when every request of a row runs in one batch."""
    def sim(row: Any, values: dict[str, float]) -> float:
        over = tuple(c for c in base if c[0] != row.gpu or c[1] not in values)
        return value(row, over + tuple((row.gpu, k, v) for k, v in values.items()))

    zero = {n: 0.0 for n in names}
    b = np.array([sim(r, zero) for r in rows])
    a = np.empty((len(rows), len(names)))
    for j, (name, probe) in enumerate(zip(names, probes)):
        a[:, j] = (np.array([sim(r, {**zero, name: probe}) for r in rows]) - b) / probe
    return b, a


def _nonneg_relative_lstsq(b: np.ndarray, a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x >= 0 minimising sum(((b + a x) / y - 1)^2): least squares, dropping a negative unknown."""
    w = 1.0 / y
    active = list(range(a.shape[1]))
    while True:
        x = np.zeros(a.shape[1])
        if active:
            sol, *_ = np.linalg.lstsq(a[:, active] * w[:, None], (y - b) * w, rcond=None)
            x[active] = sol
        if (x >= 0).all():
            return x
        active.remove(int(np.argmin(x)))


def fit_graph_overheads(value: RowValue, rows: list[Any] | None = None) -> GraphFit:
    """Fit `graph_iteration_s` and `graph_layer_s` (one pair for every GPU) to the vLLM serving
    rows run with CUDA graphs (group `serving`, engine_mode `cuda_graphs`) of a validation table
    (default: the shipped one), leaving out held-out rows (`Row.held_out`). Everything else keeps
    its Vidur-fitted value: the graph-mode fixed costs are what the eager-mode profiles cannot tell.
    `value` simulates a row (harness.bench.fidelity.serving_value)."""

    rows = [r for r in (rows if rows is not None else read_table())
            if r.group == "serving" and r.engine == "vllm" and cuda_graphs_of(r) and unsupported(r) is None
            and not r.held_out]
    if not rows:
        raise ValueError("no simulatable vLLM CUDA-graph serving rows to fit")
    y = np.array([r.value for r in rows])
    b, a = _linear_terms(value, rows, GRAPH_COEFFICIENTS, (1e-3, 1e-5))
    x = _nonneg_relative_lstsq(b, a, y)
    it_s, layer_s = (float(f"{v:.3g}") for v in x)
    ratios = tuple(value(r, ((r.gpu, "graph_iteration_s", it_s), (r.gpu, "graph_layer_s", layer_s)))
                   / r.value for r in rows)
    return GraphFit(it_s, layer_s, tuple(r.id for r in rows), ratios)
