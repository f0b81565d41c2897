"""The ClusterAPI Protocol is exactly what policies use, and the simulator core implements all of it."""

import re
from pathlib import Path

from systems.sim.core import Simulator
from systems.sim.policy import ClusterAPI

ROOT = Path(__file__).resolve().parents[2] / "systems" / "sim"
POLICY_SOURCES = [ROOT / "policy.py", ROOT / "autoscale.py", *sorted((ROOT / "policies").rglob("*.py"))]


def api_members() -> set[str]:
    return {n for n in vars(ClusterAPI) if not n.startswith("_")}


def used_by_policies() -> set[str]:
    return {m for path in POLICY_SOURCES for m in re.findall(r"(?<![\w.])sim\.(\w+)", path.read_text())}


def test_policies_reach_the_simulator_only_through_the_cluster_api():
    assert used_by_policies() - api_members() == set()


def test_the_cluster_api_has_nothing_policies_do_not_use():
    assert api_members() - used_by_policies() == set()


def test_the_simulator_implements_every_cluster_api_member():
    assert [m for m in sorted(api_members()) if not hasattr(Simulator, m) and m not in Simulator.__init__.__code__.co_names] == []
