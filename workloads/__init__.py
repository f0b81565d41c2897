"""Workloads: trace readers, transformations, multi-model recipes, synthetic generators, statistics."""

from workloads.workload import HISTORY_COLUMNS, REQUEST_COLUMNS, Workload

__all__ = ["HISTORY_COLUMNS", "REQUEST_COLUMNS", "Workload"]
