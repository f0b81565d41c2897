"""resolve(): presets, Azure LLM traces, canonical files."""

from __future__ import annotations

import pandas as pd
import pytest

from harness.contracts.errors import InputError, WarmbenchError
from workloads import resolve


def test_canonical_csv_round_trip(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("arrival_s,model,input_tokens,output_tokens\n0.5,a,10,3\n0.1,b,20,4\n")
    w = resolve(path)
    assert w.requests["arrival_s"].tolist() == [0.1, 0.5]
    assert w.requests["model"].tolist() == ["b", "a"]
    assert w.meta["format"] == "canonical" and w.meta["unsorted_rows"] == 1
    assert w.meta["rows_read"] == 2 and w.meta["rows_kept"] == 2 and len(w.meta["sha256"]) == 64


def test_canonical_parquet_with_request_id(tmp_path):
    path = tmp_path / "w.parquet"
    pd.DataFrame({"request_id": [7, 8], "arrival_s": [1.0, 2.0], "model": ["x", "y"],
                  "input_tokens": [1, 2], "output_tokens": [3, 4]}).to_parquet(path)
    w = resolve(path)
    assert w.requests["arrival_s"].tolist() == [1.0, 2.0]
    assert w.requests["request_id"].tolist() == [0, 1]


def test_azure_2023_format_trace(tmp_path):
    """The 2023 format as the real files have it: every row kept, arrivals exact to the 7th digit."""
    from tests.conftest import write_azure_2023_csv
    trace = write_azure_2023_csv(tmp_path / "code.csv", 900, seed=1)
    w = resolve(trace.path, model="llama-2-13b")
    assert len(w) == 900 and w.models == ["llama-2-13b"]
    assert w.meta["rows_read"] == w.meta["rows_kept"] == 900
    assert w.duration_s == pytest.approx(trace.arrival_s[-1], abs=1e-9)
    assert w.requests["arrival_s"].tolist() == pytest.approx(trace.arrival_s.tolist(), abs=1e-9)
    assert w.requests["input_tokens"].tolist() == trace.input_tokens.tolist()
    assert w.requests["output_tokens"].tolist() == trace.output_tokens.tolist()


def test_azure_real_trace(azure_2023_dir):
    w = resolve(azure_2023_dir / "AzureLLMInferenceTrace_code.csv", model="llama-2-13b")
    assert len(w) == 8819 and w.models == ["llama-2-13b"]
    assert w.meta["rows_read"] == w.meta["rows_kept"] == 8819
    assert 3400 < w.duration_s < 3600  # about one hour
    assert w.requests["arrival_s"].iloc[1] == pytest.approx(0.052, abs=1e-6)  # 7 fractional digits kept


def test_unknown_spec_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such file or preset"):
        resolve("no-such-preset")
    with pytest.raises(WarmbenchError, match="does not take"):
        resolve("synthetic-week", nonsense=1)
