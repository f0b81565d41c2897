"""`run.py trace stats|make` as a user runs them: JSON output, files written, exit code 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from workloads import resolve


def cli(*args, timeout=120):
    """The real command line in a subprocess (slow to start: used sparingly)."""
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def cli_in_process(capsys, *args):
    """The same entry point in-process: exit code, stdout, stderr."""
    from harness.cli import main
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_stats_json_and_plot_for_the_preset(tmp_path, capsys):
    png = tmp_path / "rate.png"
    code, out, err = cli_in_process(capsys, "trace", "stats", "synthetic-week", "--json", "--plot", png,
                                    "-p", "duration_s=600", "-p", "history_days=1")
    assert code == 0, err
    stats = json.loads(out)
    for key in ("requests", "span_s", "rate_rps", "models", "input_tokens", "output_tokens", "dropped"):
        assert key in stats
    assert set(stats["input_tokens"]) == {"p50", "p90", "p99"}
    assert sum(stats["models"].values()) == stats["requests"] > 0
    assert stats["span_s"] <= 600
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # forecastability: measured at the history's 300 s, and why not at the other paper sizes
    fc = stats["forecast"]
    assert fc["300"]["windows"] == 4 and fc["300"]["peak_error"] > 0  # 1 whole window x 4 models
    assert fc["180"] == {"unavailable": "history is in 300 s windows"}
    assert fc["2400"] == {"unavailable": "replay shorter than one window"}


@pytest.mark.parametrize("content, words", [
    (None, "no such file"),
    ("", "empty"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:00,1,2\nlater,1,2\n", "row 2, field 'TIMESTAMP'"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:00,1,-2\n", "row 1, field 'GeneratedTokens'"),
    ("Timestamp,Model,Request tokens,Response tokens\n1,ChatGPT,x,3\n", "row 1, field 'Request tokens'"),
])
def test_bad_input_exits_2_naming_file_row_and_field(tmp_path, capsys, content, words):
    path = tmp_path / "trace.csv"
    if content is not None:
        path.write_text(content)
    code, _, err = cli_in_process(capsys, "trace", "stats", path)
    assert code == 2
    assert words in " ".join(err.split()) and path.name in err


def test_bad_input_from_the_real_command_line_has_no_traceback(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:00,1,2\nlater,1,2\n")
    proc = cli("trace", "stats", path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "row 2" in proc.stderr and "TIMESTAMP" in proc.stderr


def test_make_writes_a_workload_that_resolves_back(tmp_path, capsys, azure_2023_like):
    _make_resolves_back(tmp_path, capsys, azure_2023_like.path)


def test_make_on_the_real_trace_resolves_back(tmp_path, capsys, azure_2023_dir):
    _make_resolves_back(tmp_path, capsys, azure_2023_dir / "AzureLLMInferenceTrace_conv.csv")


def _make_resolves_back(tmp_path, capsys, source):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f"""
source = "{source}"
[zipf]
models = ["llama-2-7b", "llama-2-13b"]
alpha = 1.0
seed = 3
[[transforms]]
kind = "window"
start_s = 600
end_s = 1800
[[transforms]]
kind = "clip_lengths"
""")
    out = tmp_path / "w.parquet"
    code, stdout, err = cli_in_process(capsys, "trace", "make", recipe, "--out", out, "--json")
    assert code == 0, err
    stats = json.loads(stdout)
    w = resolve(out)
    assert len(w) == stats["requests"] and set(w.models) == {"llama-2-7b", "llama-2-13b"}
    assert w.duration_s < 1200 and w.requests["input_tokens"].max() <= 1024
    assert [t["name"] for t in w.meta["made_by"]["transforms"]] == ["assign_zipf", "window", "clip_lengths"]
    assert w.meta["made_by"]["sha256"] == resolve(source).meta["sha256"]


def test_make_rejects_a_bad_recipe_key_naming_it(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text('source = "synthetic-week"\n[[transforms]]\nkind = "scale_time"\nfactor = -1\n')
    code, _, err = cli_in_process(capsys, "trace", "make", recipe, "--out", tmp_path / "w.parquet")
    assert code == 2
    assert "field 'transforms.0.factor'" in " ".join(err.split())
    assert not (tmp_path / "w.parquet").exists()
