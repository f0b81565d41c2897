"""Second round of hostile inputs: the kinds of issue 12 tried again with other files and values.
Each test is a failure the first round's fixes missed; it goes through the CLI and checks the exit
code, a one-line error without a traceback, and that nothing stale or lost is left behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.cli import main
from tests.hostile.conftest import cli, one_line_error

ROWS = ["arrival_s,model,input_tokens,output_tokens"] + [f"{i * 0.5},llama-2-7b,100,20" for i in range(40)]


def cluster_experiment(tmp_path: Path) -> Path:
    """An experiment on a cluster TOML next to it, referred to by a relative path."""
    (tmp_path / "mine.csv").write_text("\n".join(ROWS) + "\n")
    (tmp_path / "clu.toml").write_text('[[nodes]]\ncount = 1\ngpu = "A100-80GB"\ngpus_per_node = 2\n')
    path = tmp_path / "exp.toml"
    path.write_text('name = "clu"\ncluster = "clu.toml"\nmodels = ["llama-2-7b"]\nsystems = ["dedicated"]\n'
                    '[workload]\nspec = "mine.csv"\n')
    return path


def started_at(results: Path) -> str:
    return json.loads((results / "clu" / "dedicated_seed-0" / "manifest.json").read_text())["started_at"]


def test_edited_cluster_toml_reruns_the_run(tmp_path):
    exp = cluster_experiment(tmp_path)
    results = tmp_path / "results"
    assert cli("run", str(exp), "--results", str(results), "--no-report", "--jobs", "1")[0] == 0
    first = json.loads((results / "clu" / "dedicated_seed-0" / "manifest.json").read_text())
    # same path, new content: the old result describes another cluster
    (tmp_path / "clu.toml").write_text('[[nodes]]\ncount = 1\ngpu = "A100-80GB"\ngpus_per_node = 2\n'
                                       'pcie_gb_per_s = 4.0\n')
    assert cli("run", str(exp), "--results", str(results), "--no-report", "--jobs", "1")[0] == 0
    second = json.loads((results / "clu" / "dedicated_seed-0" / "manifest.json").read_text())
    assert second["config_sha256"] != first["config_sha256"]
    assert list((results / "clu" / ".history").rglob("manifest.json")), "the first run is kept, not lost"


def test_cluster_toml_is_relative_to_the_experiment_not_the_cwd(tmp_path, monkeypatch):
    exp = cluster_experiment(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    code, _, err = cli("run", str(exp), "--results", str(tmp_path / "results"), "--no-report", "--jobs", "1")
    assert code == 0, err
    manifest = json.loads((tmp_path / "results" / "clu" / "dedicated_seed-0" / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert os.path.isabs(manifest["config"]["cluster"])


def sim_run(tmp_path: Path, name: str = "base") -> Path:
    trace = tmp_path / "mine.csv"
    if not trace.exists():
        trace.write_text("\n".join(ROWS) + "\n")
    out = tmp_path / name
    code, _, err = cli("sim", "--system", "dedicated", "--workload", str(trace), "--out", str(out))
    assert code == 0, err
    return out


def test_gate_refuses_a_candidate_whose_request_table_was_truncated(tmp_path):
    import pandas as pd

    base = sim_run(tmp_path)
    cand = sim_run(tmp_path, "cand")
    table = pd.read_parquet(cand / "requests.parquet")
    table.iloc[: len(table) // 2].to_parquet(cand / "requests.parquet")  # the summary still says all is well
    code, _, err = cli("compare", str(base), str(cand), "--fail-if", "p99_ttft_s:+10%")
    msg = one_line_error(code, err)
    assert "requests.parquet" in msg and "summary.json counts" in msg


def test_gate_refuses_a_candidate_whose_request_table_is_not_parquet(tmp_path):
    import pandas as pd

    base = sim_run(tmp_path)
    cand = sim_run(tmp_path, "cand")
    pd.read_parquet(cand / "requests.parquet").to_csv(cand / "requests.parquet")
    code, _, err = cli("compare", str(base), str(cand), "--fail-if", "p99_ttft_s:+10%")
    assert "not a Parquet file" in one_line_error(code, err)


def test_manifest_of_a_newer_schema_is_bad_input_not_read_as_ours(tmp_path):
    base = sim_run(tmp_path)
    cand = sim_run(tmp_path, "cand")
    manifest = json.loads((cand / "manifest.json").read_text())
    manifest["schema_version"] = manifest["schema_version"] + 7
    (cand / "manifest.json").write_text(json.dumps(manifest))
    for args in (("compare", str(base), str(cand)), ("report", str(cand))):
        msg = one_line_error(*cli(*args)[::2])
        assert "schema_version" in msg and "newer" in msg


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/?api_key=SECRETq1", "http://127.0.0.1:9/v1?x=1&API_KEY=SECRETq1",
                                 "http://127.0.0.1:9/#token=SECRETq1", "http://127.0.0.1:9/?client_secret=SECRETq1",
                                 "m=http://127.0.0.1:9/?subscription-key=SECRETq1"])
def test_endpoint_with_a_key_in_its_query_is_one_redacted_line(tmp_path, url):
    """An `=` in a bare URL's query split it into a "model" and a "URL": the key was echoed as the URL."""
    trace = tmp_path / "w.csv"
    trace.write_text("arrival_s,model,input_tokens,output_tokens\n0.0,m,10,5\n")
    code, out, err = cli("replay", "--workload", str(trace), "--system", "openai", "--endpoint", url,
                         "--out", str(tmp_path / "run"))
    msg = one_line_error(code, err)
    assert "SECRETq1" not in out + err and "endpoint" in msg
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("raised, status", [(KeyboardInterrupt, "incomplete"), (RuntimeError, "failed")])
def test_sim_cut_short_leaves_a_manifest_that_says_so(tmp_path, monkeypatch, raised, status):
    """Ctrl-C (or a crash) during `sim` left an empty folder or bare tables: no manifest said what happened."""
    import systems.sim

    trace = tmp_path / "mine.csv"
    trace.write_text("\n".join(ROWS) + "\n")

    def cut(*_a, **_k):
        raise raised()

    monkeypatch.setattr(systems.sim, "simulate", cut)
    out = tmp_path / "run"
    args = ("sim", "--system", "dedicated", "--workload", str(trace), "--out", str(out))
    if raised is KeyboardInterrupt:
        code, _, err = cli(*args)
        assert code == 130 and "Traceback" not in err
    else:  # a bug in the simulator is a traceback, but the record says the run failed
        with pytest.raises(RuntimeError):
            cli(*args)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == status and manifest["interrupted"] == (raised is KeyboardInterrupt)
    again = cli("sim", "--system", "dedicated", "--workload", str(trace), "--out", str(out))
    assert "already holds a run" in one_line_error(again[0], again[2])  # the record is not overwritten


@pytest.mark.parametrize("line, key", [("seeds = [true]", "seeds.0"), ('seeds = ["1"]', "seeds.0"),
                                       ("duration_s = true", "duration_s"), ('[slo]\nttft_s = "0.5"', "slo.ttft_s"),
                                       ("[slo]\ntpot_s = false", "slo.tpot_s"),
                                       ('models = ["llama-2-7b", "llama-2-7b"]', "models")])
def test_wrong_type_in_an_experiment_field_is_not_coerced(tmp_path, line, key):
    """`true` was taken as 1 (a 1 s SLO, seed 1), "1" as 1, and a model listed twice merged silently."""
    (tmp_path / "mine.csv").write_text("\n".join(ROWS) + "\n")
    head = "" if line.startswith("models") else 'models = ["llama-2-7b"]\n'
    body = f'name = "ty"\nsystems = ["dedicated"]\n{head}'
    tail = '[workload]\nspec = "mine.csv"\n'
    text = body + (tail + line + "\n" if line.startswith("[slo]") else line + "\n" + tail)
    (tmp_path / "exp.toml").write_text(text)
    code, _, err = cli("run", str(tmp_path / "exp.toml"), "--results", str(tmp_path / "r"), "--no-report")
    msg = one_line_error(code, err)
    assert "exp.toml" in msg and f"'{key}" in msg
    assert not (tmp_path / "r" / "ty").exists()


def test_out_that_is_a_symlink_loop_is_one_line(tmp_path):
    (tmp_path / "w.csv").write_text("\n".join(ROWS) + "\n")
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    (tmp_path / "gone.parquet").symlink_to(tmp_path / "nowhere" / "x.parquet")
    (tmp_path / "p.png").symlink_to(tmp_path / "q.png")
    (tmp_path / "q.png").symlink_to(tmp_path / "p.png")
    (tmp_path / "r.toml").write_text('source = "w.csv"\n')
    for args in (("sim", "--system", "dedicated", "--workload", str(tmp_path / "w.csv"), "--out", str(tmp_path / "a")),
                 ("trace", "make", str(tmp_path / "r.toml"), "--out", str(tmp_path / "gone.parquet")),
                 ("trace", "stats", str(tmp_path / "w.csv"), "--plot", str(tmp_path / "p.png"))):
        code, _, err = cli(*args)
        assert "leads nowhere" in one_line_error(code, err)


def test_csv_that_names_a_column_twice_is_one_line(tmp_path):
    trace = tmp_path / "w.csv"
    trace.write_text("arrival_s,model,input_tokens,output_tokens,input_tokens\n0.5,llama-2-7b,10,5,12\n")
    code, _, err = cli("sim", "--system", "dedicated", "--workload", str(trace), "--out", str(tmp_path / "run"))
    msg = one_line_error(code, err)
    assert "w.csv" in msg and "'input_tokens'" in msg and "2 times" in msg
    assert not (tmp_path / "run").exists()


def test_toml_with_a_byte_order_mark_is_read(tmp_path):
    """Windows editors write a BOM; it is not part of the TOML (the CSV reader already skipped it)."""
    (tmp_path / "w.csv").write_text("\n".join(ROWS) + "\n")
    (tmp_path / "exp.toml").write_bytes('\ufeffname = "bom"\nmodels = ["llama-2-7b"]\nsystems = ["dedicated"]\n'
                                        '[workload]\nspec = "w.csv"\n'.encode())
    (tmp_path / "c.toml").write_bytes("\ufeff[[nodes]]\ncount = 1\n".encode())
    code, _, err = cli("run", str(tmp_path / "exp.toml"), "--results", str(tmp_path / "r"), "--no-report")
    assert code == 0, err
    code, _, err = cli("sim", "--system", "dedicated", "--workload", str(tmp_path / "w.csv"), "--cluster",
                       str(tmp_path / "c.toml"), "--out", str(tmp_path / "run"))
    assert code == 0, err


def test_trace_stats_plot_with_a_suffix_matplotlib_cannot_write(tmp_path):
    (tmp_path / "w.csv").write_text("\n".join(ROWS) + "\n")
    code, _, err = cli("trace", "stats", str(tmp_path / "w.csv"), "--plot", str(tmp_path / "rate.txt"))
    assert "--plot" in one_line_error(code, err) and not (tmp_path / "rate.txt").exists()


def test_recipe_whose_source_leads_back_to_itself(tmp_path):
    (tmp_path / "a.toml").write_text('source = "b.toml"\n')
    (tmp_path / "b.toml").write_text('source = "a.toml"\n')
    (tmp_path / "self.toml").write_text('source = "self.toml"\n')
    for recipe in ("a.toml", "self.toml"):
        code, _, err = cli("trace", "make", str(tmp_path / recipe), "--out", str(tmp_path / "o.parquet"))
        msg = one_line_error(code, err)
        assert recipe in msg and "leads back to itself" in msg
    code, _, err = cli("sim", "--system", "dedicated", "--workload", str(tmp_path / "a.toml"), "--out",
                       str(tmp_path / "run"))
    assert "leads back to itself" in one_line_error(code, err)


@pytest.mark.parametrize("args", [("sim", "--system", "dedicated", "--workload", "synthetic-week", "--out", ""),
                                  ("run", "nightly", "--results", ""), ("report", ""), ("compare", "", "x"),
                                  ("trace", "make", "r.toml", "--out", " "),
                                  ("replay", "--workload", "w.csv", "--system", "openai", "--out", "")])
def test_empty_path_is_not_the_current_directory(tmp_path, monkeypatch, args):
    """`--out "$UNSET"` wrote a run into the working directory."""
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(*args)
    assert "an empty path" in one_line_error(code, err)
    assert list(tmp_path.iterdir()) == []


def test_report_model_that_no_run_has(tmp_path):
    run = sim_run(tmp_path)
    code, _, err = cli("report", str(run), "--model", "gpt-9")
    assert "gpt-9" in one_line_error(code, err)


def test_jobs_far_above_the_grid_forks_no_more_workers_than_runs(tmp_path, monkeypatch):
    """`--jobs 100000` on a 2-run grid forked 100000 processes (load average 475 on 2 cores)."""
    from harness import executors

    sizes = []
    real = executors.ProcessPoolExecutor

    def pool(max_workers, **kw):
        sizes.append(max_workers)
        return real(max_workers=max_workers, **kw)

    monkeypatch.setattr(executors, "ProcessPoolExecutor", pool)
    (tmp_path / "w.csv").write_text("\n".join(ROWS) + "\n")
    (tmp_path / "exp.toml").write_text('name = "jobs"\nmodels = ["llama-2-7b"]\nsystems = ["dedicated", "ideal"]\n'
                                       '[workload]\nspec = "w.csv"\n')
    code, _, err = cli("run", str(tmp_path / "exp.toml"), "--results", str(tmp_path / "r"), "--jobs", "100000",
                       "--no-report")
    assert code == 0, err
    assert sizes and max(sizes) <= 2


def test_resume_redoes_a_run_whose_request_table_was_truncated(tmp_path):
    import pandas as pd

    (tmp_path / "w.csv").write_text("\n".join(ROWS) + "\n")
    exp = tmp_path / "exp.toml"
    exp.write_text('name = "tr"\nmodels = ["llama-2-7b"]\nsystems = ["dedicated"]\n[workload]\nspec = "w.csv"\n')
    args = ("run", str(exp), "--results", str(tmp_path / "r"), "--jobs", "1")
    assert cli(*args, "--no-report")[0] == 0
    table = tmp_path / "r" / "tr" / "dedicated_seed-0" / "requests.parquet"
    pd.read_parquet(table).iloc[:3].to_parquet(table)
    code, out, err = cli(*args)  # with the report: it would refuse the truncated table
    assert code == 0, err
    assert len(pd.read_parquet(table)) == len(ROWS) - 1
    kept = list((tmp_path / "r" / "tr" / ".history").rglob("requests.parquet"))
    assert len(kept) == 1 and len(pd.read_parquet(kept[0])) == 3


@pytest.mark.parametrize("options", ['api_key = ["sk-SWEEP1aaaa", "sk-SWEEP2bbbb"]',
                                     'url = ["http://u:SWEEP1pw@127.0.0.1:9", "http://u:SWEEP2pw@127.0.0.1:9"]',
                                     'headers = [{X-Key = "SWEEP1hdr"}, {X-Key = "SWEEP2hdr"}]'])
def test_credential_swept_would_name_the_run_folder(tmp_path, options):
    """`api_key = ["k1", "k2"]` is a sweep axis: the keys became run ids (folder names, tables, report)."""
    (tmp_path / "w.csv").write_text("arrival_s,model,input_tokens,output_tokens\n0.0,m,10,5\n")
    (tmp_path / "exp.toml").write_text(
        'name = "sw"\nbackend = "live"\nmodels = ["m"]\n'
        f'systems = [{{name = "openai", options = {{url = "http://127.0.0.1:9", {options}}}}}]\n'.replace(
            'url = "http://127.0.0.1:9", url', "url") + '[workload]\nspec = "w.csv"\n')
    code, out, err = cli("run", str(tmp_path / "exp.toml"), "--results", str(tmp_path / "r"))
    msg = one_line_error(code, err)
    assert "sweep axis" in msg and "systems[0].options." in msg and "SWEEP" not in out + err
    assert not (tmp_path / "r").exists()


def test_trace_make_never_overwrites_its_own_source(tmp_path):
    """`source = "t.parquet"` with `--out t.parquet` replaced the user's trace by its own window."""
    import pandas as pd

    src = tmp_path / "t.parquet"
    pd.DataFrame({"arrival_s": [0.1, 0.5, 1.0], "model": ["llama-2-7b"] * 3, "input_tokens": [10, 20, 30],
                  "output_tokens": [5, 5, 5]}).to_parquet(src)
    before = src.read_bytes()
    (tmp_path / "r.toml").write_text('source = "t.parquet"\n[[transforms]]\nkind = "window"\nend_s = 0.6\n')
    (tmp_path / "outer.toml").write_text('\ufeffsource = "r.toml"\n', encoding="utf-8")  # a BOM, and one level up
    for recipe, out in (("r.toml", "t.parquet"), ("outer.toml", "sub/../t.parquet"), ("r.toml", "t.history.parquet")):
        code, _, err = cli("trace", "make", str(tmp_path / recipe), "--out", str(tmp_path / out))
        assert "input of the recipe" in one_line_error(code, err)
    assert src.read_bytes() == before
    code, _, err = cli("trace", "make", str(tmp_path / "outer.toml"), "--out", str(tmp_path / "made.parquet"))
    assert code == 0, err


@pytest.mark.parametrize("header", ["Authorization: Bearer sk-HDRLEAK12345", "X-Api-Key:sk-HDRLEAK12345",
                                    "sk-HDRLEAK12345", "Bearer sk-HDRLEAK12345"])
def test_malformed_header_is_not_echoed(tmp_path, header):
    """curl's `Name: value` form (or a bare key) printed the whole value in the error line."""
    trace = tmp_path / "w.csv"
    trace.write_text("arrival_s,model,input_tokens,output_tokens\n0.0,m,10,5\n")
    code, out, err = cli("replay", "--workload", str(trace), "--system", "openai", "--endpoint", "http://127.0.0.1:9",
                         "--header", header, "--out", str(tmp_path / "run"))
    assert "--header" in one_line_error(code, err) and "HDRLEAK" not in out + err


@pytest.mark.parametrize("argv", [
    ["bench", "fidelity", "--plot", "{tmp}/parity.txt"],
    ["bench", "fidelity", "--table", ""],
    ["calibrate", "", "--gpu", "A100-80GB"],
    ["calibrate", "--table", "--gpu", "A100-80GB", "--out", ""],
])
def test_fidelity_and_calibrate_paths_are_checked_first(argv, tmp_path, capsys):
    """A plot name matplotlib cannot write and an empty path are one line and exit 2, not a traceback
    after the work (or a file named '.')."""
    
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())
