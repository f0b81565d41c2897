"""Trace statistics: known processes give known numbers; unmeasurable figures are None, not 0."""

from __future__ import annotations

import numpy as np
import pytest

from workloads.lengths import LENGTH_TABLES, QUANTILES, sample_tokens
from workloads.stats import dispersion, trace_stats
from workloads.workload import Workload, canonical_frame


def workload(arrival, model="m"):
    n = len(arrival)
    return Workload(canonical_frame(np.asarray(arrival, float), model, np.arange(1, n + 1), np.full(n, 7)),
                    {"source": "t", "dropped": {"failed": 3}, "rows_read": n + 3, "rows_kept": n})


def test_poisson_is_about_one_and_even_spacing_is_zero():
    rng = np.random.default_rng(0)
    poisson = np.sort(rng.uniform(0, 3600, 36_000))
    assert dispersion(poisson, 1.0) == pytest.approx(1.0, abs=0.05)
    assert dispersion(np.arange(0, 3600, 0.1), 1.0) == pytest.approx(0.0, abs=1e-9)


def test_stats_of_a_regular_stream():
    s = trace_stats(workload(np.arange(0, 600, 0.5)))
    assert s["requests"] == 1200 and s["span_s"] == 599.5
    assert s["rate_rps"] == pytest.approx(1200 / 599.5)
    assert s["rate_per_minute"] == {"min": 120.0, "mean": 120.0, "max": 120.0}
    assert s["cv_interarrival"] == pytest.approx(0.0)
    assert s["output_tokens"] == {"p50": 7.0, "p90": 7.0, "p99": 7.0}
    assert s["input_tokens"]["p50"] == pytest.approx(600.5)
    assert s["models"] == {"m": 1200} and s["dropped"] == {"failed": 3}


def test_unmeasurable_figures_are_none():
    s = trace_stats(workload([5.0]))
    assert s["rate_rps"] is None and s["cv_interarrival"] is None and s["dispersion_60s"] is None
    assert s["rate_per_minute"] is None


def test_length_tables_match_the_real_traces(azure_2023_dir):
    """The embedded quantiles are what the 2023 traces give (so the synthetic lengths are empirical)."""
    import pandas as pd
    for kind in ("conv", "code"):
        trace = pd.read_csv(azure_2023_dir / f"AzureLLMInferenceTrace_{kind}.csv")
        inputs, outputs = LENGTH_TABLES[kind]
        assert np.rint(np.quantile(trace["ContextTokens"], QUANTILES)).tolist() == list(inputs)
        assert np.rint(np.quantile(trace["GeneratedTokens"], QUANTILES)).tolist() == list(outputs)


def test_sampled_lengths_follow_the_table():
    rng = np.random.default_rng(0)
    drawn = sample_tokens(rng, "conv", "output", 50_000)
    assert np.median(drawn) == pytest.approx(LENGTH_TABLES["conv"][1][QUANTILES.index(0.5)], rel=0.05)
    assert drawn.min() >= 7 and drawn.max() <= 1000
