"""The CLI skeleton: user errors exit 2 with one line, no traceback."""

from __future__ import annotations

import re
import subprocess
import sys

from harness.cli import build_parser
from tests.conftest import ROOT


def test_help_lists_commands() -> None:
    text = build_parser().format_help()
    assert "bench" in text


def test_unknown_command_exits_2() -> None:
    proc = subprocess.run([sys.executable, "run.py", "no-such-command"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


#: The commands the README documents; more may be added, none of these may disappear.
DOCUMENTED = {"run", "trace", "sim", "replay", "calibrate", "report", "compare", "presets", "bench", "reproduce",
              "history"}


def _command_modules() -> set[str]:
    """Modules of harness/commands/ that define `register` (found on disk, not from COMMANDS)."""
    folder = ROOT / "harness" / "commands"
    return {p.stem for p in folder.glob("*.py") if "\ndef register(" in p.read_text()}


def test_every_command_module_is_listed_and_registers_under_its_own_name() -> None:
    """A command module missing from COMMANDS, or registering another name, fails here."""
    from harness.cli import COMMANDS

    modules = _command_modules()
    assert DOCUMENTED <= modules and set(COMMANDS) == modules
    listed = re.findall(r"^    ([a-z][\w-]*)", build_parser().format_help(), re.MULTILINE)  # argparse's command list
    assert set(listed) == modules
    for name in modules:
        sub = build_parser(name)
        assert sub.parse_args([name, *_minimal_args(name)]).command == name


def test_each_command_answers_help_with_its_own_usage(capsys) -> None:
    from harness.cli import main

    for name in sorted(_command_modules()):
        assert main([name, "--help"]) == 0
        assert f"usage: warmbench {name}" in capsys.readouterr().out


def _minimal_args(name: str) -> list[str]:
    return {
        "trace": ["stats", "x.csv"],
        "sim": ["--system", "dedicated", "--workload", "synthetic-week", "--out", "o"],
        "bench": ["sim"],
        "report": ["d"],
        "compare": ["a", "b"],
        "history": ["results"],
        "calibrate": ["run_dir", "--gpu", "H100-80GB"],
    }.get(name, [])


def test_presets_lists_the_simulator_options_from_their_models() -> None:
    """`presets` shows each option's default, accepted values and meaning as the options models
    declare them; an ablation lists only the defaults it changes."""
    from harness.commands.presets import _options_table

    table = _options_table()
    rows = list(zip(*(column._cells for column in table.columns)))
    by_option: dict[tuple[str, str], tuple[str, ...]] = {}
    system = ""
    for row in rows:
        system = row[0] or system
        by_option[(system, row[1])] = row[2:]
    assert by_option[("(any)", "engine_init_s")][:2] == ("auto", "a number >= 0 and <= 86400, or auto")
    assert by_option[("(any)", "cuda_graphs")][:2] == ("true", "a boolean")
    assert by_option[("warmserve", "window_s")][:2] == ("300", "a number >= 1 and <= 86400")
    assert by_option[("vllm-ondemand", "scale_up")][:2] == ("0.8", "a number > 0 and <= 100")
    assert by_option[("muxserve", "min_kv_fraction")][:2] == ("0.1", "a number >= 0 and < 1")
    assert by_option[("warmserve", "warm_engine_init_s")][2] == "Engine start with device + engine prewarming (an assumption)"
    ablation = [key for key in by_option if key[0] == "warmserve-no-prewarm (as warmserve)"]
    assert ablation == [("warmserve-no-prewarm (as warmserve)", "prewarm")]
    assert by_option[ablation[0]][0] == "false"
    assert ("dedicated", "(none)") in by_option
