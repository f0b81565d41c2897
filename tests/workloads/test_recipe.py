"""Recipe TOML validation and execution (in-process)."""

from __future__ import annotations

import pytest

from harness.contracts.errors import InputError
from workloads import resolve
from workloads.recipe import load_recipe


def write(tmp_path, text):
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, field", [
    ('source = "synthetic-week"\nbogus = 1\n', "bogus"),
    ('source = "synthetic-week"\n[warmserve]\nalpha = "high"\n', "warmserve.alpha"),
    ('source = "synthetic-week"\n[warmserve]\ntotal_rps = 0\n', "warmserve.total_rps"),
    ('[warmserve]\n', "source"),
    ('source = "synthetic-week"\n[[transforms]]\nkind = "teleport"\n', "transforms.0"),
])
def test_errors_name_the_key(tmp_path, text, field):
    with pytest.raises(InputError) as info:
        load_recipe(write(tmp_path, text))
    assert info.value.field == field and info.value.file.endswith("r.toml")


def test_toml_syntax_error(tmp_path):
    with pytest.raises(InputError, match="not valid TOML"):
        load_recipe(write(tmp_path, "source = \n"))


def test_preset_source_with_params_and_transforms(tmp_path):
    path = write(tmp_path, """
source = "synthetic-week"
[source_params]
duration_s = 600
history_days = 1
seed = 2
[[transforms]]
kind = "scale_time"
factor = 2.0
""")
    w = resolve(path)
    assert 600 < w.duration_s <= 1200
    assert w.meta["params"]["seed"] == 2 and w.meta["transforms"][-1]["name"] == "scale_time"
    assert w.history is not None


def test_warmserve_section_over_a_week_long_canonical_file(tmp_path):
    import numpy as np

    from workloads.io import write_workload
    from workloads.workload import Workload, canonical_frame
    rng = np.random.default_rng(0)
    arrival = np.sort(rng.uniform(0, 4 * 86_400, 40_000))
    trace = Workload(canonical_frame(arrival, "src", rng.integers(1, 3000, 40_000), rng.integers(0, 2000, 40_000)),
                     {"source": "week"})
    write_workload(trace, tmp_path / "week.parquet")
    path = write(tmp_path, """
source = "week.parquet"
[warmserve]
models = ["llama-2-7b", "llama-2-13b"]
total_rps = 2.0
alpha = 0.5
start_day = 1
start_hour = 6.0
duration_s = 1200
history_days = 1
cv = 2.0
""")
    w = resolve(path)
    assert set(w.models) == {"llama-2-7b", "llama-2-13b"}
    assert len(w) == pytest.approx(2400, rel=0.15)
    assert [t["name"] for t in w.meta["transforms"]] == ["gamma_cv", "clip_lengths"]
    assert w.meta["params"]["alpha"] == 0.5 and w.history is not None
    assert w.history.groupby("model").size().to_dict() == {"llama-2-13b": 288, "llama-2-7b": 288}
