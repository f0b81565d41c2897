"""Empirical token-length distributions, so synthetic workloads look like real ones without shipping traces.

Quantiles computed once from the Azure LLM inference trace 2023 (Patel et al., ISCA 2024;
CC-BY): `AzureLLMInferenceTrace_conv.csv` (19,366 rows) and `..._code.csv` (8,819 rows),
with `numpy.quantile` (linear) at QUANTILES, rounded to whole tokens.
"""

from __future__ import annotations

import numpy as np

QUANTILES: tuple[float, ...] = (
    0.0, 0.01, 0.025, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.35, 0.40, 0.45, 0.50,
    0.55, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95, 0.975, 0.99, 0.999, 1.0,
)

#: kind -> (input-token quantiles, output-token quantiles), aligned with QUANTILES.
LENGTH_TABLES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "conv": (
        (2, 29, 120, 181, 207, 372, 387, 396, 403, 414, 703, 984, 1020, 1045, 1071, 1097, 1130,
         1189, 1315, 1876, 2734, 4083, 4092, 4142, 6179, 14050),
        (7, 16, 28, 41, 54, 67, 77, 85, 91, 96, 103, 113, 129, 151, 177, 217, 384, 395, 400, 411,
         424, 451, 522, 601, 954, 1000),
    ),
    "code": (
        (3, 17, 44, 75, 147, 232, 386, 578, 770, 939, 1075, 1261, 1469, 1690, 1909, 2164, 2433,
         2744, 3192, 3920, 5188, 7303, 7435, 7436, 7437, 7437),
        (6, 6, 6, 6, 7, 7, 8, 9, 9, 10, 11, 12, 13, 14, 16, 18, 20, 24, 29, 39, 55, 90, 145, 251,
         825, 1899),
    ),
}


_LEVELS = 4096  # inverse CDF tabulated at this many equal-probability points (fast lookup)
_LOOKUP: dict[tuple[str, str], np.ndarray] = {}


def inverse_cdf(kind: str, which: str) -> np.ndarray:
    """Token counts at the midpoints of _LEVELS equal-probability bins, interpolated from the table."""
    key = (kind, which)
    if key not in _LOOKUP:
        inputs, outputs = LENGTH_TABLES[kind]
        table = inputs if which == "input" else outputs
        u = (np.arange(_LEVELS) + 0.5) / _LEVELS
        _LOOKUP[key] = np.maximum(np.rint(np.interp(u, QUANTILES, table)), 1).astype(np.int64)
    return _LOOKUP[key]


def sample_tokens(rng: np.random.Generator, kind: str, which: str, n: int) -> np.ndarray:
    """Draw `n` token counts from the empirical distribution (`which`: input or output)."""
    return inverse_cdf(kind, which)[rng.integers(0, _LEVELS, n)]
