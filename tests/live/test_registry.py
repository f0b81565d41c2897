"""The live-system registry: a system is an options model and a builder; the harness validates and
builds every live system through it, so one registered from outside runs like the shipped ones."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict

from harness.contracts.endpoint import Endpoint
from harness.contracts.errors import WarmbenchError
from harness.contracts.live import LiveSystem
from harness.live import run_live
from systems.live import registry
from workloads.workload import Workload, canonical_frame


class _FixedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str


class _Fixed(LiveSystem):
    name = "fixed-for-test"


def _build(o: _FixedOptions, ctx: registry.Context) -> LiveSystem:
    eps = {m: Endpoint(url=o.url, served_name=m, token_ids=True) for m in ctx.models}
    return _Fixed(eps, ctx.events, ctx.run_dir, metrics=False)


@pytest.fixture
def fixed_system():
    registry.register("fixed-for-test", _FixedOptions, _build)
    try:
        yield "fixed-for-test"
    finally:
        registry._REGISTRY.pop("fixed-for-test")


def test_the_shipped_systems_are_registered() -> None:
    assert set(registry.names()) == {"openai", "vllm", "warmserve", "serverlessllm"}
    with pytest.raises(ValueError, match="twice"):
        registry.register("openai", _FixedOptions, _build)


def test_a_registered_system_is_validated_and_run_by_the_harness(fixed_system, standin, tmp_path: Path) -> None:
    with pytest.raises(WarmbenchError, match="option 'port'"):
        registry.parse_options(fixed_system, {"url": "http://x", "port": 1})
    with pytest.raises(WarmbenchError, match="fixed-for-test"):  # the error lists what is registered
        registry.parse_options("nope", {})
    url = standin("--ttft-ms", "5", "--gap-ms", "1")
    n = 6
    frame = canonical_frame(np.linspace(0.0, 0.3, n), ["m"] * n, np.full(n, 8), np.full(n, 4))
    result = run_live(Workload(frame, {"source": "test"}), fixed_system, {"url": url, "timeout_s": 5.0},
                      tmp_path / "run")
    assert result.manifest["status"] == "complete" and result.manifest["system"] == fixed_system
    assert (result.requests["status"] == "ok").all() and len(result.requests) == n
