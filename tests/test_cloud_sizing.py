"""Cloud runs are sized to their cluster and run for the budget they were given."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from roadsense.cli.train import DEFAULT_BUDGET_MINUTES, resolve_budget
from roadsense.rllib.sizing import cluster_cpus, default_env_runners

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "budget, max_runtime, expected",
    [
        (None, None, DEFAULT_BUDGET_MINUTES),
        (None, 710.0, 710.0),  # a cloud run given its max runtime trains for all of it
        (30.0, 710.0, 30.0),
        (900.0, 710.0, 710.0),
        (3.0, None, 3.0),
    ],
)
def test_budget_follows_max_runtime(budget, max_runtime, expected):
    assert resolve_budget(budget, max_runtime) == expected


def _bootstrap(tmp_path: Path, worker_cpus: int = 16) -> Path:
    """cluster.yaml as `ray up` writes it on the head: node types' resources filled in."""
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    for name, t in config["available_node_types"].items():
        if name != config["head_node_type"]:
            t["resources"] = {"CPU": worker_cpus, **t["resources"]}
    path = tmp_path / "ray_bootstrap_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_shipped_cluster_offers_its_worker_cpus_not_the_heads(tmp_path: Path):
    config = yaml.safe_load(_bootstrap(tmp_path).read_text())
    # max_workers 8 nodes of 16 vCPUs; the head offers none (CPU: 0).
    assert cluster_cpus(config) == 8 * 16
    assert default_env_runners("auto", _bootstrap(tmp_path)) == 128


def test_global_cap_and_largest_nodes_first():
    config = {
        "head_node_type": "head", "max_workers": 3,
        "available_node_types": {
            "head": {"resources": {"CPU": 2}},
            "small": {"resources": {"CPU": 4}, "max_workers": 5},
            "big": {"resources": {"CPU": 8}, "max_workers": 2},
        },
    }  # fmt: skip
    assert cluster_cpus(config) == 2 + 2 * 8 + 1 * 4


def test_local_runs_and_unknown_clusters_use_one_runner_per_local_core(tmp_path: Path):
    local = os.cpu_count() or 2
    assert default_env_runners(None) == local
    assert default_env_runners("auto", tmp_path / "missing.yaml") == local
