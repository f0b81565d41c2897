"""Hardware and model specs: GPUs, nodes, clusters and LLM shapes, with stable preset names.

Contract (other modules rely on it):
- `GPUS[name] -> GpuSpec`, presets `A100-80GB`, `H100-80GB`, `H200`.
- `MODELS[name] -> ModelSpec`; `model_spec("llama-2-7b#1")` strips the `#k` copy suffix.
- `CLUSTERS[name] -> ClusterSpec`, presets `paper-16gpu` (2 x 8 A100-80GB), `paper-16gpu-h100`
  (2 x 8 H100-80GB) and `sim-512gpu` (64 x 8 A100-80GB); `resolve_cluster(name_or_toml_path)`.
- Units are in the names: bytes, bytes per second, FLOP/s, seconds.

Cluster TOML (any field but `count` may be omitted; defaults are the A100 node below):

    name = "my-cluster"
    [[nodes]]
    count = 2                 # identical nodes
    gpu = "H100-80GB"         # a GPU preset name
    gpus_per_node = 8
    host_memory_gib = 1024    # host DRAM usable as checkpoint cache
    ssd_gb_per_s = 6.0        # SSD read bandwidth of the node (GB/s = 1e9 bytes/s)
    pcie_gb_per_s = 32.0      # host -> GPU bandwidth per GPU

    [coefficients.H100-80GB]  # optional: perf-model coefficients for one GPU kind (names in
    prefill_scale = 1.3       # systems/sim/perf.py Coefficients); `warmbench calibrate` writes these
    decode_scale = 1.1
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.contracts.errors import InputError, WarmbenchError
from harness.contracts.files import read_text
from harness.contracts.options import input_error

GIB = 1 << 30
GB = 1_000_000_000


@dataclass(frozen=True)
class GpuSpec:
    """One GPU: memory, dense fp16 peak, HBM bandwidth, NVLink bandwidth (one direction)."""

    name: str
    memory_bytes: int
    peak_flops: float
    hbm_bytes_per_s: float
    nvlink_bytes_per_s: float


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer in fp16. `tp` is the default tensor-parallel degree."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    weight_bytes: int
    tp: int = 1
    dtype_bytes: int = 2

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of every layer for one token (all KV heads, all TP shards together)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    def shard_bytes(self, tp: int | None = None) -> int:
        """Weight bytes held by each GPU of a `tp`-way group (even split)."""
        return -(-self.weight_bytes // (tp or self.tp))


@dataclass(frozen=True)
class NodeSpec:
    """A server: identical GPUs, host memory (checkpoint cache), SSD and per-GPU PCIe bandwidth."""

    gpu: GpuSpec
    gpus_per_node: int = 8
    host_memory_bytes: int = 1024 * GIB
    ssd_bytes_per_s: float = 6.0 * GB
    pcie_bytes_per_s: float = 32.0 * GB


@dataclass(frozen=True)
class ClusterSpec:
    """Nodes in order; GPU global ids run node by node (node 0 GPUs 0..7, node 1 GPUs 8..15, ...)."""

    name: str
    nodes: tuple[NodeSpec, ...]
    #: (gpu name, coefficient, value) overriding the perf model's table for that GPU kind
    coefficients: tuple[tuple[str, str, float], ...] = ()

    @property
    def num_gpus(self) -> int:
        return sum(n.gpus_per_node for n in self.nodes)


def _params(layers: int, hidden: int, heads: int, kv_heads: int, intermediate: int, vocab: int,
            qkv_bias: bool = False, tied: bool = False) -> int:
    """Parameter count of a Llama-style decoder (gated MLP, RMSNorm, untied head unless `tied`)."""
    head_dim = hidden // heads
    kv = kv_heads * head_dim
    attn = hidden * hidden * 2 + hidden * kv * 2 + ((hidden + 2 * kv) if qkv_bias else 0)
    per_layer = attn + 3 * hidden * intermediate + 2 * hidden
    return layers * per_layer + vocab * hidden * (1 if tied else 2) + hidden


def _model(name: str, layers: int, hidden: int, heads: int, kv_heads: int, intermediate: int,
           vocab: int, tp: int, qkv_bias: bool = False, weight_bytes: int | None = None) -> ModelSpec:
    params = _params(layers, hidden, heads, kv_heads, intermediate, vocab, qkv_bias)
    return ModelSpec(name, layers, hidden, heads, kv_heads, intermediate, vocab,
                     weight_bytes if weight_bytes is not None else 2 * params, tp)


GPUS: dict[str, GpuSpec] = {
    "A100-80GB": GpuSpec("A100-80GB", 80 * GIB, 312e12, 2.039e12, 300e9),
    "H100-80GB": GpuSpec("H100-80GB", 80 * GIB, 989e12, 3.35e12, 450e9),
    "H200": GpuSpec("H200", 141 * GB, 989e12, 4.8e12, 450e9),
}
GPUS["H100-80GB-SXM"] = GPUS["H100-80GB"]

#: Shapes from the models' Hugging Face configs; Llama-2 weight bytes are the paper's figures.
MODELS: dict[str, ModelSpec] = {m.name: m for m in (
    _model("llama-2-7b", 32, 4096, 32, 32, 11008, 32000, tp=1, weight_bytes=13_476_831_232),
    _model("llama-2-13b", 40, 5120, 40, 40, 13824, 32000, tp=2, weight_bytes=26_032_558_080),
    _model("llama-2-70b", 80, 8192, 64, 8, 28672, 32000, tp=4, weight_bytes=137_961_209_856),
    _model("llama-3.1-8b", 32, 4096, 32, 8, 14336, 128256, tp=1),
    _model("llama-3.1-70b", 80, 8192, 64, 8, 28672, 128256, tp=4),
    _model("qwen2.5-7b", 28, 3584, 28, 4, 18944, 152064, tp=1, qkv_bias=True),
    _model("qwen2.5-14b", 48, 5120, 40, 8, 13824, 152064, tp=2, qkv_bias=True),
    _model("qwen2.5-32b", 64, 5120, 40, 8, 27648, 152064, tp=2, qkv_bias=True),
    _model("qwen2.5-72b", 80, 8192, 64, 8, 29568, 152064, tp=4, qkv_bias=True),
)}

A100_NODE = NodeSpec(GPUS["A100-80GB"])

CLUSTERS: dict[str, ClusterSpec] = {
    "paper-16gpu": ClusterSpec("paper-16gpu", (A100_NODE,) * 2),
    # The paper's GPU is not stated; its ablation (all requests under 100 ms TTFT for full
    # WarmServe) needs prefills of ~1k-token prompts under 100 ms on 70B TP4: H100-class.
    "paper-16gpu-h100": ClusterSpec("paper-16gpu-h100", (NodeSpec(GPUS["H100-80GB"]),) * 2),
    "sim-512gpu": ClusterSpec("sim-512gpu", (A100_NODE,) * 64),
}


_DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float": 4, "half": 2}


def model_spec_from_config(path: str | Path, name: str | None = None) -> ModelSpec:
    """A Llama-style ModelSpec from a Hugging Face model directory (or its config.json).

    Weight bytes are the safetensors files' size when the directory has them, else the
    parameter count times the dtype's size. TP 1; errors name the file and field.
    """
    path = Path(path)
    config = path / "config.json" if path.is_dir() else path
    if not config.exists():
        raise InputError("no such file (a Hugging Face model directory has config.json)", file=str(config))
    try:
        raw = json.loads(read_text(config))   # non-UTF-8 or unreadable: an InputError naming the file
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc}", file=str(config)) from exc
    if not isinstance(raw, dict):
        raise InputError("expected a JSON object", file=str(config))

    def field(key: str, default: int | None = None) -> int:
        value = raw.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 2**40:
            raise InputError(f"expected a positive integer, got {value!r}", file=str(config), field=key)
        return value

    heads = field("num_attention_heads")
    dtype = str(raw.get("torch_dtype") or raw.get("dtype") or "float16")
    if dtype not in _DTYPE_BYTES:
        raise InputError(f"unsupported dtype {dtype!r}; known: {', '.join(_DTYPE_BYTES)}", file=str(config),
                         field="torch_dtype")
    layers, hidden = field("num_hidden_layers"), field("hidden_size")
    kv_heads, inter, vocab = field("num_key_value_heads", heads), field("intermediate_size"), field("vocab_size")
    files = sorted(config.parent.glob("*.safetensors"))
    weight_bytes = (sum(f.stat().st_size for f in files) if files else
                    _params(layers, hidden, heads, kv_heads, inter, vocab, tied=bool(raw.get("tie_word_embeddings")))
                    * _DTYPE_BYTES[dtype])
    return ModelSpec(name or config.parent.name, layers, hidden, heads, kv_heads, inter, vocab, weight_bytes, 1,
                     _DTYPE_BYTES[dtype])


def base_model_name(name: str) -> str:
    """`llama-2-7b#1` -> `llama-2-7b`: the `#k` suffix only marks a distinct copy."""
    return name.split("#", 1)[0]


def model_spec(name: str) -> ModelSpec:
    """The preset of a workload model name (the `#k` copy suffix is stripped); keeps `name`."""
    base = base_model_name(name)
    spec = MODELS.get(base)
    if spec is None:
        raise WarmbenchError(f"unknown model {name!r}; known presets: {', '.join(MODELS)} "
                             "(optionally followed by #k for a distinct copy)")
    return spec if base == name else replace(spec, name=name)


def check_fits(models: dict[str, ModelSpec], cluster: ClusterSpec, gpu_memory_utilization: float) -> None:
    """Every model fits some node of the cluster at its TP (weights within the usable share of
    each GPU's memory, TP within the node); else an InputError before anything runs, since its
    requests could only wait until the end of the run."""
    usable = [(n.gpus_per_node, int(gpu_memory_utilization * n.gpu.memory_bytes), n.gpu.name) for n in cluster.nodes]
    for name, spec in models.items():
        tp, need = spec.tp, spec.shard_bytes()
        if any(g >= tp and need < mem for g, mem, _ in usable):
            continue
        widest = max(g for g, _, _ in usable)
        if widest < tp:
            raise InputError(f"model {name} needs TP {tp}, the widest node of cluster {cluster.name} has "
                             f"{widest} GPUs")
        mem, gpu = max((mem, name) for g, mem, name in usable if g >= tp)
        raise InputError(f"model {name} needs {need / GB:.1f} GB per GPU at TP {tp} (plus KV cache), the "
                         f"largest GPU of cluster {cluster.name} ({gpu}) has {mem / GB:.1f} GB usable "
                         f"(gpu_memory_utilization {gpu_memory_utilization:g})")


class _NodeToml(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    count: int = Field(1, ge=1, le=100_000)
    gpu: str = "A100-80GB"
    gpus_per_node: int = Field(8, ge=1, le=1024)
    host_memory_gib: float = Field(1024, ge=0, le=1e9)
    ssd_gb_per_s: float = Field(6.0, gt=0, le=1e6)
    pcie_gb_per_s: float = Field(32.0, gt=0, le=1e6)


class _ClusterToml(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str | None = None
    nodes: list[_NodeToml] = Field(min_length=1)
    coefficients: dict[str, dict[str, float]] = Field(default_factory=dict)


def load_cluster_toml(path: str | Path) -> ClusterSpec:
    """Read a cluster TOML (layout in this module's docstring); errors name the file and field."""
    path = Path(path)
    try:
        raw = tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"not valid TOML: {exc}", file=str(path)) from exc
    try:
        cfg = _ClusterToml.model_validate(raw)
    except ValidationError as exc:
        raise input_error(exc, noun="key", file=str(path)) from None
    nodes: list[NodeSpec] = []
    for i, n in enumerate(cfg.nodes):
        if n.gpu not in GPUS:
            raise InputError(f"unknown GPU {n.gpu!r}; presets: {', '.join(GPUS)}",
                             file=str(path), field=f"nodes.{i}.gpu")
        node = NodeSpec(GPUS[n.gpu], n.gpus_per_node, int(n.host_memory_gib * GIB),
                        n.ssd_gb_per_s * GB, n.pcie_gb_per_s * GB)
        nodes.extend([node] * n.count)
    return ClusterSpec(cfg.name or path.stem, tuple(nodes), _coefficients(cfg.coefficients, path))


def _coefficients(table: dict[str, dict[str, float]], path: Path) -> tuple[tuple[str, str, float], ...]:
    """Validated (gpu, coefficient, value) triples; a wrong GPU or name is an error naming the field."""
    from systems.sim.perf import Coefficients  # perf imports this module

    known = set(Coefficients.__dataclass_fields__)
    out = []
    for gpu, values in table.items():
        if gpu not in GPUS:
            raise InputError(f"unknown GPU {gpu!r}; presets: {', '.join(GPUS)}", file=str(path),
                             field=f"coefficients.{gpu}")
        for name, value in values.items():
            if name not in known:
                raise InputError(f"unknown coefficient; known: {', '.join(sorted(known))}", file=str(path),
                                 field=f"coefficients.{gpu}.{name}")
            positive = name.endswith(("_eff", "_scale"))
            if not (value > 0 if positive else value >= 0):
                raise InputError(f"must be {'> 0' if positive else '>= 0'}, got {value}", file=str(path),
                                 field=f"coefficients.{gpu}.{name}")
            out.append((GPUS[gpu].name, name, float(value)))
    return tuple(out)


def resolve_cluster(spec: str | Path | ClusterSpec) -> ClusterSpec:
    """A preset name or a TOML path -> ClusterSpec."""
    if isinstance(spec, ClusterSpec):
        return spec
    if isinstance(spec, str) and spec in CLUSTERS:
        return CLUSTERS[spec]
    path = Path(spec)
    if path.suffix == ".toml" or path.exists():
        if not path.exists():
            raise WarmbenchError(f"cluster file {path} does not exist")
        return load_cluster_toml(path)
    raise WarmbenchError(f"unknown cluster {spec!r}; presets: {', '.join(CLUSTERS)}, or a TOML file")
