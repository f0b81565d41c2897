"""`bench fidelity`, the validation table reader, the cuda_graphs engine mode and `calibrate --table`."""

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest

from harness.bench.fidelity import run as fidelity_run
from harness.bench.fidelity import serving_value
from harness.cli import main
from harness.contracts.errors import InputError
from systems.sim import split_options
from systems.sim.calibrate import fit_graph_overheads
from systems.sim.fidelity.table import COLUMNS, PUBLISHED_CSV, Row, read_table
from systems.sim.perf import CUDA_GRAPH_MAX_SEQS, GRAPH_ITERATION_S, GRAPH_LAYER_S, PerfModel
from systems.sim.specs import GPUS, MODELS, load_cluster_toml


def write_table(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in COLUMNS})
    return path


def shipped_dicts() -> list[dict]:
    with PUBLISHED_CSV.open(newline="") as f:
        return list(csv.DictReader(f))


def declared_out_of_band() -> list[str]:
    """Shipped rows that stay out of band after an honest fix and say so in their note
    ("OUT OF BAND: why"); every other simulated row must be in band."""
    return [r.id for r in read_table() if "OUT OF BAND:" in r.note]


def serving_row(**kw) -> dict:
    base = {"id": "r", "group": "serving", "source": "test", "gpu": "H100-80GB", "model": "llama-3.1-8b", "tp": 1,
            "engine": "vllm", "engine_mode": "cuda_graphs", "input_tokens": 32, "output_tokens": 128, "batch": 8,
            "metric": "e2e_mean", "value": 1000, "unit": "ms", "note": ""}
    return {**base, **kw}


# ------------------------------------------------------------------ shipped table

def test_every_shipped_serving_row_is_in_band():
    result = fidelity_run()
    rows = {r["id"]: r for r in result["rows"]}
    assert len(rows) == len(read_table())             # nothing dropped, start rows included
    vllm = [r for r in result["rows"] if r["group"] == "serving"]
    assert len(vllm) >= 3
    for r in vllm:
        assert r["simulated"] is not None and abs(r["ratio"] - 1) <= 0.10, r
    other = [r for r in result["rows"] if r["group"] == "other-engine"]
    assert other and all(r["simulated"] is not None and abs(r["ratio"] - 1) <= 0.35 for r in other), other
    for r in result["rows"]:
        assert (r["simulated"] is None) == (r["not_simulated"] is not None)


def test_planted_wrong_value_is_flagged(tmp_path: Path, capsys):
    rows = shipped_dicts()
    for r in rows:
        if r["id"] == "vllm-ci-h100-8b":
            r["value"] = str(float(r["value"]) * 1.5)    # 50% off: the simulator must disagree
    table = write_table(tmp_path / "planted.csv", rows)
    code = main(["bench", "fidelity", "--table", str(table), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1
    assert out["out_of_band"] == ["vllm-ci-h100-8b"] + declared_out_of_band()
    row = next(r for r in out["rows"] if r["id"] == "vllm-ci-h100-8b")
    assert row["in_band"] is False and row["ratio"] == pytest.approx(1 / 1.5, rel=0.1)


def test_simulated_value_follows_the_setup_not_the_table():
    row = read_table()[0]
    assert serving_value(row) == serving_value(replace(row, value=row.value * 7))
    longer = serving_value(replace(row, output_tokens=row.output_tokens * 2))
    assert longer > 1.8 * serving_value(row)


def test_json_shape_and_exit_code(capsys):
    code = main(["bench", "fidelity", "--json"])
    out = json.loads(capsys.readouterr().out)
    # exit 0 only when every simulated row is in band; the shipped table's known misses are declared
    declared = declared_out_of_band()
    assert out["out_of_band"] == declared and out["all_in_band"] is (not declared)
    assert code == (1 if declared else 0)
    assert set(out) >= {"table", "rows", "groups", "out_of_band", "all_in_band"}
    assert set(out["rows"][0]) >= {"id", "group", "published", "simulated", "ratio", "band", "in_band", "not_simulated"}
    g = out["groups"]["serving"]
    assert set(g) == {"rows", "simulated", "in_band", "band", "median_ratio", "worst_ratio"}
    assert g["band"] == 0.10 and g["in_band"] == g["simulated"]


def test_text_output_and_plot(tmp_path: Path, capsys):
    rows = [r for r in shipped_dicts() if r["group"] == "serving"] + [
        serving_row(id="fp8", model="qwen3-235b-a22b-fp8"), serving_row(id="nogpu", gpu="unknown"),
        serving_row(id="moe", model="qwen3-coder-30b-a3b"), serving_row(id="nopreset", model="mistral-7b")]
    table = write_table(tmp_path / "t.csv", rows)
    plot = tmp_path / "parity.png"
    code = main(["bench", "fidelity", "--table", str(table), "--plot", str(plot)])
    text = capsys.readouterr().out
    assert code == 0      # rows that are not simulated are shown, not judged
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for needle in ("not simulated: FP8", "not simulated: unknown GPU", "not simulated: MoE",
                   "not a preset", "median ratio", "vllm-ci-h100-70b"):
        assert needle in text, needle


@pytest.mark.parametrize("edit, needle", [
    (lambda rows: [{k: v for k, v in r.items() if k != "value"} for r in rows], "value"),
    (lambda rows: [rows[0], {**rows[1], "value": "fast"}], "row 2, field 'value'"),
    (lambda rows: [rows[0], {**rows[1], "group": "vibes"}], "row 2, field 'group'"),
    (lambda rows: [{**rows[0], "unit": "parsecs"}], "row 1, field 'unit'"),
    (lambda rows: [{**rows[0], "batch": ""}], "row 1, field 'batch'"),
    (lambda rows: [{**rows[0], "tp": "two"}], "row 1, field 'tp'"),
    (lambda rows: [rows[0], rows[0]], "row 2, field 'id'"),
])
def test_bad_table_exits_2_naming_file_row_column(tmp_path: Path, capsys, edit, needle):
    rows = edit(shipped_dicts())
    path = tmp_path / "bad.csv"
    with path.open("w", newline="") as f:
        fields = [c for c in COLUMNS if c in rows[0]]
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows({k: r.get(k, "") for k in fields} for r in rows)
    for argv in (["bench", "fidelity", "--table", str(path)], ["calibrate", "--table", str(path), "--gpu", "H100-80GB"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert str(path) in err and needle in err and "Traceback" not in err


def test_non_utf8_and_missing_tables_exit_2(tmp_path: Path, capsys):
    path = tmp_path / "latin1.csv"
    path.write_bytes(",".join(COLUMNS).encode() + b"\nx,serving,caf\xe9\n")
    assert main(["bench", "fidelity", "--table", str(path)]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    assert main(["bench", "fidelity", "--table", str(tmp_path / "nope.csv")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["bench", "sim", "--plot", str(tmp_path / "x.png")]) == 2


def test_row_reader_types():
    rows = read_table()
    r = rows[0]
    assert isinstance(r, Row) and isinstance(r.tp, int) and isinstance(r.value, float)
    assert r["gpu"] == r.get("gpu") == r.gpu
    starts = [x for x in rows if x.group == "weight-load"]
    assert starts and starts[0].input_tokens is None and starts[0].batch is None


# ------------------------------------------------------------------ engine mode

def test_eager_decode_is_slower_than_cuda_graphs_prefill_unchanged():
    for gpu, model, tp in (("A100-80GB", "llama-2-7b", 1), ("H100-80GB", "llama-3.1-70b", 4)):
        graphs = PerfModel(MODELS[model], GPUS[gpu], tp, cuda_graphs=True)
        eager = PerfModel(MODELS[model], GPUS[gpu], tp, cuda_graphs=False)
        assert eager.decode_s(8, 2000) > graphs.decode_s(8, 2000) * 1.1
        assert eager.prefill_s(512, 1, 512 ** 2) == graphs.prefill_s(512, 1, 512 ** 2)   # prefill runs eager
        big = CUDA_GRAPH_MAX_SEQS + 1                    # beyond the captured sizes: eager either way
        assert eager.decode_s(big, 10_000) == graphs.decode_s(big, 10_000)


def test_cuda_graphs_option_reaches_the_simulation():
    row = read_table()[0]
    assert row.engine_mode == "cuda_graphs"
    eager = serving_value(row, cuda_graphs=False)
    graphs = serving_value(row, cuda_graphs=True)
    assert eager > 1.15 * graphs
    assert split_options("dedicated", {"cuda_graphs": "false"})[0].cuda_graphs is False
    assert split_options("dedicated", {})[0].cuda_graphs is True       # vLLM's default
    with pytest.raises(InputError, match="cuda_graphs"):
        split_options("dedicated", {"cuda_graphs": "maybe"})


def test_shipped_graph_coefficients_are_the_fit():
    fit = fit_graph_overheads(serving_value)
    assert fit.graph_iteration_s == pytest.approx(GRAPH_ITERATION_S, rel=0.01)
    assert fit.graph_layer_s == pytest.approx(GRAPH_LAYER_S, rel=0.05, abs=2e-7)
    assert all(abs(r - 1) < 0.02 for r in fit.ratios) and len(fit.rows) >= 3


# ------------------------------------------------------------------ calibrate --table

def test_calibrate_table_recovers_planted_scales(tmp_path: Path, capsys):
    gpu, ps, ds = "H100-80GB", 1.3, 0.8
    setups = [("llama-3.1-8b", 1, 512, 64, 4, "ttft"), ("llama-3.1-8b", 1, 512, 64, 4, "tpot_p50"),
              ("llama-3.1-70b", 4, 1024, 32, 2, "ttft"), ("llama-3.1-70b", 4, 64, 256, 8, "e2e_mean"),
              ("qwen2.5-7b", 1, 2000, 16, 1, "ttft"), ("llama-2-13b", 2, 128, 128, 16, "tpot_p50")]
    rows = []
    for i, (model, tp, inp, out, batch, metric) in enumerate(setups):
        d = serving_row(id=f"p{i}", gpu=gpu, model=model, tp=tp, input_tokens=inp, output_tokens=out, batch=batch,
                        metric=metric)
        r = read_table(write_table(tmp_path / "one.csv", [d]))[0]
        d["value"] = repr(serving_value(r, ((gpu, "prefill_scale", ps), (gpu, "decode_scale", ds))))
        rows.append(d)
    rows.append(serving_row(id="elsewhere", gpu="A100-80GB", value=5))   # another GPU: not used
    table = write_table(tmp_path / "planted.csv", rows)
    out = tmp_path / "cal.toml"
    code = main(["calibrate", "--table", str(table), "--gpu", gpu, "--out", str(out), "--json"])
    fit = json.loads(capsys.readouterr().out)
    assert code == 0 and fit["shared_scale"] is False
    assert fit["prefill_scale"] == pytest.approx(ps, rel=0.01)
    assert fit["decode_scale"] == pytest.approx(ds, rel=0.01)
    assert len(fit["rows"]) == len(setups)
    assert fit["leave_one_out"]["rows"] == len(setups) and fit["leave_one_out"]["worst_abs_error"] < 0.02
    assert all(abs(r["ratio_after"] - 1) < 0.01 for r in fit["rows"])
    text = out.read_text()
    assert '[coefficients."H100-80GB"]' in text and "prefill_scale = 1.3" in text and "Leave-one-out" in text
    # the written cluster's coefficients reproduce the planted values
    written = load_cluster_toml(out).coefficients
    first = read_table(table)[0]
    assert serving_value(first, written) == pytest.approx(first.value, rel=0.01)
    code = main(["calibrate", "--table", str(table), "--gpu", gpu])
    printed = capsys.readouterr().out
    assert code == 0 and "leave-one-out |error|" in printed


def test_calibrate_table_without_rows_for_the_gpu_exits_2(tmp_path: Path, capsys):
    # the shipped table has H200 rows (held out); a table without them has nothing to fit on H200
    table = write_table(tmp_path / "no-h200.csv", [r for r in shipped_dicts() if r["gpu"] != "H200"])
    assert main(["calibrate", "--table", str(table), "--gpu", "H200"]) == 2
    assert "no simulatable serving rows on H200" in capsys.readouterr().err
    assert main(["calibrate", "--gpu", "H100-80GB"]) == 2
