"""Shared fixtures. `../shared` (the real traces) sits beside the checkout in CI and dev; every
behaviour the real files exercise is also covered by a file in the same format written here, so a
fresh clone runs those tests too. The real-file checks are extra tests that skip without it; one of
them, that workloads/lengths.py's tables are the 2023 traces' quantiles, can only run against them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
AZURE_2023 = SHARED / "traces" / "azure_llm_2023"


@pytest.fixture
def azure_2023_dir() -> Path:
    """Folder with the real Azure 2023 code and conv traces; skips when ../shared is absent."""
    if not (AZURE_2023 / "AzureLLMInferenceTrace_conv.csv").exists():
        pytest.skip(f"real traces not found at {AZURE_2023} (../shared is absent in this checkout)")
    return AZURE_2023


@dataclass(frozen=True)
class AzureCsv:
    """A generated trace in the Azure LLM inference 2023 format and what a reader must get from it."""

    path: Path
    origin: str                  # the first row's TIMESTAMP as written
    ticks: np.ndarray            # arrival of each row after the first, in 100 ns units (exact)
    input_tokens: np.ndarray
    output_tokens: np.ndarray

    @property
    def arrival_s(self) -> np.ndarray:
        return self.ticks / 1e7


def write_azure_2023_csv(path: Path, rows: int, seed: int, duration_s: float = 3600.0) -> AzureCsv:
    """`rows` requests over about `duration_s` in the real 2023 schema: header
    `TIMESTAMP,ContextTokens,GeneratedTokens`, naive timestamps with 7 fractional digits (one more
    than Python's %f takes, so a reader that drops it is off by up to 0.9 us), Poisson arrivals,
    lengths in the ranges the real conv trace has (input 2..14050, output 7..1000)."""
    rng = np.random.default_rng(seed)
    gaps = np.maximum(rng.exponential(duration_s / rows * 1e7, rows - 1).astype(np.int64), 1)
    ticks = np.concatenate([[0], np.cumsum(gaps)])
    inputs = np.clip(rng.lognormal(6.9, 0.8, rows).astype(np.int64), 2, 14050)
    outputs = np.clip(rng.lognormal(4.8, 0.9, rows).astype(np.int64), 7, 1000)
    origin_ticks = (18 * 3600 + 15 * 60 + 46) * 10**7 + 6805900   # 2023-11-16 18:15:46.6805900
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for t, i, o in zip(ticks + origin_ticks, inputs, outputs):
        sec, frac = divmod(int(t), 10**7)
        lines.append(f"2023-11-16 {sec // 3600:02d}:{sec // 60 % 60:02d}:{sec % 60:02d}.{frac:07d},{i},{o}")
    path.write_text("\n".join(lines) + "\n")
    return AzureCsv(path, lines[1].split(",")[0], ticks, inputs, outputs)


@pytest.fixture
def azure_2023_like(tmp_path: Path) -> AzureCsv:
    """A generated one-hour conv-like trace in the Azure 2023 format (2,000 rows)."""
    return write_azure_2023_csv(tmp_path / "AzureLLMInferenceTrace_conv.csv", 2000, seed=0)
