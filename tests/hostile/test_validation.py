"""Hostile input at the edge: every bad value, file or path is exit 2 with one line naming the key or
file, no traceback, and nothing runs or gets written (issue 12, "validation at the edge, once")."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from pydantic import Field, ValidationError

from harness.cli import main
from harness.contracts.errors import InputError
from harness.contracts.options import validate
from systems.sim import CoreOptions, registry, split_options
from systems.sim.options import Count, SimOptions
from systems.sim.policy import Policy

BAD_NUMBERS = ["-1", "nan", "inf", "-inf", "1e30", "99999999999999999999999", "abc", "", "[1]"]


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return rc, err


def assert_rejected(rc: int, err: str, *needles: str) -> None:
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)


def sim(tmp_path: Path, *extra: str, system: str = "vllm-ondemand") -> list[str]:
    return ["sim", "--system", system, "--workload", "synthetic-week", "--out", str(tmp_path / "run"), *extra]


# ---------------------------------------------------------------- option bounds

def _option_models() -> list[type[SimOptions]]:
    return [CoreOptions, *(registry.options_model(name) for name in registry.names())]


def test_every_option_of_every_system_declares_bounds_its_default_meets() -> None:
    assert len(registry.names()) >= 9  # the README's systems: the loop below is not vacuous
    for model in _option_models():
        model()  # defaults are validated: raises if a default breaks its own bound
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}: say what the option is (a docstring)"

    class BadDefault(SimOptions):
        size: Count = Field(0, ge=1)
        """A size whose default breaks its bound."""

    with pytest.raises(ValidationError, match="size"):
        BadDefault()


def test_a_policy_declares_its_options_once() -> None:
    """One options model per system (name, default, bounds, meaning), registered with the class;
    no second table (the old OPTIONS + BOUNDS pair) to drift from it: `register` refuses one."""
    for name in registry.names():
        entry = registry.entry(name)
        assert entry.options is entry.policy.Options and issubclass(entry.options, SimOptions)
        assert not hasattr(entry.policy, "OPTIONS") and not hasattr(entry.policy, "BOUNDS"), name

    class Twice(Policy):
        OPTIONS = {"speed": 1.0}

    class NotAModel(Policy):
        Options = dict  # type: ignore[assignment]

    class ClashOptions(SimOptions):
        block_size: Count = Field(8, ge=1)
        """The core's option again."""

    class Clash(Policy):
        Options = ClashOptions

    for policy, why in ((Twice, "declare options in its Options model, not OPTIONS"),
                        (NotAModel, "must be a systems.sim.options.SimOptions model"), (Clash, "the core's")):
        with pytest.raises(ValueError, match=why):
            registry.register("h16-probe", policy)
    assert "h16-probe" not in registry.names()
    taken = registry.names()[0]
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(taken, Twice)


@pytest.mark.parametrize("option", sorted(CoreOptions.model_fields))
@pytest.mark.parametrize("value", BAD_NUMBERS)
def test_core_option_bad_values(option: str, value: str, tmp_path: Path, capsys) -> None:
    rc, err = cli(sim(tmp_path, "--option", f"{option}={value}"), capsys)
    assert_rejected(rc, err, option)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("option", ["gpu_memory_utilization", "block_size", "max_num_seqs", "max_num_batched_tokens"])
def test_core_option_zero_where_a_size_is_needed(option: str, tmp_path: Path, capsys) -> None:
    rc, err = cli(sim(tmp_path, "--option", f"{option}=0"), capsys)
    assert_rejected(rc, err, option)


@pytest.mark.parametrize("system,option,value", [
    ("vllm-ondemand", "tick_s", "0"), ("vllm-ondemand", "tick_s", "-0.5"), ("vllm-ondemand", "tick_s", "nan"),
    ("vllm-ondemand", "tick_s", "1e-9"), ("vllm-ondemand", "capacity", "0"), ("vllm-ondemand", "capacity", "1.5"),
    ("vllm-ondemand", "window_s", "inf"), ("vllm-ondemand", "scale_up", "0"), ("vllm-ondemand", "min_age_s", "-5"),
    ("warmserve", "window_s", "0"), ("warmserve", "n_recent", "-2"), ("warmserve", "tick_s", "abc"),
    ("warmserve", "prewarm", "maybe"), ("warmserve", "prewarm", "2"), ("warmserve", "warm_engine_init_s", "-1"),
    ("warmserve-no-prewarm", "replan_s", "0"), ("serverlessllm", "keep_alive_s", "-1"),
    ("serverlessllm", "host_memory_bytes", "-2"), ("serverlessllm", "capacity", "99999999999999999999999"),
    ("muxserve", "min_kv_fraction", "1"), ("muxserve", "min_kv_fraction", "-0.1"),
    ("muxserve", "group_size", "-1"), ("muxserve", "model_max_num_seqs", "0"),
])
def test_policy_option_bad_values(system: str, option: str, value: str, tmp_path: Path, capsys) -> None:
    rc, err = cli(sim(tmp_path, "--option", f"{option}={value}", system=system), capsys)
    assert_rejected(rc, err, option, system)


def test_unknown_option_lists_the_known_ones(tmp_path: Path, capsys) -> None:
    rc, err = cli(sim(tmp_path, "--option", "tick=1"), capsys)
    assert_rejected(rc, err, "'tick'", "tick_s", "engine_init_s")


def test_coerce_accepts_good_values() -> None:
    """The CLI gives strings and TOML numbers of either kind: both reach the model as its types."""
    out = validate(registry.options_model("vllm-ondemand"), {"tick_s": "0.25", "capacity": 8.0, "window_s": 3})
    assert (out.tick_s, out.capacity, out.window_s) == (0.25, 8, 3.0)
    assert isinstance(out.capacity, int) and isinstance(out.window_s, float)
    core, mine = split_options("warmserve", {"engine_init_s": "auto", "cuda_graphs": "off", "prewarm": "False",
                                             "placement": 1, "block_size": "32", "max_model_len": "1e3"})
    assert core.engine_init_s is None and core.cuda_graphs is False and core.block_size == 32
    assert core.max_model_len == 1000 and isinstance(core.max_model_len, int)
    assert mine.prewarm is False and mine.placement is True
    assert split_options("dedicated", {"engine_init_s": " AUTO "})[0].engine_init_s is None
    assert split_options("dedicated", {"engine_init_s": "4"})[0].engine_init_s == 4.0


@pytest.mark.parametrize("option,value,why", [
    ("cuda_graphs", True, None), ("block_size", True, "not a number (bool)"), ("tick_s", [1], "not a number (list)"),
    ("capacity", "1.5", "not a whole number"), ("prewarm", 2, "not a boolean"), ("prewarm", "maybe", "not a boolean"),
    ("engine_init_s", "automatic", "not a number"), ("tick_s", "1e400", "not finite"),
])
def test_coercion_refuses_what_it_cannot_read(option: str, value: object, why: str | None) -> None:
    if why is None:
        split_options("warmserve", {option: value})
        return
    with pytest.raises(InputError, match=re.escape(why)) as caught:
        split_options("warmserve", {option: value}, file="exp.toml")
    message = str(caught.value)
    assert message.startswith(f"file exp.toml, field '{option}': system 'warmserve': option '{option}':"), message
    assert len(message.splitlines()) == 1


def test_policy_built_directly_checks_its_options() -> None:
    from systems.sim.policies.vllm_ondemand import VllmOnDemand
    with pytest.raises(InputError, match="tick_s"):
        VllmOnDemand({"tick_s": 0})


def test_live_options_go_through_the_same_converter_and_never_quote_a_value() -> None:
    """Live options are validated by the same layer (one line naming the option, InputError: exit
    2), but their values may be credentials: the line names the option, never the value."""
    from systems.live.registry import parse_options

    secret = "sk-h16-do-not-print"
    for options, needle in (({"timeout_s": secret}, "option 'timeout_s'"),
                            ({"vocab_size": secret}, "option 'vocab_size'"),
                            ({"port": secret}, "unknown option 'port'; known: api, api_key")):
        with pytest.raises(InputError, match=re.escape(needle)) as caught:
            parse_options("openai", options)
        assert str(caught.value).startswith("live system 'openai': ")
        assert secret not in str(caught.value) and len(str(caught.value).splitlines()) == 1


# ---------------------------------------------------------------- CLI numbers and outputs

@pytest.mark.parametrize("flag,value", [
    ("--duration-s", "-5"), ("--duration-s", "0"), ("--duration-s", "nan"), ("--duration-s", "inf"),
    ("--duration-s", "abc"), ("--seed", "-1"), ("--seed", "1.5"), ("--seed", "99999999999999999999999"),
])
def test_sim_numeric_arguments(flag: str, value: str, tmp_path: Path, capsys) -> None:
    rc, err = cli(sim(tmp_path, f"{flag}={value}"), capsys)
    assert_rejected(rc, err, flag)


def test_duration_that_keeps_no_request(tmp_path: Path, capsys) -> None:
    rc, err = cli(sim(tmp_path, "--duration-s", "1e-6", "--option", "max_drain_s=0"), capsys)
    assert_rejected(rc, err, "--duration-s", "no requests")


def test_run_jobs_zero(capsys) -> None:
    rc, err = cli(["run", "default", "--jobs", "0"], capsys)
    assert_rejected(rc, err, "--jobs")


def test_sim_out_is_a_file(tmp_path: Path, capsys) -> None:
    target = tmp_path / "taken"
    target.write_text("x")
    rc, err = cli(["sim", "--system", "dedicated", "--workload", "synthetic-week", "--out", target], capsys)
    assert_rejected(rc, err, str(target), "not a directory")
    assert target.read_text() == "x"


def test_out_below_a_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "f").write_text("x")
    rc, err = cli(["sim", "--system", "dedicated", "--workload", "synthetic-week", "--out", tmp_path / "f" / "a" / "b"],
                  capsys)
    assert_rejected(rc, err, "--out", "is not a directory")


def test_trace_plot_and_make_outputs(tmp_path: Path, capsys) -> None:
    rc, err = cli(["trace", "stats", "synthetic-week", "-p", "duration_s=60", "--plot", tmp_path], capsys)
    assert_rejected(rc, err, "--plot", "is a directory")
    (tmp_path / "f").write_text("x")
    recipe = tmp_path / "r.toml"
    recipe.write_text('source = "synthetic-week"\n[source_params]\nduration_s = 60\nhistory_days = 1\n')
    rc, err = cli(["trace", "make", recipe, "--out", tmp_path / "f" / "w.parquet"], capsys)
    assert_rejected(rc, err, "--out")
    (tmp_path / "d.parquet").mkdir()
    rc, err = cli(["trace", "make", recipe, "--out", tmp_path / "d.parquet"], capsys)
    assert_rejected(rc, err, "--out", "is a directory")


def test_calibrate_arguments(tmp_path: Path, capsys) -> None:
    (tmp_path / "f").write_text("x")
    rc, err = cli(["calibrate", tmp_path, "--gpu", "H100-80GB", "--out", tmp_path / "f" / "c.toml"], capsys)
    assert_rejected(rc, err, "--out")
    rc, err = cli(["calibrate", tmp_path, "--gpu", "H100-80GB", "--nodes", "0"], capsys)
    assert_rejected(rc, err, "--nodes")


# ---------------------------------------------------------------- workload parameters

@pytest.mark.parametrize("param,value", [
    ("total_rps", "inf"), ("total_rps", "0"), ("total_rps", "-1"), ("total_rps", "abc"), ("total_rps", "NaN"),
    ("total_rps", "true"), ("total_rps", "1e9"), ("alpha", "-1"), ("alpha", "-0.001"), ("alpha", "nan"),
    ("duration_s", "-5"), ("duration_s", "0"), ("duration_s", "inf"), ("seed", "-1"), ("seed", "1.5"),
    ("seed", "99999999999999999999999"), ("history_days", "-1"), ("history_days", "2.5"), ("start_hour", "24"),
    ("window_s", "0"), ("cv", "0"), ("cv", "-2"), ("models", "[]"), ("models", "[1, 2]"),
])
def test_synthetic_params(param: str, value: str, capsys) -> None:
    rc, err = cli(["trace", "stats", "synthetic-week", "-p", "duration_s=60", "-p", "history_days=1",
                   "-p", f"{param}={value}"], capsys)
    assert_rejected(rc, err, param)


@pytest.mark.parametrize("body,needle", [
    ("alpha = -1.0", "alpha"), ("total_rps = inf", "total_rps"), ("seed = -3", "seed"),
    ("duration_s = nan", "duration_s"), ("cv = -1.0", "cv"),
])
def test_recipe_params(body: str, needle: str, tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'source = "synthetic-week"\n[warmserve]\n{body}\n')
    rc, err = cli(["trace", "make", recipe, "--out", tmp_path / "w.parquet"], capsys)
    assert_rejected(rc, err, str(recipe), needle)
    assert not (tmp_path / "w.parquet").exists()


HEADER = b"arrival_s,model,input_tokens,output_tokens\n"


@pytest.mark.parametrize("name,content,needles", [
    ("huge.csv", HEADER + b"0.0,llama-2-7b,99999999999999999999999,5\n", ["row 1", "input_tokens"]),
    ("huge2.csv", HEADER + b"0.0,llama-2-7b,3,5\n1.0,llama-2-7b,3,18446744073709551615\n", ["row 2", "output_tokens"]),
    ("neg.csv", HEADER + b"0.0,llama-2-7b,3,5\n1.0,llama-2-7b,-3,5\n", ["row 2", "input_tokens"]),
    ("frac.csv", HEADER + b"0.0,llama-2-7b,3.5,5\n", ["row 1", "input_tokens"]),
    ("nan.csv", HEADER + b"0.0,llama-2-7b,3,5\nnan,llama-2-7b,3,5\n", ["row 2", "arrival_s"]),
    ("inf.csv", HEADER + b"inf,llama-2-7b,3,5\n", ["row 1", "arrival_s"]),
    ("negtime.csv", HEADER + b"-1.0,llama-2-7b,3,5\n", ["row 1", "arrival_s"]),
    ("latin1.csv", HEADER + b"0.0,llama-2-7b,\xff\xfe,5\n", ["row 1", "input_tokens"]),
    ("binary.csv", b"\xff\xfe\x00\x01garbage\x00\n\x00\x00", ["binary.csv"]),
    ("fake.parquet", b"PAR1" + b"\x00" * 64 + b"PAR1", ["fake.parquet", "Parquet"]),
    ("text.parquet", b"this is not a parquet file\n", ["text.parquet"]),
    ("empty.csv", b"", ["empty.csv", "empty"]),
    ("header_only.csv", HEADER, ["header_only.csv"]),
])
def test_reader_files(name: str, content: bytes, needles: list[str], tmp_path: Path, capsys) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    rc, err = cli(["trace", "stats", path], capsys)
    assert_rejected(rc, err, name, *needles)


def test_reader_directory_and_missing(tmp_path: Path, capsys) -> None:
    rc, err = cli(["trace", "stats", tmp_path], capsys)
    assert_rejected(rc, err, str(tmp_path))
    rc, err = cli(["trace", "stats", tmp_path / "nope.csv"], capsys)
    assert_rejected(rc, err, "nope.csv")


def test_unreadable_file_is_an_input_error(tmp_path: Path, monkeypatch) -> None:
    from workloads.readers.common import check_file
    path = tmp_path / "t.csv"
    path.write_bytes(HEADER + b"0,m,1,1\n")
    real_open = open

    def deny(p, *a, **k):  # root ignores chmod: simulate the permission error at open()
        if str(p) == str(path):
            raise PermissionError(13, "Permission denied", str(p))
        return real_open(p, *a, **k)

    monkeypatch.setattr("builtins.open", deny)
    with pytest.raises(InputError, match="cannot read: Permission denied"):
        check_file(path)


def test_window_that_leaves_no_request(tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('source = "synthetic-week"\n[source_params]\nduration_s = 60\nhistory_days = 1\n'
                      '[[transforms]]\nkind = "window"\nstart_s = 5000\nend_s = 6000\n')
    rc, err = cli(["trace", "make", recipe, "--out", tmp_path / "w.parquet"], capsys)
    assert_rejected(rc, err, "leaves no requests")


# ---------------------------------------------------------------- simulator sanity

def test_model_that_fits_no_gpu_is_rejected_before_running() -> None:
    from dataclasses import replace

    from systems.sim import simulate
    from systems.sim.specs import model_spec
    from workloads import resolve

    work = resolve("synthetic-week", models=["big"], duration_s=60, history_days=1)
    with pytest.raises(InputError, match=r"model big needs 138\.0 GB per GPU at TP 1.*A100-80GB"):
        simulate(work, "paper-16gpu", "vllm-ondemand", models={"big": replace(model_spec("llama-2-70b"), tp=1)})


def test_cluster_too_small_for_a_model(tmp_path: Path, capsys) -> None:
    cluster = tmp_path / "small.toml"
    cluster.write_text("[[nodes]]\ngpus_per_node = 2\n")
    rc, err = cli(sim(tmp_path, "--cluster", cluster, "--duration-s", "60"), capsys)
    assert_rejected(rc, err, "llama-2-70b", "TP 4")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("line", ["count = 0", "count = 100000000000", "gpus_per_node = 0",
                                  "ssd_gb_per_s = inf", "host_memory_gib = nan", "pcie_gb_per_s = -1"])
def test_cluster_file_bounds(line: str, tmp_path: Path, capsys) -> None:
    cluster = tmp_path / "c.toml"
    cluster.write_text(f"[[nodes]]\n{line}\n")
    rc, err = cli(sim(tmp_path, "--cluster", cluster), capsys)
    assert_rejected(rc, err, "c.toml", line.split(" ")[0])


# ---------------------------------------------------------------- experiment grids

def experiment(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "exp.toml"
    path.write_text('name = "hostile"\n' + body)
    return path


WORKLOAD = '[workload]\nspec = "synthetic-week"\nparams = {duration_s = 60, history_days = 1}\n'


@pytest.mark.parametrize("body,key", [
    ('systems = ["vllm-ondemand"]\n[workload]\nspec = "synthetic-week"\nparams = {total_rps = []}\n',
     "workload.params.total_rps"),
    ('systems = ["vllm-ondemand"]\nseeds = []\n' + WORKLOAD, "seeds"),
    ("systems = []\n" + WORKLOAD, "systems"),
    ('systems = ["vllm-ondemand"]\noptions = {engine_init_s = []}\n' + WORKLOAD, "engine_init_s"),
    ('systems = [{name = "vllm-ondemand", options = {tick_s = []}}]\n' + WORKLOAD, "systems[0].options.tick_s"),
    ('systems = ["vllm-ondemand"]\ncluster = []\n' + WORKLOAD, "cluster"),
    ('systems = ["vllm-ondemand", "nosuch"]\n' + WORKLOAD, "systems[1]"),
    ('systems = ["vllm-ondemand", {name = "serverlessllm", options = {capacity = "abc"}}]\n' + WORKLOAD,
     "systems[1].options.capacity"),
    ('systems = ["vllm-ondemand"]\noptions = {max_num_seqs = 0}\n' + WORKLOAD, "options.max_num_seqs"),
    ('systems = ["vllm-ondemand"]\noptions = {engine_init_s = [2.0, -50.0]}\n' + WORKLOAD, "options.engine_init_s"),
    ('systems = ["vllm-ondemand"]\noptions = {nosuch = 1}\n' + WORKLOAD, "options.nosuch"),
    ('systems = ["vllm-ondemand"]\n[workload]\nspec = "synthetic-week"\nparams = {alpha = -1.0}\n',
     "workload.params.alpha"),
    ('systems = ["vllm-ondemand"]\n[workload]\nspec = "synthetic-week"\nparams = {total_rps = [5.0, inf]}\n',
     "workload.params.total_rps"),
    ('systems = ["vllm-ondemand"]\nseeds = [0, -1]\n' + WORKLOAD, "seed"),
    ('systems = ["vllm-ondemand"]\nduration_s = inf\n' + WORKLOAD, "duration_s"),
    ('systems = ["vllm-ondemand"]\ncluster = "nosuch"\n' + WORKLOAD, "cluster"),
    ('systems = ["vllm-ondemand"]\nmodels = ["nosuch-model"]\n' + WORKLOAD, "models"),
    ('systems = ["vllm-ondemand"]\n[workload]\nspec = "missing.csv"\n', "workload.spec"),
    ('backend = "live"\nsystems = [{name = "openai", options = {time_scale = -1}}]\n' + WORKLOAD,
     "systems[0].options.time_scale"),
    # these keys are matched quoted, as the error names them
    ('systems = ["vllm-ondemand"]\nmodels = []\n' + WORKLOAD, "'models'"),
    ('systems = ["dedicated"]\nbaseline = "nosuch"\n' + WORKLOAD, "'baseline'"),
    ('systems = [{name = "dedicated", label = "a"}, {name = "vllm-ondemand", label = "a"}]\n' + WORKLOAD, "'systems'"),
    ('systems = ["vllm-ondemand"]\noptions = {gpu_memory_utilization = 0.01}\n' + WORKLOAD, "'models'"),
    ('systems = [{name = "muxserve", options = {min_kv_fraction = 1.5}}]\n' + WORKLOAD,
     "'systems[0].options.min_kv_fraction'"),
    ('systems = ["warmserve"]\noptions = {prewarm = "perhaps"}\n' + WORKLOAD, "'options.prewarm'"),
    ('systems = ["dedicated"]\noptions = {engine_init_s = {a = 1}}\n' + WORKLOAD, "'options.engine_init_s'"),
    ('systems = ["vllm-ondemand"]\n[slo]\nttft_s = inf\n' + WORKLOAD, "'slo.ttft_s'"),
])
def test_experiment_rejected_before_any_run(body: str, key: str, tmp_path: Path, capsys) -> None:
    path = experiment(tmp_path, body)
    rc, err = cli(["run", path, "--results", tmp_path / "results", "--no-report"], capsys)
    assert_rejected(rc, err, str(path), key)
    assert not (tmp_path / "results").exists()


def test_check_runs_accepts_the_shipped_presets() -> None:
    from harness import experiment as exp
    from harness.validate import check_runs
    for name in exp.preset_names():
        config, source = exp.load(name)
        check_runs(exp.grid(config), source)
        config, source = exp.load(name, quick=True)
        check_runs(exp.grid(config), source)


def test_nan_is_not_finite_anywhere() -> None:
    numeric = 0
    for model in _option_models():
        for name, field in model.model_fields.items():
            if field.annotation in (int, float, float | None):
                numeric += 1
                for nan in (math.nan, "nan", math.inf, "-inf"):
                    with pytest.raises(InputError, match=name):
                        validate(model, {name: nan})
    assert numeric >= 30


def test_model_a_policy_cannot_place_fails_with_a_reason() -> None:
    """Only discoverable mid-run (muxserve's grouping): the model's requests are errors with a
    reason, not "unfinished" with an empty error."""
    from systems.sim import simulate
    from workloads import resolve

    work = resolve("synthetic-week", models=["llama-2-7b", "llama-2-70b"], duration_s=60, history_days=1)
    req = simulate(work, "paper-16gpu", "muxserve", options={"group_size": 1}).requests
    big = req[req["model"] == "llama-2-70b"]
    assert len(big) and (big["status"] == "error").all()
    assert big["error"].str.contains("llama-2-70b fits no group").all()
    assert (req.loc[req["model"] == "llama-2-7b", "status"] == "ok").mean() > 0.9


@pytest.mark.parametrize("content", [b"\xff\xfe\x00 name = 1", b"name = \"x\"\n\xc3\x28 = 1\n"])
def test_non_utf8_experiment_and_cluster_files(content: bytes, tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    rc, err = cli(["run", path, "--results", tmp_path / "results"], capsys)
    assert_rejected(rc, err, "bad.toml")
    rc, err = cli(sim(tmp_path, "--cluster", path), capsys)
    assert_rejected(rc, err, "bad.toml")
    recipe = tmp_path / "r.toml"
    recipe.write_bytes(content)
    rc, err = cli(["trace", "make", recipe, "--out", tmp_path / "w.parquet"], capsys)
    assert_rejected(rc, err, "r.toml")


def test_experiment_path_is_a_directory(tmp_path: Path, capsys) -> None:
    (tmp_path / "exp.toml").mkdir()
    rc, err = cli(["run", tmp_path / "exp.toml", "--results", tmp_path / "results"], capsys)
    assert_rejected(rc, err, "exp.toml")


@pytest.mark.parametrize("name,content,needles", [
    ("far.csv", HEADER + b"0.0,llama-2-7b,3,5\n99999999999999999999999,llama-2-7b,3,5\n", ["row 2", "span"]),
    ("far2.csv", HEADER + b"18446744073709551616,llama-2-7b,3,5\n", ["row 1"]),
    ("m.jsonl", b'{"timestamp": 0, "input_length": 3, "output_length": 5, "hash_ids": []}\n'
                b'{"timestamp": 1, "input_length": "\xff", "output_length": 5, "hash_ids": []}\n', ["row 2", "UTF-8"]),
    ("m2.jsonl", b'{"timestamp": 0, "input_length": 3, "output_length": 5, "hash_ids": []}\n\n'
                 b'{"timestamp": -9, "input_length": 3, "output_length": 5, "hash_ids": []}\n', ["row 3", "negative"]),
    ("m3.jsonl", b'{"timestamp": 0, "input_length": 1e400, "output_length": 5, "hash_ids": []}\n', ["row 1"]),
])
def test_reader_times_and_encodings(name: str, content: bytes, needles: list[str], tmp_path: Path, capsys) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    rc, err = cli(["trace", "stats", path], capsys)
    assert_rejected(rc, err, name, *needles)


@pytest.mark.parametrize("param", ["columns=abc", "columns=[1,2]", 'columns={"arrival_s":5}', "model=123",
                                   "time_unit=5"])
def test_reader_param_types(param: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(HEADER.replace(b"arrival_s", b"t") + b"0.0,llama-2-7b,3,5\n")
    rc, err = cli(["trace", "stats", path, "-p", "columns={\"arrival_s\": \"t\"}" if "columns" not in param
                   else param, "-p", param], capsys)
    assert_rejected(rc, err, param.split("=")[0])


def test_experiment_reader_param_type(tmp_path: Path, capsys) -> None:
    trace = tmp_path / "t.csv"
    trace.write_bytes(HEADER + b"0.0,llama-2-7b,3,5\n")
    path = experiment(tmp_path, 'systems = ["vllm-ondemand"]\n[workload]\nspec = "t.csv"\n'
                                'params = {format = "table", columns = "abc"}\n')
    rc, err = cli(["run", path, "--results", tmp_path / "results"], capsys)
    assert_rejected(rc, err, "workload.params.columns")
