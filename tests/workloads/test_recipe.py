"""Recipe TOML validation and execution (in-process)."""

from __future__ import annotations

import pytest

from harness.errors import InputError
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
