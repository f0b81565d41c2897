"""Trace readers: one module per format, each returning a canonical Workload with provenance meta."""
