"""A URL without a host (`http:///v1`, or `localhost:8000` read as a scheme) is reported as such:
the HTTP client would otherwise raise a TypeError nobody catches or explains."""

from __future__ import annotations

import pytest

from harness.contracts.endpoint import Endpoint
from harness.loadgen.telemetry import fetch_metrics
from systems.live.openai import _ask


def test_a_metrics_url_without_a_host_is_a_scrape_failure_not_a_crash() -> None:
    with pytest.raises(OSError, match="no host"):  # the scraper counts OSError as a failed scrape
        fetch_metrics("http:///metrics", timeout_s=1.0)


def test_probing_an_endpoint_without_a_host_says_so() -> None:
    status, error = _ask(Endpoint(url="http:///v1"), lambda ep: ("/v1/completions", b"{}"), timeout_s=1.0)
    assert status is None
    assert error == "the endpoint URL names no host"
