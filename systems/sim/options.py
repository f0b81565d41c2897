"""The simulator's options: the core's (`CoreOptions`) and the types every policy's options model
is built from (harness/contracts/options.py is the layer itself).

Values arrive from the CLI as strings and from TOML as str/int/float/bool: the types below coerce
them as both need ("0.25" -> 0.25, 8.0 -> 8 where a count is wanted, "true"/"off" -> a boolean,
"auto" -> None where a value may be derived) and refuse the rest, so a negative time, a zero size,
NaN / inf, a huge int or a word where a number belongs is one InputError naming the option before
any run starts; no value can make the simulator hang or produce nonsense (negative TTFTs, no ticks).
A policy declares `Options = MyOptions` (fields with `Field(default, ge=, le=, gt=)` bounds that
tighten the type's); `systems.sim.split_options` validates once per run.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from harness.contracts.options import Options

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

#: A sane ceiling for sizes and counts: far above any real setting, far below int64 overflow.
MAX_COUNT = 10**12
#: A sane ceiling for durations: about 30 years of virtual time.
MAX_SECONDS = 1e9
#: Shortest controller period: a smaller one would take hours of wall time per simulated hour.
MIN_TICK_S = 0.01


def _number(value: Any) -> int | float:
    """A finite int or float from a number or its text; a bool, a list or a word is refused."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"not a number ({type(value).__name__})")
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            try:
                value = float(value.strip())
            except ValueError:
                raise ValueError("not a number") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("not finite")
    return value


def _integer(value: Any) -> int:
    number = _number(value)
    if isinstance(number, float) and number != int(number):
        raise ValueError("not a whole number")
    return int(number)


def _real(value: Any) -> float:
    return float(_number(value))


def _auto_real(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    return _real(value)


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("not a boolean (true/false)")


#: A finite number (bounds from the field).
Real = Annotated[float, BeforeValidator(_real)]
#: A whole number; 8.0 and "8" are 8 (bounds from the field).
Integer = Annotated[int, BeforeValidator(_integer)]
#: true/false, yes/no, on/off, 1/0.
Flag = Annotated[bool, BeforeValidator(_flag)]
#: A duration in seconds: >= 0, at most MAX_SECONDS (a field may tighten both).
Seconds = Annotated[float, BeforeValidator(_real), Field(ge=0.0, le=MAX_SECONDS)]
#: A duration or None / "auto": derived by the simulator.
AutoSeconds = Annotated[Annotated[float, Field(ge=0.0, le=MAX_SECONDS)] | None, BeforeValidator(_auto_real)]
#: A size or count: an integer at most MAX_COUNT (the field sets its lower bound: 1, or 0 where 0 means "off").
Count = Annotated[int, BeforeValidator(_integer), Field(le=MAX_COUNT)]
#: A share in (0, 1] (a field may open or close either end).
Fraction = Annotated[float, BeforeValidator(_real), Field(ge=0.0, le=1.0)]


class SimOptions(Options):
    """Base of the simulator's options models (the core's and every policy's)."""


class NoOptions(SimOptions):
    """A system that takes no options of its own."""


class CoreOptions(SimOptions):
    """Options the simulator core itself reads, whatever the system."""

    engine_init_s: AutoSeconds = Field(None, le=86_400.0)
    """Engine init after the weights are resident; auto (None): derived from its parts (startup.py:
    fixed + profile run + CUDA graph capture, grounded in vllm-pr-11005); a number replaces that."""
    process_start_s: Seconds = Field(0.0, le=86_400.0)
    """Engine process start (Python, imports) before init: 0, as the WarmServe paper pre-spawns
    engine processes and CUDA contexts for every system it compares (docs/paper.md s.2)."""
    gpu_memory_utilization: Fraction = Field(0.9, gt=0.0)
    """Share of GPU memory an instance may use (weights + KV) by default."""
    block_size: Count = Field(16, ge=1, le=4096)
    """KV block size in tokens."""
    max_num_seqs: Count = Field(256, ge=1, le=1_000_000)
    """Engine batch limit."""
    max_num_batched_tokens: Count = Field(100_000, ge=1, le=10**9)
    """Prefill token budget per iteration, and the tokens of vLLM's profile run at engine init
    (startup.profile_tokens): the WarmServe reference starts every engine with
    --max-num-batched-tokens=100000 (LLMServe/WarmServe prewarm_manager.py create_engine,
    muxserve_utils.py); a system whose engines run with other args declares its own budget
    (start_instance(max_num_batched_tokens=), e.g. serverlessllm: vLLM's default)."""
    chunked_prefill_tokens: Count = Field(0, ge=0, le=10**9)
    """> 0: chunked prefill with this token budget per iteration; 0: off."""
    max_model_len: Count = Field(2048, ge=0, le=10**9)
    """Prompt + output limit, as vLLM's --max-model-len (the paper's setting, and the live vllm
    adapter's default): a longer request is rejected on arrival, as vLLM answers HTTP 400; 0: none."""
    max_drain_s: Seconds = Field(600.0, le=86_400.0)
    """After the last arrival, how long to let requests finish (ticks run until then while a
    request is unserved)."""
    cuda_graphs: Flag = True
    """Engine mode: decode steps replay CUDA graphs (vLLM's default; its published latency tests run
    so) or run eager (`--enforce-eager`, the WarmServe paper's setting): systems/sim/perf.py."""
    test_slowdown: Real = Field(1.0, ge=1.0, le=100.0)
    """TESTING ONLY: multiplies every engine iteration (prefill and decode) of this run, the planted
    regression that `warmbench bench gate` and tests/results/test_gate_stats.py measure the gate with."""
