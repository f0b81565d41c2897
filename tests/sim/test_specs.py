from pathlib import Path

import pytest

from harness.contracts.errors import InputError, WarmbenchError
from systems.sim.specs import CLUSTERS, GPUS, MODELS, model_spec, resolve_cluster

PAPER_WEIGHTS = {"llama-2-7b": 13_476_831_232, "llama-2-13b": 26_032_558_080, "llama-2-70b": 137_961_209_856}


def test_paper_models_have_the_paper_weight_and_kv_bytes():
    for name, weights in PAPER_WEIGHTS.items():
        assert MODELS[name].weight_bytes == weights
    assert MODELS["llama-2-7b"].kv_bytes_per_token == 512 * 1024          # 0.5 MB
    assert MODELS["llama-2-13b"].kv_bytes_per_token == 800 * 1024         # 0.78 MiB ("0.8 MB")
    assert MODELS["llama-2-70b"].kv_bytes_per_token == 320 * 1024         # 0.3125 MB (GQA)
    assert [MODELS[m].tp for m in PAPER_WEIGHTS] == [1, 2, 4]


def test_parameter_counts_match_the_published_sizes():
    # Llama-2 7B computed from its config equals the paper's bytes; the others match model cards.
    from systems.sim.specs import _params
    assert 2 * _params(32, 4096, 32, 32, 11008, 32000) == PAPER_WEIGHTS["llama-2-7b"]
    assert round(MODELS["llama-3.1-8b"].weight_bytes / 2e9, 2) == 8.03
    assert round(MODELS["qwen2.5-7b"].weight_bytes / 2e9, 2) == 7.62
    assert round(MODELS["qwen2.5-72b"].weight_bytes / 2e9, 1) == 72.7
    assert len(MODELS) == 9


def test_model_spec_strips_copy_suffix_and_rejects_unknown():
    spec = model_spec("llama-2-7b#1")
    assert spec.weight_bytes == PAPER_WEIGHTS["llama-2-7b"] and spec.name == "llama-2-7b#1"
    with pytest.raises(WarmbenchError, match="unknown model"):
        model_spec("gpt-5")


def test_cluster_presets():
    assert CLUSTERS["paper-16gpu"].num_gpus == 16 and len(CLUSTERS["paper-16gpu"].nodes) == 2
    assert CLUSTERS["sim-512gpu"].num_gpus == 512
    assert CLUSTERS["paper-16gpu"].nodes[0].pcie_bytes_per_s == 32e9
    assert GPUS["H200"].memory_bytes > GPUS["H100-80GB"].memory_bytes


def test_cluster_toml(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text('name = "mixed"\n[[nodes]]\ncount = 2\ngpu = "H100-80GB"\ngpus_per_node = 4\n'
                    '[[nodes]]\ngpu = "A100-80GB"\nssd_gb_per_s = 3\n')
    spec = resolve_cluster(path)
    assert spec.name == "mixed" and spec.num_gpus == 16
    assert spec.nodes[0].gpu.name == "H100-80GB" and spec.nodes[2].ssd_bytes_per_s == 3e9


def test_cluster_toml_coefficients_change_the_perf_model_of_that_gpu_only(tmp_path: Path):
    from systems.sim.perf import PerfModel, coefficients_for
    path = tmp_path / "c.toml"
    path.write_text('[[nodes]]\ngpu = "H100-80GB"\n[[nodes]]\ngpu = "A100-80GB"\n'
                    '[coefficients.H100-80GB]\nprefill_scale = 2.0\ndecode_scale = 0.5\n')
    spec = resolve_cluster(path)
    h100, a100 = GPUS["H100-80GB"], GPUS["A100-80GB"]
    assert coefficients_for(a100, spec.coefficients) == coefficients_for(a100)
    base, scaled = PerfModel(MODELS["llama-2-7b"], h100, 1), PerfModel(MODELS["llama-2-7b"], h100, 1,
                                                                      coefficients_for(h100, spec.coefficients))
    assert scaled.prefill_s(512, 1, 512 ** 2) == pytest.approx(2.0 * base.prefill_s(512, 1, 512 ** 2))
    assert scaled.decode_s(8, 4000) == pytest.approx(0.5 * base.decode_s(8, 4000))
    assert scaled.decode_fixed_s(8) + scaled.decode_ctx_slope_s * 4000 == pytest.approx(scaled.decode_s(8, 4000))
    # a chunked iteration runs its body at prefill speed, its KV reads at decode speed
    body = base.mixed_s(256, 1, 256 ** 2, 8, 0)
    assert scaled.mixed_s(256, 1, 256 ** 2, 8, 4000) == pytest.approx(2.0 * body + 0.5 * base.decode_ctx_slope_s * 4000)


def test_model_spec_from_a_hugging_face_config(tmp_path: Path):
    import json

    from systems.sim.specs import model_spec_from_config
    cfg = {"num_hidden_layers": 32, "hidden_size": 4096, "num_attention_heads": 32, "intermediate_size": 11008,
           "vocab_size": 32000, "torch_dtype": "float16"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    spec = model_spec_from_config(tmp_path, "mine")
    assert spec.name == "mine" and spec.kv_heads == 32 and spec.tp == 1  # no num_key_value_heads: MHA
    assert spec.weight_bytes == PAPER_WEIGHTS["llama-2-7b"]  # no safetensors: parameters x 2 bytes
    (tmp_path / "model.safetensors").write_bytes(b"x" * 1234)
    assert model_spec_from_config(tmp_path / "config.json").weight_bytes == 1234
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "hidden_size": "big"}))
    with pytest.raises(InputError) as info:
        model_spec_from_config(tmp_path)
    assert info.value.field == "hidden_size" and "config.json" in str(info.value)


@pytest.mark.parametrize("body,field", [
    ('[[nodes]]\ngpu = "V100"\n', "nodes.0.gpu"),
    ('[[nodes]]\n[coefficients.V100]\nflops_eff = 0.5\n', "coefficients.V100"),
    ('[[nodes]]\n[coefficients.A100-80GB]\nprefil_scale = 2\n', "coefficients.A100-80GB.prefil_scale"),
    ('[[nodes]]\n[coefficients.A100-80GB]\ndecode_scale = 0\n', "coefficients.A100-80GB.decode_scale"),
    ('[[nodes]]\ncount = 0\n', "nodes.0.count"),
    ('[[nodes]]\ngpus = 8\n', "nodes.0.gpus"),
])
def test_bad_cluster_toml_names_file_and_field(tmp_path: Path, body: str, field: str):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(InputError) as info:
        resolve_cluster(path)
    assert info.value.field == field and "bad.toml" in str(info.value)


def test_unknown_cluster_name():
    with pytest.raises(WarmbenchError, match="paper-16gpu"):
        resolve_cluster("nope")
