"""Corrected Seasonal Predictor against hand-computed values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workloads.concurrency import history_frame
from workloads.forecast import (
    DAY_S,
    correction_weights,
    forecast_error,
    history_series,
    predict,
    rebin,
    rebin_is_exact,
    seasonal_baseline,
)
from workloads.workload import canonical_frame

W = 300.0
DAY = 288  # windows per day at 300 s


def _two_days() -> dict[int, tuple[float, float]]:
    # day -1 means 10..18, peaks 20..28; day -2 means 6..14, peaks 16..24 -> baseline means 8..16
    series: dict[int, tuple[float, float]] = {}
    for k in range(5):
        series[-DAY + k] = (10.0 + 2 * k, 20.0 + 2 * k)
        series[-2 * DAY + k] = (6.0 + 2 * k, 16.0 + 2 * k)
    return series


def test_baseline_is_mean_of_previous_days() -> None:
    assert seasonal_baseline(_two_days(), 3, DAY) == (14.0, 24.0)
    assert seasonal_baseline(_two_days(), 7, DAY) is None


def test_first_window_of_the_day_is_the_baseline() -> None:
    f = predict(_two_days(), {}, 0, window_s=W)
    assert f is not None and (f.mean, f.peak) == (8.0, 18.0)


def test_fewer_than_n_past_windows_newest_weighted_most() -> None:
    # errors (observed - baseline) of windows 0, 1, 2: means +1, +3, 0; peaks 0, 0, +7
    observed = {0: (9.0, 18.0), 1: (13.0, 20.0), 2: (12.0, 29.0)}
    f = predict(_two_days(), observed, 3, window_s=W)
    # weights newest first 4/7, 2/7, 1/7: mean 14 + (0*4 + 3*2 + 1*1)/7 = 15; peak 24 + 7*4/7 = 28
    assert f is not None
    assert f.mean == pytest.approx(15.0)
    assert f.peak == pytest.approx(28.0)
    # the printed formula (oldest weighted most) would give 14 + 10/7: not what the reference does
    assert f.mean != pytest.approx(14.0 + 10 / 7)


def test_only_last_n_windows_count() -> None:
    history = {-DAY + k: (0.0, 0.0) for k in range(13)}
    observed = {k: (0.0, 0.0) for k in range(12)}
    observed[0] = observed[1] = (1000.0, 1000.0)  # older than the last 10: ignored
    f = predict(history, observed, 12, window_s=W)
    assert f is not None and f.mean == 0.0
    observed[11] = (1023.0, 1023.0)  # newest, weight 1 / (1023/512)
    f = predict(history, observed, 12, window_s=W)
    assert f is not None and f.mean == pytest.approx(512.0)


def test_history_before_the_start_feeds_the_correction() -> None:
    # today's windows before the workload start (indices -2, -1) are in the history as well
    history = {-DAY + k: (10.0, 10.0) for k in range(-2, 1)}
    history.update({-2: (16.0, 16.0), -1: (12.0, 12.0)})
    f = predict(history, {}, 0, window_s=W)
    # errors newest first: -1 -> +2, -2 -> +6; weights 2/3, 1/3 -> 10 + 4/3 + 2
    assert f is not None and f.mean == pytest.approx(10.0 + 2 * 2 / 3 + 6 / 3)


def test_model_without_history_is_none() -> None:
    assert predict({}, {0: (5.0, 9.0)}, 1, window_s=W) is None


def test_prediction_is_never_negative_and_peak_not_below_mean() -> None:
    history = {-DAY: (1.0, 1.0), -DAY + 1: (5.0, 5.0)}
    f = predict(history, {0: (0.0, 0.0)}, 1, window_s=W)
    assert f is not None and f.mean == pytest.approx(4.0)
    history = {-DAY: (5.0, 5.0), -DAY + 1: (1.0, 1.0)}
    f = predict(history, {0: (0.0, 0.0)}, 1, window_s=W)
    assert f is not None and (f.mean, f.peak) == (0.0, 0.0)


def test_weights_halve_with_age() -> None:
    assert correction_weights(3) == pytest.approx([4 / 7, 2 / 7, 1 / 7])
    assert sum(correction_weights(10)) == pytest.approx(1.0)


def test_history_series_and_rebinning() -> None:
    frame = pd.DataFrame({
        "model": ["a", "a", "a", "a", "b"],
        "window_start_s": [-86400.0, -86100.0, -85800.0, -85500.0, -86400.0],
        "mean_concurrency": [2.0, 4.0, 6.0, 8.0, 1.0],
        "peak_concurrency": [3.0, 9.0, 7.0, 8.0, 2.0],
    })
    series = history_series(frame, 300.0, 300.0)
    assert series["a"][-288] == (2.0, 3.0) and series["b"] == {-288: (1.0, 2.0)}
    wide = history_series(frame, 300.0, 600.0)["a"]
    assert wide == {-144: (3.0, 9.0), -143: (7.0, 8.0)}
    # 180 s windows: kept only where fully covered; overlap-weighted means
    narrow = rebin(series["a"], 300.0, 180.0)
    assert narrow[-480] == (2.0, 3.0)                               # [-86400, -86220) inside window 0
    assert narrow[-479][0] == pytest.approx((2.0 * 120 + 4.0 * 60) / 180)  # spans windows 0 and 1
    assert narrow[-479][1] == 9.0
    assert history_series(None, 300.0, 300.0) == {}


def test_rebin_is_exact_only_for_whole_multiples() -> None:
    assert rebin_is_exact(60.0, 180.0) and rebin_is_exact(60.0, 2400.0) and rebin_is_exact(300.0, 300.0)
    assert not rebin_is_exact(300.0, 180.0)  # finer than the history: peaks of the coarser windows
    assert not rebin_is_exact(120.0, 300.0)  # straddles source windows
    minute = {k: (float(k % 3), float(k % 3) + 1.0) for k in range(6)}
    assert rebin(minute, 60.0, 180.0) == {0: (1.0, 3.0), 1: (1.0, 3.0)}


def _periodic(rate_per_s: int, days: int, span_s: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """History of `days` days at one request per second; a replay at `rate_per_s` requests per second."""
    past = np.concatenate([-d * DAY_S + np.arange(0.0, span_s, 1.0) for d in range(days, 0, -1)])
    history = history_frame({"llama-2-7b": (past, np.zeros(len(past)))}, -days * DAY_S, 0.0, W)
    now = np.repeat(np.arange(0.0, span_s, 1.0), rate_per_s) + 0.5
    return history, canonical_frame(now, "llama-2-7b", np.ones(len(now)), np.zeros(len(now)))


def test_forecast_error_of_a_replay_like_its_history_is_zero() -> None:
    history, replay = _periodic(1, days=2, span_s=4 * W)
    err = forecast_error(history, W, replay, W)
    assert err["windows"] == 3  # the replay's last request is in window 3: only 0-2 are whole
    assert err["peak_error"] == pytest.approx(0.0, abs=1e-6) and err["mean_error"] == pytest.approx(0.0, abs=1e-6)


def test_forecast_error_after_the_load_doubles_shrinks_as_the_correction_learns() -> None:
    # peak 2 against the history's 1. The ten windows before the replay (quiet, as on earlier days)
    # count in the correction, so window k is corrected by the weights of the k newest windows.
    history, replay = _periodic(2, days=2, span_s=4 * W)
    err = forecast_error(history, W, replay, W)
    wt = correction_weights(10)
    off = [abs(1.0 + sum(wt[:k]) - 2.0) / 2.0 for k in range(3)]  # 50%, then about 25% and 12.5%
    assert err["peak_error"] == pytest.approx(sum(off) / 3, rel=1e-6)
    assert err["mean_error"] == pytest.approx(sum(off) / 3, rel=1e-6)
    assert err["models"]["llama-2-7b"]["windows"] == 3


def test_forecast_error_is_none_where_it_cannot_be_measured() -> None:
    history, replay = _periodic(1, days=2, span_s=4 * W)
    assert forecast_error(None, W, replay, W) is None
    assert forecast_error(history, W, replay, 180.0) is None       # 300 s history: 180 s is not whole windows
    assert forecast_error(history, W, replay.iloc[:100], W) is None  # no whole window in the replay
