"""Transformations: unit cases plus hypothesis properties (counts, order, durations as specified)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.contracts.errors import InputError, WarmbenchError
from workloads.transform import assign_zipf, clip_lengths, gamma_cv, merge, resample_rate, scale_time, select_window
from workloads.workload import Workload, canonical_frame


def make(arrival, model="m", inputs=None, outputs=None, history=None, window_s=300.0):
    n = len(arrival)
    inputs = np.arange(1, n + 1) if inputs is None else inputs
    outputs = np.arange(1, n + 1) * 2 if outputs is None else outputs
    meta = {"source": "test", "rows_read": n, "rows_kept": n, "dropped": {}, "window_s": window_s}
    return Workload(canonical_frame(np.asarray(arrival, dtype=float), model, inputs, outputs), meta, history)


arrivals = st.lists(st.floats(0, 10_000, allow_nan=False), min_size=3, max_size=200).map(sorted)
SETTINGS = settings(max_examples=40, deadline=None)


def test_window_selects_and_shifts_and_records():
    hist = pd.DataFrame({"model": ["m"] * 3, "window_start_s": [-300.0, 0.0, 300.0],
                         "mean_concurrency": [1.0, 2.0, 3.0], "peak_concurrency": [1.0, 2.0, 3.0]})
    w = select_window(make([1, 350, 700, 900], history=hist), 300, 800)
    assert w.requests["arrival_s"].tolist() == [50.0, 400.0]
    assert w.requests["request_id"].tolist() == [0, 1]
    assert w.history["window_start_s"].tolist() == [-600.0, -300.0]  # only windows before the new start
    assert w.meta["transforms"][-1] == {"name": "window", "start_s": 300.0, "end_s": 800, "rows_in": 4, "rows_out": 2}
    with pytest.raises(WarmbenchError):
        select_window(w, 5, 5)


@SETTINGS
@given(arrivals, st.floats(0.01, 100))
def test_scale_time_keeps_count_and_order_and_scales_the_span(arrival, factor):
    w = make(arrival)
    out = scale_time(w, factor)
    assert len(out) == len(w)
    assert out.requests["arrival_s"].is_monotonic_increasing
    assert out.duration_s == pytest.approx(w.duration_s * factor)
    assert out.requests["input_tokens"].tolist() == w.requests["input_tokens"].tolist()


@SETTINGS
@given(arrivals.filter(lambda a: a[-1] - a[0] > 1), st.floats(0.01, 5), st.integers(0, 3))
def test_resample_reaches_the_target_count_within_the_span(arrival, target_rps, seed):
    w = make(arrival)
    out = resample_rate(w, target_rps, seed=seed)
    span = arrival[-1] - arrival[0]
    assert len(out) == max(int(round(target_rps * span)), 1)
    a = out.requests["arrival_s"]
    assert a.is_monotonic_increasing and a.min() >= arrival[0] and a.max() <= arrival[-1]
    again = resample_rate(w, target_rps, seed=seed)
    pd.testing.assert_frame_equal(out.requests, again.requests)


@SETTINGS
@given(arrivals.filter(lambda a: a[-1] - a[0] > 1), st.floats(0.2, 4), st.integers(0, 3))
def test_gamma_cv_keeps_count_first_last_and_lengths(arrival, cv, seed):
    w = make(arrival)
    out = gamma_cv(w, cv, seed=seed)
    assert len(out) == len(w)
    a = out.requests["arrival_s"].to_numpy()
    assert np.all(np.diff(a) >= 0)
    assert a[0] == pytest.approx(arrival[0]) and a[-1] == pytest.approx(arrival[-1])
    assert out.requests["input_tokens"].tolist() == w.requests["input_tokens"].tolist()


def test_gamma_cv_reaches_the_target_cv_on_a_long_stream():
    rng = np.random.default_rng(0)
    w = make(np.sort(rng.uniform(0, 10_000, 20_000)))
    for cv in (0.5, 2.0):
        gaps = np.diff(gamma_cv(w, cv, seed=1).requests["arrival_s"].to_numpy())
        assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.08)


def test_gamma_cv_keeps_the_order_of_models_and_lengths():
    a = make([0, 10, 20, 30], model="a")
    b = make([5, 6, 7, 8], model="b", inputs=np.array([50, 60, 70, 80]))
    merged = merge([a, b])
    out = gamma_cv(merged, 1.0, seed=0)
    assert out.requests["model"].tolist() == merged.requests["model"].tolist()
    assert out.requests["input_tokens"].tolist() == merged.requests["input_tokens"].tolist()
    assert out.requests["arrival_s"].iloc[[0, -1]].tolist() == [0.0, 30.0]


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 5000)), min_size=1, max_size=100))
def test_clip_lengths_paper_defaults(pairs):
    inputs = np.array([p[0] for p in pairs])
    outputs = np.array([p[1] for p in pairs])
    w = make(np.arange(len(pairs), dtype=float), inputs=inputs, outputs=outputs)
    out = clip_lengths(w)
    assert len(out) == len(w)
    assert out.requests["input_tokens"].tolist() == np.minimum(inputs, 1024).tolist()
    assert out.requests["output_tokens"].tolist() == np.clip(outputs, 3, 1023).tolist()
    assert out.meta["transforms"][-1]["inputs_clipped"] == int((inputs > 1024).sum())


@SETTINGS
@given(st.lists(arrivals, min_size=1, max_size=4))
def test_merge_keeps_every_request_in_order(streams):
    parts = [make(a, model=f"m{i}") for i, a in enumerate(streams)]
    out = merge(parts)
    assert len(out) == sum(len(p) for p in parts)
    assert out.requests["arrival_s"].is_monotonic_increasing
    assert out.requests["request_id"].tolist() == list(range(len(out)))
    assert out.requests["model"].value_counts().to_dict() == {f"m{i}": len(a) for i, a in enumerate(streams)}


def test_merge_refuses_histories_of_different_windows_even_when_one_states_none():
    """A history whose meta states no window (None) beside one of 300 s: the error names both
    (it was a TypeError from sorting None with a float)."""
    hist = pd.DataFrame({"model": ["m"], "window_start_s": [-300.0], "mean_concurrency": [1.0],
                         "peak_concurrency": [1.0]})
    with pytest.raises(WarmbenchError, match=r"different window lengths \[300.0, None\]"):
        merge([make([1.0], history=hist), make([2.0], history=hist, window_s=None)])


def test_assign_zipf_shares():
    w = make(np.arange(40_000, dtype=float))
    out = assign_zipf(w, ["a", "b", "c"], alpha=1.0, seed=0)
    counts = out.requests["model"].value_counts(normalize=True)
    expected = np.array([1, 1 / 2, 1 / 3]) / (1 + 1 / 2 + 1 / 3)
    assert counts[["a", "b", "c"]].to_numpy() == pytest.approx(expected, abs=0.01)
    assert out.requests["arrival_s"].equals(w.requests["arrival_s"])


@SETTINGS
@given(arrivals, st.floats(0, 10_000), st.floats(0, 10_000))
def test_window_keeps_exactly_the_arrivals_inside_in_order(arrival, a, b):
    start, end = min(a, b), max(a, b)
    if end <= start:
        return
    w = make(arrival)
    inside = [x for x in arrival if start <= x < end]
    if not inside and len(arrival):  # a window that leaves nothing is an input error, not an empty run
        with pytest.raises(InputError, match="leaves no requests"):
            select_window(w, start, end)
        return
    out = select_window(w, start, end)
    assert len(out) == len(inside)
    assert out.requests["arrival_s"].to_numpy() == pytest.approx(np.array(inside) - start)
    assert out.requests["request_id"].tolist() == list(range(len(inside)))
