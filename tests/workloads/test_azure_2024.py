"""The real Azure 2024 week built in: `azure-2024-conv` / `azure-2024-code` and the recipe at full resolution."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from workloads import PRESETS, resolve
from workloads.azure_2024 import SERIES_DIR, BinSeries, draw_arrivals, load_series, recipe_from_bins
from workloads.concurrency import timing_s
from workloads.lengths import inverse_cdf
from workloads.multimodel import warmserve_recipe
from workloads.workload import Workload, canonical_frame

DAY = 86_400.0


def raw_counts(service: str) -> np.ndarray:
    """The shipped file read independently of the module (plain gzip + split)."""
    with gzip.open(SERIES_DIR / f"{service}_10s.csv.gz", "rt") as f:
        next(f)
        return np.array([int(line.rsplit(",", 1)[1]) for line in f], dtype=np.int64)


def interval_total(counts: np.ndarray, start_s: float, end_s: float) -> float:
    """Real requests in [start_s, end_s) with both ends on bin labels: the end bins count half
    (a bin labelled t holds [t - 5, t + 5)); the week's own first / last bins are half bins, so whole."""
    a, b = int(start_s // 10), int(end_s // 10)
    total = counts[a:b + 1].sum() - 0.5 * counts[b] * (b < len(counts) - 1) - 0.5 * counts[a] * (a > 0)
    return float(total)


def mean_duration_s(model: str, service: str) -> tuple[float, float]:
    """E[D] and E[D^2] of a request's busy time with outputs clipped to 3..1023 (the table is uniform over its levels)."""
    prefill, decode = timing_s(model)
    d = prefill + np.clip(inverse_cdf(service, "output"), 3, 1023) * decode
    return float(d.mean()), float((d ** 2).mean())


def test_shipped_series_are_the_week_of_source_md():
    for service, total, first in (("conv", 27_303_999, "2024-05-12"), ("code", 16_803_695, "2024-05-10")):
        s = load_series(service)
        assert len(s.counts) == 60_481 and int(s.counts.sum()) == total == int(raw_counts(service).sum())
        assert s.span_s == 7 * DAY and s.start_utc.startswith(first) and len(s.sha256) == 64
    assert (SERIES_DIR / "SOURCE.md").read_text().count("CC-BY-4.0") and "Apache-2.0" in (SERIES_DIR / "SOURCE.md").read_text()
    assert {"azure-2024-conv", "azure-2024-code"} <= set(PRESETS)


def test_per_day_totals_scaled_back_match_the_shipped_series():
    """Seven models replay the seven whole days; each one's count over its thinning ratio is the day's
    real total within 4 standard deviations of the Binomial draw (about 3%: a 5% error fails)."""
    counts = raw_counts("conv")
    models = [f"m{d}-7b" for d in range(7)]
    w = resolve("azure-2024-conv", models=models, alpha=0.0, total_rps=1.4, duration_s=DAY, start_day=0,
                history_days=0, clip=False, seed=3)
    got = w.requests["model"].value_counts()
    for d, m in enumerate(models):
        meta = w.meta["per_model"][m]
        real = interval_total(counts, d * DAY, (d + 1) * DAY)
        assert meta["day"] == d and meta["slice_requests"] == pytest.approx(real)
        ratio = meta["ratio"]
        assert ratio == pytest.approx(0.2 * DAY / real)  # share x total_rps over the day's real count
        sd = np.sqrt(real * ratio * (1 - ratio))
        assert abs(got[m] - ratio * real) < 4 * sd, (m, got[m] / ratio, real)
    # Within the day too: hour by hour, the drawn arrivals follow the real counts.
    m = models[2]
    arrival = w.requests.loc[w.requests["model"] == m, "arrival_s"].to_numpy()
    hourly = np.bincount((arrival // 3600).astype(int), minlength=24)
    ratio = w.meta["per_model"][m]["ratio"]
    for h in range(24):
        real = interval_total(counts, 2 * DAY + h * 3600, 2 * DAY + (h + 1) * 3600)
        assert abs(hourly[h] - ratio * real) < 4.5 * np.sqrt(real * ratio), h


def test_history_per_day_scaled_back_matches_the_shipped_series():
    """The forecaster's history is the earlier days thinned by the same ratio: each day's mean
    concurrency, over E[duration] and the ratio, is that day's real request count."""
    counts = raw_counts("conv")
    w = resolve("azure-2024-conv", models=["llama-2-7b"], total_rps=0.5, duration_s=3600, history_days=6, seed=1)
    meta = w.meta["per_model"]["llama-2-7b"]
    assert meta["day"] == 6 and meta["history_s"] == 6 * DAY
    h = w.history.sort_values("window_start_s")
    assert len(h) == 6 * 288 and h["window_start_s"].iloc[0] == -6 * DAY and h["window_start_s"].iloc[-1] == -300
    mean_d, mean_d2 = mean_duration_s("llama-2-7b", "conv")
    busy_per_day = h["mean_concurrency"].to_numpy().reshape(6, 288).sum(axis=1) * 300.0
    for d in range(6):
        expected = interval_total(counts, d * DAY, (d + 1) * DAY) * meta["ratio"]
        drawn = busy_per_day[d] / mean_d
        sd = np.sqrt(expected * mean_d2) / mean_d  # compound Poisson: count and durations both vary
        assert abs(drawn - expected) < 4 * sd, (d, drawn, expected)
    assert (h["peak_concurrency"] >= h["mean_concurrency"]).all()


def test_arrivals_fall_inside_their_bins_thinned_or_replicated():
    counts = np.zeros(3 * 8640 + 1, dtype=np.int64)
    counts[::2] = 20  # every other bin empty
    series = BinSeries(counts=counts, start_utc="2024-05-10T00:00:00+00:00")
    for ratio in (0.3, 2.5):
        t = draw_arrivals(series, 0.0, series.span_s, ratio, np.random.default_rng(0))
        bins = np.floor((t + 5.0) / 10.0).astype(int)
        assert len(t) and (bins % 2 == 0).all() and t.min() >= 0 and t.max() < series.span_s
        assert len(t) == pytest.approx(counts.sum() * ratio, rel=0.02)
    w = recipe_from_bins(series, "conv", models=["a", "b"], total_rps=10.0, start_day=1, start_hour=3.0,
                         duration_s=600, history_days=1)
    for i, m in enumerate(["a", "b"]):
        rows = w.requests[w.requests["model"] == m]
        absolute = rows["arrival_s"].to_numpy() + (1 + i) * DAY + 3 * 3600
        assert (np.floor((absolute + 5.0) / 10.0).astype(int) % 2 == 0).all()
    assert "drawn" in w.meta["arrivals"] and "10-second" in w.meta["arrivals"]


def test_real_preset_arrivals_only_in_bins_with_requests():
    series = load_series("code")
    w = resolve("azure-2024-code", seed=5)
    for m, meta in w.meta["per_model"].items():
        t = w.requests.loc[w.requests["model"] == m, "arrival_s"].to_numpy() + meta["day"] * DAY
        assert (series.counts[np.floor((t + 5.0) / 10.0).astype(int)] > 0).all()
        assert t.min() >= meta["day"] * DAY and t.max() < meta["day"] * DAY + 1200
    assert w.meta["source"] == "azure-2024-code" and w.meta["format"] == "azure-llm-2024-10s"
    assert w.meta["sha256"] == series.sha256 and "drawn" in w.meta["arrivals"]
    json.dumps(w.meta)


def test_same_seed_same_workload_other_seed_other_draw():
    a = resolve("azure-2024-conv", seed=7, total_rps=3.0)
    b = resolve("azure-2024-conv", seed=7, total_rps=3.0)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.history, b.history)
    c = resolve("azure-2024-conv", seed=8, total_rps=3.0)
    assert not a.requests["arrival_s"].equals(c.requests["arrival_s"])
    assert not np.allclose(a.history["peak_concurrency"], c.history["peak_concurrency"])
    # The replayed requests do not depend on how much history is measured.
    d = resolve("azure-2024-conv", seed=7, total_rps=3.0, history_days=2, window_s=60)
    pd.testing.assert_frame_equal(a.requests, d.requests)
    # Gamma re-shaping keeps each model's count and the lengths.
    g = resolve("azure-2024-conv", seed=7, total_rps=3.0, cv=4.0)
    assert len(g) == len(a) and g.meta["params"]["cv"] == 4.0
    assert g.requests["arrival_s"].diff().std() > a.requests["arrival_s"].diff().std()


def constant_days(rates_rps=(1.0, 2.0, 3.0)) -> BinSeries:
    """Three days, each with a constant count per 10-s bin (the week's first / last bins are half bins)."""
    counts = np.concatenate([np.full(8640, int(10 * r)) for r in rates_rps] + [[int(5 * rates_rps[-1])]])
    counts[0] //= 2
    return BinSeries(counts=counts.astype(np.int64), start_utc="2024-05-10T00:00:00+00:00", name="hand-made")


def test_recipe_rules_on_a_hand_made_series_with_known_answers():
    """Model i replays day start_day + i, gets share (i+1)^-alpha of total_rps, and its history is
    the windows before its slice, thinned by its own ratio: all known exactly here."""
    series = constant_days()
    w = recipe_from_bins(series, "conv", models=["a-7b", "b-13b"], total_rps=3.0, alpha=1.0, start_day=1,
                         start_hour=6.0, duration_s=3600, history_days=1, seed=2)
    pm = w.meta["per_model"]
    assert [pm["a-7b"]["day"], pm["b-13b"]["day"]] == [1, 2]
    assert w.meta["shares"] == pytest.approx({"a-7b": 2 / 3, "b-13b": 1 / 3})
    # Targets 2 and 1 req/s over real 2 and 3 req/s.
    assert pm["a-7b"]["ratio"] == pytest.approx(1.0) and pm["b-13b"]["ratio"] == pytest.approx(1 / 3)
    counts = w.requests["model"].value_counts()
    assert abs(counts["a-7b"] - 7200) <= 20  # ratio 1: every request, the two half bins at the ends drawn
    assert abs(counts["b-13b"] - 3600) < 4 * np.sqrt(3600)
    assert w.requests["arrival_s"].between(0, 3600, inclusive="left").all()
    # History: one day back from each slice, in 5-minute windows ending at the slice start.
    h = w.history
    for m, (before_rate, today_rate) in {"a-7b": (1.0, 2.0), "b-13b": (2 / 3, 1.0)}.items():
        rows = h[h["model"] == m].sort_values("window_start_s")
        assert len(rows) == 288 and rows["window_start_s"].min() == -DAY and rows["window_start_s"].max() == -300
        mean_d, _ = mean_duration_s(m, "conv")
        # The slice starts at 06:00: the 18 h before midnight are the previous day, the 6 h after it today.
        previous = rows["mean_concurrency"].to_numpy()[:216].mean() / mean_d
        today = rows["mean_concurrency"].to_numpy()[216:].mean() / mean_d
        assert previous == pytest.approx(before_rate, rel=0.05) and today == pytest.approx(today_rate, rel=0.05)
    # Not enough days for the models: the error names start_day.
    from harness.contracts.errors import InputError
    with pytest.raises(InputError, match="start_day"):
        recipe_from_bins(series, "conv", models=["a", "b"], start_day=2)
    # Default start day: the last days the slices fit in (days 1 and 2 of 0..2), the most history.
    d = recipe_from_bins(series, "conv", models=["a", "b"], total_rps=1.0, duration_s=600, history_days=6)
    assert [d.meta["per_model"][m]["day"] for m in "ab"] == [1, 2] and d.meta["params"]["start_day"] == 1
    assert d.meta["per_model"]["b"]["history_s"] == 2 * DAY  # capped by the series' start, not history_days


def per_request_trace(series: BinSeries, rng: np.random.Generator) -> Workload:
    """The requests a bin series summarises: uniform in their bins, outputs from the conv table."""
    t = draw_arrivals(series, 0.0, series.span_s, 1.0, rng)
    n = len(t)
    frame = canonical_frame(t, "src", rng.integers(1, 2000, n), inverse_cdf("conv", "output")[rng.integers(0, 4096, n)])
    return Workload(frame, {"source": "hand-made", "clock_origin_s": 1_715_299_200.0, "rows_read": n,
                            "rows_kept": n, "dropped": {}})  # 2024-05-10 00:00 UTC


def test_bin_level_preset_agrees_with_the_recipe_at_full_resolution():
    """The same week at per-request resolution through warmserve_recipe and at bin level through the
    preset's path: same days, ratios, counts and history scale (within sampling error)."""
    series = constant_days((0.5, 1.0, 1.5))
    trace = per_request_trace(series, np.random.default_rng(4))
    kw = dict(models=["a-7b", "b-70b"], total_rps=1.5, alpha=0.5, start_day=1, start_hour=2.0, duration_s=3600,
              history_days=1, window_s=300.0)
    full = warmserve_recipe(trace, seed=1, **kw)
    bins = recipe_from_bins(series, "conv", seed=1, **kw)
    for m in kw["models"]:
        f, b = full.meta["per_model"][m], bins.meta["per_model"][m]
        assert f["day"] == b["day"] and f["history_s"] == b["history_s"]
        assert f["ratio"] == pytest.approx(b["ratio"], rel=0.03)
        nf, nb = int((full.requests["model"] == m).sum()), int((bins.requests["model"] == m).sum())
        assert abs(nf - nb) < 4 * np.sqrt(nf + nb)
        hf, hb = (x.history[x.history["model"] == m]["mean_concurrency"].mean() for x in (full, bins))
        assert hb == pytest.approx(hf, rel=0.05)
        assert len(full.history[full.history["model"] == m]) == len(bins.history[bins.history["model"] == m])


def test_a_week_long_azure_2024_csv_goes_through_the_recipe_toml(tmp_path):
    """Where a user has the real week-long CSVs: the Azure reader + a [warmserve] recipe at full
    resolution (here a small file in the 2024 format, four days, mixed timestamp precision)."""
    rng = np.random.default_rng(0)
    rates = (0.02, 0.04, 0.06, 0.08)
    t = np.concatenate([d * DAY + np.sort(rng.uniform(0, DAY, rng.poisson(r * DAY))) for d, r in enumerate(rates)])
    stamps = pd.Timestamp("2024-05-10", tz="UTC") + pd.to_timedelta(t, unit="s")
    text = [s.isoformat(sep=" ", timespec="microseconds") if i % 3 else s.floor("s").isoformat(sep=" ")
            for i, s in enumerate(stamps)]
    csv = tmp_path / "AzureLLMInferenceTrace_conv_1week.csv"
    body = "\n".join(f"{s},{rng.integers(1, 3000)},{rng.integers(1, 900)}" for s in text)
    csv.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n" + body + "\n")
    trace = resolve(csv)
    assert trace.meta["format"] == "azure-llm" and len(trace) == len(t)
    recipe = tmp_path / "week.toml"
    recipe.write_text(f'source = "{csv.name}"\n[warmserve]\nmodels = ["llama-2-7b", "llama-2-70b"]\n'
                      "total_rps = 0.06\nalpha = 1.0\nstart_day = 2\nstart_hour = 1.0\nduration_s = 7200\n"
                      "history_days = 2\nseed = 3\n")
    w = resolve(recipe)
    pm = w.meta["per_model"]
    assert [pm["llama-2-7b"]["day"], pm["llama-2-70b"]["day"]] == [2, 3]
    # Model 0: 0.04 req/s target from day 2's 0.06 req/s; model 1: 0.02 from day 3's 0.08.
    assert pm["llama-2-7b"]["ratio"] == pytest.approx(0.04 / 0.06, rel=0.1)
    assert pm["llama-2-70b"]["ratio"] == pytest.approx(0.02 / 0.08, rel=0.1)
    assert pm["llama-2-7b"]["history_s"] == 2 * DAY and pm["llama-2-70b"]["history_s"] == 2 * DAY
    assert (w.history.groupby("model").size() == 2 * 288).all()
    assert w.requests["input_tokens"].max() <= 1024  # the paper's clipping


@pytest.mark.parametrize("param, words", [
    ("alpha=-1", "parameter 'alpha'"),
    ("start_day=5", "parameter 'start_day'"),
    ("start_day=7", "parameter 'start_day'"),
    ("window_s=0", "parameter 'window_s'"),
    ("duration_s=700000", "parameter 'duration_s'"),
    ("total_rps=nan", "parameter 'total_rps'"),
    ("models=a,b,c,d,e,f,g,h", "8 models"),
    ("cv=-2", "parameter 'cv'"),
])
def test_bad_params_exit_2_naming_the_parameter(capsys, param, words):
    from harness.cli import main
    for preset in ("azure-2024-conv", "azure-2024-code"):
        code = main(["trace", "stats", preset, "-p", param])
        err = capsys.readouterr().err
        assert code == 2 and words in err and preset in err and "Traceback" not in err


def test_trace_stats_scores_the_forecaster_at_each_window_size(capsys):
    from harness.cli import main
    code = main(["trace", "stats", "azure-2024-code", "--json", "-p", "window_s=60", "-p", "duration_s=4800",
                 "-p", "models=llama-2-7b", "-p", "total_rps=4", "-p", "history_days=3"])
    out = capsys.readouterr().out
    assert code == 0
    forecast = json.loads(out)["forecast"]
    for w in ("60", "180", "300", "2400"):
        assert 0 < forecast[w]["peak_error"] < 1, (w, forecast[w])
    assert forecast["2400"]["windows"] >= 1  # the last window counts once an arrival reaches its end


def test_history_measured_by_the_day_is_the_one_pass_measurement():
    """The preset measures its history a day of windows at a time (bounded memory at the trace's own
    volume); over the same drawn requests it equals concurrency.history_frame's one pass."""
    from workloads.azure_2024 import history_chunks, history_windows
    from workloads.concurrency import history_frame

    series = load_series("conv")
    for window_s, history_s in ((300.0, 3 * DAY), (60.0, 2.5 * DAY + 60), (2400.0, DAY)):
        args = (series, "conv", 5 * DAY + 3600.0, history_s, 0.05, window_s, True)
        frame, drawn = history_windows(series, "conv", "llama-2-70b", *args[2:], np.random.default_rng(1))
        parts = list(history_chunks(*args, np.random.default_rng(1)))
        assert len(parts) == int(np.ceil(history_s // window_s / (DAY // window_s)))
        t, out = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        one_pass = history_frame({"llama-2-70b": (t, out)}, -history_s, 0.0, window_s)
        assert drawn == len(t) and len(frame) == len(one_pass) == int(history_s // window_s)
        np.testing.assert_array_equal(frame["window_start_s"], one_pass["window_start_s"])
        np.testing.assert_array_equal(frame["peak_concurrency"], one_pass["peak_concurrency"])
        np.testing.assert_allclose(frame["mean_concurrency"], one_pass["mean_concurrency"], rtol=1e-6, atol=1e-5)


def test_usable_wherever_a_workload_is(tmp_path, capsys):
    """`sim --workload` runs on the preset; an experiment's workload.spec is checked before any run,
    a bad start_day named by its key in the experiment file."""
    from harness.cli import main
    out = tmp_path / "sim"
    code = main(["sim", "--system", "warmserve", "--workload", "azure-2024-code", "--cluster", "paper-16gpu",
                 "--duration-s", "120", "--out", str(out)])
    assert code == 0 and (out / "requests.parquet").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert "azure-2024-code" in json.dumps(manifest)
    capsys.readouterr()
    body = ('name = "week"\nbackend = "sim"\ncluster = "paper-16gpu"\nsystems = ["warmserve"]\nseeds = [0]\n'
            'models = ["llama-2-7b", "llama-2-13b"]\n[workload]\nspec = "azure-2024-conv"\n'
            '[workload.params]\nduration_s = 120.0\nstart_day = 6\n')
    path = tmp_path / "week.toml"
    path.write_text(body)
    code = main(["run", str(path), "--results", str(tmp_path / "results"), "--no-report"])
    err = capsys.readouterr().err
    assert code == 2 and "workload.params.start_day" in err and str(path) in err
    assert not (tmp_path / "results").exists()


def test_the_series_are_package_data():
    """An installed warmbench has the week: pyproject's package-data names every shipped file."""
    import fnmatch
    import tomllib

    from tests.conftest import ROOT
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["workloads"]
    shipped = [p.relative_to(ROOT / "workloads").as_posix() for p in SERIES_DIR.iterdir() if p.is_file()]
    assert {n.rsplit("/", 1)[1] for n in shipped} >= {"SOURCE.md", "code_10s.csv.gz", "conv_10s.csv.gz"}
    for rel in shipped:
        assert any(fnmatch.fnmatch(rel, pat) for pat in patterns), rel
