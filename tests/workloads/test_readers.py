"""Each reader: what it keeps, what it drops (and counts), and how it names bad input."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from harness.contracts.errors import InputError
from workloads import resolve
from workloads.readers.detect import detect_format


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def reconciles(meta):
    json.dumps(meta)  # meta goes into run manifests as plain JSON
    return meta["rows_read"] == meta["rows_kept"] + sum(meta["dropped"].values())


# --- Azure LLM ---------------------------------------------------------------------------

AZURE_2024 = """TIMESTAMP,ContextTokens,GeneratedTokens
2024-05-10 00:00:00.009930+00:00,100,10
2024-05-10 00:00:01+00:00,200,20
2024-05-10 00:00:01.1234567+00:00,300,30
2024-05-10 00:00:02.5+00:00,400,40
"""


def test_azure_2024_mixed_precision_offsets_and_no_fraction(tmp_path):
    w = resolve(write(tmp_path, "a.csv", AZURE_2024), model="llama-2-70b")
    assert w.requests["arrival_s"].to_numpy() == pytest.approx([0.0, 0.99007, 1.1135267, 2.49007])
    assert w.models == ["llama-2-70b"]
    assert w.meta["format"] == "azure-llm" and reconciles(w.meta)
    assert w.meta["clock_origin_s"] == pytest.approx(pd.Timestamp("2024-05-10 00:00:00.00993", tz="UTC").timestamp())


def test_azure_2023_seven_digits_without_offset(tmp_path):
    text = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,1,2\n2023-11-16 18:17:04.0319601,3,4\n"
    w = resolve(write(tmp_path, "a.csv", text))
    assert w.requests["arrival_s"].iloc[1] == pytest.approx(0.0520001, abs=1e-7)


def test_azure_mixed_offset_and_naive_rows_fall_back_and_parse(tmp_path):
    text = "TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:00+00:00,1,2\n2024-05-10 00:00:03.25,3,4\n"
    w = resolve(write(tmp_path, "a.csv", text))
    assert w.requests["arrival_s"].tolist() == pytest.approx([0.0, 3.25])


def test_unsorted_rows_are_sorted_and_counted(tmp_path):
    text = ("TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:05,1,1\n2024-05-10 00:00:01,2,2\n"
            "2024-05-10 00:00:03,3,3\n2024-05-10 00:00:02,4,4\n")
    w = resolve(write(tmp_path, "a.csv", text))
    assert w.requests["input_tokens"].tolist() == [2, 4, 3, 1]
    assert w.meta["unsorted_rows"] == 2


@pytest.mark.parametrize("body, row, field, words", [
    ("2024-05-10 00:00:00,1,2\nyesterday,1,2\n", 2, "TIMESTAMP", "cannot parse timestamp"),
    ("2024-05-10 00:00:00,1,2\n2024-05-10 00:00:01,abc,2\n", 2, "ContextTokens", "not a number"),
    ("2024-05-10 00:00:00,1,2\n2024-05-10 00:00:01,1,-5\n", 2, "GeneratedTokens", "negative"),
    ("2024-05-10 00:00:00,1,2\n2024-05-10 00:00:01,1,\n", 2, "GeneratedTokens", "missing"),
    ("2024-05-10 00:00:00,1.5,2\n", 1, "ContextTokens", "whole number"),
])
def test_azure_bad_values_name_file_row_and_field(tmp_path, body, row, field, words):
    path = write(tmp_path, "bad.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n" + body)
    with pytest.raises(InputError, match=words) as info:
        resolve(path)
    assert (info.value.file, info.value.row, info.value.field) == (str(path), row, field)


def test_missing_column_names_it(tmp_path):
    path = write(tmp_path, "bad.csv", "TIMESTAMP,ContextTokens,Tokens\n2024-05-10 00:00:00,1,2\n")
    with pytest.raises(InputError, match="unknown trace format"):
        resolve(path)
    with pytest.raises(InputError) as info:
        resolve(path, format="azure-llm")
    assert info.value.field == "GeneratedTokens" and info.value.row == 0


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        resolve(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="empty"):
        resolve(write(tmp_path, "empty.csv", ""))
    with pytest.raises(InputError, match="no data rows"):
        resolve(write(tmp_path, "header.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"))


# --- Azure Functions 2019 ----------------------------------------------------------------

def functions_csv(tmp_path, rows):
    header = "HashOwner,HashApp,HashFunction,Trigger," + ",".join(str(i) for i in range(1, 1441))
    lines = [header]
    for k, counts in enumerate(rows):
        full = list(counts) + [0] * (1440 - len(counts))
        lines.append(f"o{k},a{k},f{k},http," + ",".join(str(c) for c in full))
    return write(tmp_path, "invocations_per_function_md.anon.d01.csv", "\n".join(lines) + "\n")


def test_azure_functions_counts_and_round_robin(tmp_path):
    path = functions_csv(tmp_path, [[3, 0, 1], [10], [0], [2, 2], [1]])
    w = resolve(path, models=["m0", "m1"], mapping="round-robin", arrivals="uniform")
    assert detect_format(path) == "azure-functions"
    assert len(w) == 3 + 1 + 10 + 4 + 1
    # ordered by volume: f1 (10) -> m0, f0 (4) -> m1, f3 (4) -> m0, f4 (1) -> m1
    assert w.requests["model"].value_counts().to_dict() == {"m0": 14, "m1": 5}
    assert w.meta["rows_read"] == 5 and w.meta["rows_kept"] == 4 and w.meta["dropped"] == {"no_invocations": 1}
    assert reconciles(w.meta)
    first_minute = np.sort(w.requests.loc[w.requests["arrival_s"] < 60, "arrival_s"].to_numpy())
    # f0's 3, f1's 10, f3's 2, f4's 1 in minute 1; uniform: evenly spaced per function.
    assert len(first_minute) == 16 and 10.0 in first_minute and 30.0 in first_minute


def test_azure_functions_stripe_and_poisson_are_seeded(tmp_path):
    path = functions_csv(tmp_path, [[5, 5], [4], [3], [2]])
    w = resolve(path, models=["m0", "m1"], mapping="stripe", arrivals="poisson", seed=1)
    assert w.meta["functions_per_model"] == {"m0": 2, "m1": 2}
    assert w.requests["model"].value_counts().to_dict() == {"m0": 14, "m1": 5}
    again = resolve(path, models=["m0", "m1"], mapping="stripe", arrivals="poisson", seed=1)
    pd.testing.assert_frame_equal(w.requests, again.requests)
    other = resolve(path, models=["m0", "m1"], mapping="stripe", arrivals="poisson", seed=2)
    assert not other.requests["arrival_s"].equals(w.requests["arrival_s"])
    assert (w.requests["arrival_s"] < 120).all()


def test_azure_functions_bad_count(tmp_path):
    path = functions_csv(tmp_path, [[1, 2], [3]])
    text = path.read_text().replace("o1,a1,f1,http,3,", "o1,a1,f1,http,-3,")
    path.write_text(text)
    with pytest.raises(InputError, match="negative") as info:
        resolve(path)
    assert (info.value.row, info.value.field) == (2, "1")


# --- BurstGPT ----------------------------------------------------------------------------

BURST_R1 = """Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type
5,ChatGPT,100,20,120,Conversation log
8,GPT-4,50,0,50,Conversation log
9,GPT-4,0,0,0,API log
12,ChatGPT,30,7,37,API log
"""
BURST_R3 = """Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,Log Type
5,s1,0.5,ChatGPT,100,20,120,Conversation log
8,s1,1.5,GPT-4,50,0,50,Conversation log
12,s2,0.3,GPT-4,30,7,37,API log
"""


def test_burstgpt_release1_drops_and_counts_failures_keeps_models(tmp_path):
    w = resolve(write(tmp_path, "b.csv", BURST_R1))
    assert w.meta["format"] == "burstgpt"
    assert w.requests["arrival_s"].tolist() == [0.0, 7.0]
    assert w.requests["model"].tolist() == ["llama-2-7b", "llama-2-7b"]
    assert w.meta["dropped"] == {"failed": 2} and w.meta["zero_input_and_output_rows"] == 1
    assert reconciles(w.meta) and w.meta["clock_origin_s"] == 5.0


def test_burstgpt_release3_by_column_name_and_model_map(tmp_path):
    w = resolve(write(tmp_path, "b3.csv", BURST_R3), model_map={"GPT-4": "llama-2-13b"}, keep_failures=True)
    assert w.requests["model"].tolist() == ["ChatGPT", "llama-2-13b", "llama-2-13b"]
    assert w.requests["input_tokens"].tolist() == [100, 50, 30]
    assert w.meta["release"] == 3 and w.meta["dropped"] == {"failed": 0} and reconciles(w.meta)
    assert w.requests["session_id"].tolist() == ["s1", "s1", "s2"]


def test_burstgpt_bad_timestamp(tmp_path):
    path = write(tmp_path, "b.csv", BURST_R1.replace("\n12,", "\nnoon,"))
    with pytest.raises(InputError) as info:
        resolve(path)
    assert (info.value.row, info.value.field) == (4, "Timestamp")


# --- Mooncake ----------------------------------------------------------------------------

def test_mooncake_jsonl(tmp_path):
    lines = [{"timestamp": 0, "input_length": 100, "output_length": 5, "hash_ids": [1, 2]},
             {"timestamp": 2500, "input_length": 10, "output_length": 50, "hash_ids": []},
             {"timestamp": 1000, "input_length": 7, "output_length": 3, "hash_ids": [3]}]
    path = write(tmp_path, "m.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    w = resolve(path, model="qwen2.5-7b")
    assert w.meta["format"] == "mooncake" and w.meta["unsorted_rows"] == 1
    assert w.requests["arrival_s"].tolist() == [0.0, 1.0, 2.5]
    assert w.requests["output_tokens"].tolist() == [5, 3, 50]


@pytest.mark.parametrize("bad, field, words", [
    ('{"timestamp": 5, "input_length": 1}', "output_length", "missing field"),
    ('{"timestamp": 5, "input_length": "x", "output_length": 1}', "input_length", "not a number"),
    ('{"timestamp": 5, "input_length": 1, "output_length": 1', None, "not valid JSON"),
])
def test_mooncake_bad_lines(tmp_path, bad, field, words):
    good = '{"timestamp": 0, "input_length": 1, "output_length": 1}'
    path = write(tmp_path, "m.jsonl", good + "\n\n" + bad + "\n")
    with pytest.raises(InputError, match=words) as info:
        resolve(path, format="mooncake")
    assert (info.value.row, info.value.field) == (3, field)


# --- any table with a column mapping -----------------------------------------------------

def test_mapped_csv_with_milliseconds_and_fixed_model(tmp_path):
    path = write(tmp_path, "t.csv", "t_ms,in,out\n1500,10,2\n500,20,3\n")
    w = resolve(path, columns={"arrival_s": "t_ms", "input_tokens": "in", "output_tokens": "out"},
                time_unit="ms", model="llama-2-13b")
    assert w.requests["arrival_s"].tolist() == [0.0, 1.0]
    assert w.meta["format"] == "table" and w.models == ["llama-2-13b"]


def test_mapped_parquet_with_timestamps(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"when": pd.to_datetime(["2024-01-01 00:00:01", "2024-01-01 00:00:00"]),
                  "llm": ["a", "b"], "p": [1, 2], "c": [3, 4]}).to_parquet(path)
    w = resolve(path, columns={"arrival_s": "when", "model": "llm", "input_tokens": "p", "output_tokens": "c"})
    assert w.requests["model"].tolist() == ["b", "a"] and w.requests["arrival_s"].tolist() == [0.0, 1.0]


def test_mapped_missing_column(tmp_path):
    path = write(tmp_path, "t.csv", "a,b\n1,2\n")
    with pytest.raises(InputError) as info:
        resolve(path, columns={"arrival_s": "a", "input_tokens": "b", "output_tokens": "c"}, model="m")
    assert info.value.field == "c"


# --- real traces -------------------------------------------------------------------------

def test_azure_2023_format_conv_trace(azure_2023_like):
    """What test_real_conv_trace checks on the real file, on a generated one in the same format."""
    path = azure_2023_like.path
    assert detect_format(path) == "azure-llm"
    w = resolve(path)
    assert len(w) == 2000 and reconciles(w.meta) and w.meta["unsorted_rows"] == 0
    assert w.requests["arrival_s"].is_monotonic_increasing
    assert w.requests["input_tokens"].median() == np.median(azure_2023_like.input_tokens)
    assert w.meta["clock_origin"] == "2023-11-16T18:15:46.680590+00:00"
    assert azure_2023_like.origin == "2023-11-16 18:15:46.6805900"
    exact = azure_2023_like.ticks / 1e7
    assert (w.requests["arrival_s"].to_numpy() == exact).all()  # exact to the 7th digit


def test_real_conv_trace(azure_2023_dir):
    path = azure_2023_dir / "AzureLLMInferenceTrace_conv.csv"
    assert detect_format(path) == "azure-llm"
    w = resolve(path)
    assert len(w) == 19366 and reconciles(w.meta) and w.meta["unsorted_rows"] == 0
    assert w.requests["arrival_s"].is_monotonic_increasing
    assert w.requests["input_tokens"].median() == 1020
    assert w.meta["clock_origin"] == "2023-11-16T18:15:46.680590+00:00"
    assert w.requests["arrival_s"].iloc[1] == 4.3145790  # exact to the 7th digit


def test_fast_request_frame_equals_canonical_frame():
    from workloads.readers.common import request_frame
    from workloads.workload import canonical_frame
    rng = np.random.default_rng(0)
    a, i, o = rng.random(200), rng.integers(0, 9, 200), rng.integers(0, 9, 200)
    m = rng.choice(["x", "y"], 200).astype(object)
    pd.testing.assert_frame_equal(request_frame(a, m, i, o, already_sorted=False), canonical_frame(a, m, i, o))
    s = np.sort(a)
    pd.testing.assert_frame_equal(request_frame(s, "z", i, o, already_sorted=True), canonical_frame(s, "z", i, o))


def test_ragged_row_is_located(tmp_path):
    path = write(tmp_path, "r.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:00,1,2\n"
                                    "2024-05-10 00:00:01,1,2,9\n")
    with pytest.raises(InputError, match="4 fields where the header has 3") as info:
        resolve(path)
    assert info.value.row == 2
