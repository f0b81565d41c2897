"""Workloads: trace readers, transformations, multi-model recipes, synthetic generators, statistics.

Everything else calls `resolve(spec, **params)` and gets a `Workload`.
"""

from workloads.resolve import PRESETS, resolve
from workloads.synthetic import PAPER_MODELS
from workloads.workload import HISTORY_COLUMNS, REQUEST_COLUMNS, Workload

__all__ = ["HISTORY_COLUMNS", "PAPER_MODELS", "PRESETS", "REQUEST_COLUMNS", "Workload", "resolve"]
