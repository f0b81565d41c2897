"""Metrics against hand-computed tables (values worked out by hand in the comments)."""

from __future__ import annotations

import math

import pytest

from harness.metrics import (
    PAPER_UNFINISHED_TTFT_S,
    Slo,
    by_start_kind,
    jsonable,
    paired_ratio_ci,
    send_lag_stats_s,
    summarize,
)
from tests.results.factory import NAN, requests

# r0 ttft .05 tpot .05 e2e .25 | r1 ttft .5 tpot .5 e2e 1.5 | r2 ttft 2 (1 token) e2e 2
# r3 error, no token | r4 timeout after a first token at 4.3 (sent late: lag .2)
TABLE = [
    dict(model="a", scheduled_s=0.0, first_token_s=0.05, end_s=0.25, output_tokens=5, received_tokens=5, start_kind="warm",
         itl_s=[0.05, 0.05, 0.05, 0.05]),
    dict(model="a", scheduled_s=1.0, first_token_s=1.5, end_s=2.5, output_tokens=3, received_tokens=3, start_kind="cold",
         itl_s=[0.5, 0.5]),
    dict(model="b", scheduled_s=2.0, first_token_s=4.0, end_s=4.0, output_tokens=1, received_tokens=1, start_kind="queued",
         itl_s=[]),
    dict(model="b", scheduled_s=3.0, status="error", error="502", received_tokens=0, itl_s=None),
    dict(model="b", scheduled_s=4.0, sent_s=4.2, first_token_s=4.3, status="timeout", received_tokens=2, itl_s=[0.1]),
]


@pytest.fixture
def summary() -> dict:
    return summarize(requests(TABLE), Slo(ttft_s=1.0, tpot_s=0.1))


def test_ttft_from_scheduled_time_with_linear_percentiles(summary: dict) -> None:
    s = summary["all"]
    # finite TTFT sorted: .05 .3 .5 2.0 (r4 counts: it got a first token)
    assert s["p50_ttft_s"] == pytest.approx(0.4)      # index 1.5
    assert s["p90_ttft_s"] == pytest.approx(1.55)     # index 2.7
    assert s["p99_ttft_s"] == pytest.approx(1.955)    # index 2.97
    assert s["mean_ttft_s"] == pytest.approx(0.7125)


def test_paper_view_counts_unfinished_as_999(summary: dict) -> None:
    s = summary["all"]
    assert s["p50_ttft_paper_s"] == pytest.approx(2.0)  # .05 .5 2 999 999
    assert s["mean_ttft_paper_s"] == pytest.approx((0.05 + 0.5 + 2.0 + 2 * PAPER_UNFINISHED_TTFT_S) / 5)
    assert s["p99_ttft_paper_s"] == pytest.approx(PAPER_UNFINISHED_TTFT_S)


def test_tpot_e2e_itl(summary: dict) -> None:
    s = summary["all"]
    assert s["mean_tpot_s"] == pytest.approx(0.275)  # r0 .05, r1 .5; r2 has one token
    assert s["p50_e2e_s"] == pytest.approx(1.5)      # .25 1.5 2.0 (ok only)
    # pooled gaps: .05 x4, .5 x2, .1
    assert s["mean_itl_s"] == pytest.approx((0.2 + 1.0 + 0.1) / 7)
    assert s["p50_itl_s"] == pytest.approx(0.05)


def test_slo_goodput_throughput_and_fast_share(summary: dict) -> None:
    s = summary["all"]
    assert s["requests"] == 5 and s["ok"] == 3 and s["failed"] == 2
    assert s["slo_attainment"] == pytest.approx(0.2)       # only r0; r1 misses TPOT, r2 TTFT
    assert s["goodput_rps"] == pytest.approx(1 / 4.0)       # span 0 .. 4.0
    assert s["throughput_rps"] == pytest.approx(3 / 4.0)
    assert s["output_tokens_per_s"] == pytest.approx(9 / 4.0)
    assert s["ttft_under_100ms"] == pytest.approx(0.2)


def test_start_kinds_and_send_lag(summary: dict) -> None:
    s = summary["all"]
    assert (s["start_warm"], s["start_cold"], s["start_queued"], s["start_prewarmed"], s["start_unknown"]) == (1, 1, 1, 0, 2)
    assert s["p99_send_lag_s"] == pytest.approx(0.192)  # 0 0 0 0 .2, index 3.96
    assert s["max_send_lag_s"] == pytest.approx(0.2)


def test_send_lag_stats_of_sent_requests_and_nan_when_none_was_sent() -> None:
    lag = send_lag_stats_s(requests(TABLE))  # 0 0 0 0 .2
    assert lag == pytest.approx({"p50": 0.0, "p90": 0.12, "p99": 0.192, "max": 0.2})  # p90: index 3.6
    unsent = requests([{"model": "a", "scheduled_s": 1.0, "status": "unfinished", "received_tokens": 0}])
    unsent["sent_s"] = NAN  # never sent (the factory would fill in the scheduled time)
    assert all(math.isnan(v) for v in send_lag_stats_s(unsent).values())
    assert math.isnan(summarize(unsent)["all"]["p99_send_lag_s"])  # not measured: NaN, never 0


def test_per_model_groups_use_the_whole_run_span(summary: dict) -> None:
    a, b = summary["a"], summary["b"]
    assert a["p50_ttft_s"] == pytest.approx(0.275)
    assert a["slo_attainment"] == pytest.approx(0.5)
    assert a["goodput_rps"] == pytest.approx(1 / 4.0)
    assert b["slo_attainment"] == 0.0
    assert b["p50_ttft_s"] == pytest.approx(1.15)  # .3 and 2.0
    assert set(summary) == {"all", "a", "b"}


def test_tighter_slo_changes_attainment() -> None:
    s = summarize(requests(TABLE), Slo(ttft_s=10.0, tpot_s=1.0))["all"]
    assert s["slo_attainment"] == pytest.approx(0.6)  # r0 r1 r2


def test_empty_run_is_unavailable_not_zero() -> None:
    s = summarize(requests([]))
    assert list(s) == ["all"]
    s = s["all"]
    assert s["requests"] == 0
    for key in ("p99_ttft_s", "mean_ttft_s", "p99_ttft_paper_s", "slo_attainment", "goodput_rps",
                "throughput_rps", "ttft_under_100ms", "p99_send_lag_s", "p99_itl_s"):
        assert math.isnan(s[key]), key
    assert jsonable(s)["p99_ttft_s"] is None


def test_single_request() -> None:
    s = summarize(requests([dict(scheduled_s=2.0, first_token_s=2.25, end_s=3.25, output_tokens=5, received_tokens=5)]))["all"]
    assert s["p50_ttft_s"] == s["p99_ttft_s"] == s["mean_ttft_s"] == pytest.approx(0.25)
    assert s["p99_tpot_s"] == pytest.approx(0.25)
    assert s["p99_e2e_s"] == pytest.approx(1.25)
    assert s["throughput_rps"] == pytest.approx(1 / 1.25)
    assert s["slo_attainment"] == 0.0  # TPOT .25 > .1
    assert math.isnan(s["p99_itl_s"])  # no itl_s column: not measured


def test_all_failed_run() -> None:
    rows = [dict(scheduled_s=float(i), status=st, received_tokens=0) for i, st in enumerate(["error", "timeout", "unfinished"])]
    s = summarize(requests(rows))["all"]
    assert math.isnan(s["p99_ttft_s"]) and math.isnan(s["mean_tpot_s"]) and math.isnan(s["p50_e2e_s"])
    assert s["p50_ttft_paper_s"] == PAPER_UNFINISHED_TTFT_S
    assert s["slo_attainment"] == 0.0 and s["ttft_under_100ms"] == 0.0
    assert s["throughput_rps"] == 0.0 and s["goodput_rps"] == 0.0  # span 0..2 s, nothing finished
    assert s["failed"] == 3


def test_received_tokens_override_asked_for_tpot() -> None:
    # asked for 11, got 3 back: TPOT over the 2 gaps that happened
    s = summarize(requests([dict(first_token_s=0.1, end_s=0.3, output_tokens=11, received_tokens=3)]))["all"]
    assert s["p50_tpot_s"] == pytest.approx(0.1)
    s = summarize(requests([dict(first_token_s=0.1, end_s=1.1, output_tokens=11, received_tokens=NAN)]))["all"]
    assert s["p50_tpot_s"] == pytest.approx(0.1)


def test_ttft_split_by_start_kind() -> None:
    rows = [
        dict(scheduled_s=0.0, first_token_s=0.1, end_s=0.2, start_kind="warm", queue_s=0.02, load_s=0.0, prefill_s=0.08),
        dict(scheduled_s=1.0, first_token_s=1.3, end_s=1.4, start_kind="warm", queue_s=0.1, load_s=0.0, prefill_s=0.2),
        dict(scheduled_s=2.0, first_token_s=12.0, end_s=12.5, start_kind="cold", queue_s=0.0, load_s=9.5, prefill_s=0.5),
        dict(scheduled_s=3.0, status="error"),
    ]
    table = by_start_kind(requests(rows)).set_index("start_kind")
    assert table.index.tolist() == ["warm", "cold", "unknown"]
    assert table.loc["warm", "requests"] == 2 and table.loc["warm", "share"] == pytest.approx(0.5)
    assert table.loc["warm", "mean_ttft_s"] == pytest.approx(0.2)
    assert table.loc["warm", "mean_queue_s"] == pytest.approx(0.06)
    assert table.loc["cold", "mean_load_s"] == pytest.approx(9.5)
    assert math.isnan(table.loc["unknown", "mean_ttft_s"]) and math.isnan(table.loc["unknown", "mean_load_s"])
    s = summarize(requests(rows))["all"]
    assert s["mean_load_s"] == pytest.approx(9.5 / 3) and s["mean_prefill_s"] == pytest.approx(0.26)
    assert by_start_kind(requests([])).empty


def test_paired_ratio_ci_is_a_t_interval_on_log_ratios() -> None:
    assert paired_ratio_ci([2.0, 4.0], [1.0, 2.0]) == pytest.approx((2.0, 2.0))  # same ratio every seed
    lo, hi = paired_ratio_ci([2.0, 8.0], [1.0, 2.0])  # ratios 2 and 4: mean log 1.5 ln2, sd ln2 / sqrt(2)
    half = 12.706 * (math.log(2) / math.sqrt(2)) / math.sqrt(2)
    assert (lo, hi) == pytest.approx((math.exp(1.5 * math.log(2) - half), math.exp(1.5 * math.log(2) + half)))
    # more seeds, narrower: t(4) = 2.776
    ratios = [1.1, 1.2, 1.0, 1.15, 1.05]
    lo5, hi5 = paired_ratio_ci(ratios, [1.0] * 5)
    assert 1.0 < lo5 < 1.01 and 1.19 < hi5 < 1.21  # all five better: the interval excludes 1


def test_paired_ratio_ci_is_none_where_unmeasurable() -> None:
    assert paired_ratio_ci([2.0], [1.0]) is None              # one seed
    assert paired_ratio_ci([2.0, 0.0], [1.0, 1.0]) is None    # a zero has no log ratio
    assert paired_ratio_ci([2.0, NAN], [1.0, 1.0]) is None    # unavailable stays unavailable
