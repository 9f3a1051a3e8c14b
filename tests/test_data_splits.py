"""The built-in datasets do not share scenarios: no route file, no drawn scenario and no whole
scenario (road + traffic) of the test set (eval-v1) or the validation set (val-v1) is in the
training set (default-v1), so the suites measure scenarios training never saw."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from roadsense.data import ensure_dataset
from roadsense.data.default import (
    DEFAULT_EVAL_DATASET,
    DEFAULT_TRAIN_DATASET,
    DEFAULT_VALIDATION_DATASET,
)

pytestmark = pytest.mark.slow

DATASETS = (DEFAULT_TRAIN_DATASET, DEFAULT_EVAL_DATASET, DEFAULT_VALIDATION_DATASET)


def _content(name: str) -> dict[str, set]:
    root = ensure_dataset(name, Path("datasets"))
    files = json.loads((root / "manifest.json").read_text())["files"]
    by_scenario: dict[str, dict[str, str]] = {}
    for path, sha in files.items():
        if path.startswith("scenarios/"):
            _, sid, fname = path.split("/")
            by_scenario.setdefault(sid, {})[fname.removeprefix(sid)] = sha
    params = pq.read_table(root / "index.parquet", columns=["params_json"]).column(0)
    return {
        "routes": {f[".rou.xml"] for f in by_scenario.values()},
        "scenarios": {(f[".net.xml"], f[".rou.xml"]) for f in by_scenario.values()},
        "draws": set(params.to_pylist()),
    }


@pytest.fixture(scope="module")
def contents() -> dict[str, dict[str, set]]:
    return {name: _content(name) for name in DATASETS}


@pytest.mark.parametrize(("a", "b"), list(itertools.combinations(DATASETS, 2)))
def test_datasets_share_no_route_and_no_scenario(contents, a: str, b: str) -> None:
    for kind in ("routes", "scenarios", "draws"):
        assert contents[a][kind] and contents[b][kind]
        shared = contents[a][kind] & contents[b][kind]
        assert not shared, f"{a} and {b} share {len(shared)} {kind}"


def test_every_scenario_has_its_own_routes(contents) -> None:
    """Within a dataset too: no two scenarios are the same traffic (a duplicate would weigh
    twice in a suite)."""
    from roadsense.data import ScenarioManager

    for name in DATASETS:
        count = len(ScenarioManager.from_dataset(ensure_dataset(name, Path("datasets")),
                                                 split="any"))
        assert len(contents[name]["routes"]) == count, name
