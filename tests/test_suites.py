"""Eval suites: fixed files bound to a dataset hash; a fresh eval dataset matches the record;
a mismatch is refused; `regenerate` proves the dataset byte-identical."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import roadsense_cli

from roadsense.data import (
    DEFAULT_EVAL_DATASET,
    DEFAULT_TRAIN_DATASET,
    DEFAULT_VALIDATION_DATASET,
    ScenarioManager,
    ensure_dataset,
    load_suite,
)
from roadsense.data.index import read_index
from roadsense.data.manifest import MANIFEST_NAME
from roadsense.errors import DatasetError, EvalSuiteError
from roadsense.rllib.settings import TrainSettings
from scenario_factory import make_suites


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh eval dataset, generated from nothing as on a fresh clone."""
    root = tmp_path_factory.mktemp("datasets")
    ensure_dataset(DEFAULT_EVAL_DATASET, root, workers=2)
    return root


@pytest.mark.parametrize("name,lo,hi", [("smoke", 4, 6), ("standard-v1", 200, 400),
                                        ("no-hazard-v1", 50, 100)])
def test_suite_files_load(name: str, lo: int, hi: int):
    suite = load_suite(name)
    assert suite.name == name and suite.version == "1"
    assert suite.dataset.name == DEFAULT_EVAL_DATASET and len(suite.dataset.manifest_hash) == 64
    assert lo <= len(suite.episodes) <= hi
    if name == "no-hazard-v1":
        assert all(e.hazard is None for e in suite.episodes)


def test_fresh_eval_dataset_matches_every_suite(root: Path):
    for name in ("smoke", "standard-v1", "no-hazard-v1"):
        mgr = load_suite(name).open(root)
        assert mgr.manifest_hash == load_suite(name).dataset.manifest_hash


def test_standard_suite_spans_peer_counts_ranks_and_radio_levels(root: Path):
    suite = load_suite("standard-v1")
    rows = {r["scenario_id"]: r for r in read_index(root / "eval-v1" / "index.parquet").to_pylist()}
    peers = {rows[e.scenario_id]["peer_count"] for e in suite.episodes}
    assert peers == set(range(13))
    for e in suite.episodes:
        assert 1 <= e.hazard["rank"] <= rows[e.scenario_id]["vehicles_ahead"]
        assert 2.5 <= e.hazard["decel_mps2"] <= 9.0
    assert {json.dumps(e.radio, sort_keys=True) for e in suite.episodes} == {
        "{}", '{"loss_rate": 0.15}', '{"loss_rate": 0.3}'}
    assert max(e.hazard["rank"] for e in suite.episodes) >= 8
    opts = suite.episodes[0].reset_options()
    assert set(opts) == {"scenario_id", "hazard", "radio"}


def test_validation_suite_is_on_scenarios_neither_trained_nor_tested_on(root: Path):
    """validation-v3 (what `roadsense train` picks its checkpoint on) opens on a fresh val-v1:
    validation-v2's episodes, then two hard brakes of the car directly ahead per scenario; no
    val-v1 route file is one of the training or test datasets'; training refuses val-v1."""
    assert TrainSettings().validation_suite == "validation-v3"
    suite = load_suite("validation-v3")
    assert suite.dataset.name == DEFAULT_VALIDATION_DATASET
    mgr = suite.open(root)
    assert mgr.manifest_hash == suite.dataset.manifest_hash
    v2 = load_suite("validation-v2")
    assert suite.episodes[: len(v2.episodes)] == v2.episodes
    calm = [e for e in v2.episodes if e.hazard is None]
    assert len(calm) == len(v2.episodes) // 2 == 2 * len(mgr.ids)
    near = suite.episodes[len(v2.episodes):]
    assert len(near) == 2 * len(mgr.ids)
    assert {e.scenario_id for e in near} == set(mgr.ids)
    assert all(e.hazard["rank"] == 1 and 6.0 <= e.hazard["decel_mps2"] <= 9.0 for e in near)

    def routes(name: str) -> set[str]:
        files = json.loads((ensure_dataset(name, root) / MANIFEST_NAME).read_text())["files"]
        return {digest for path, digest in files.items() if path.endswith(".rou.xml")}

    val = routes(DEFAULT_VALIDATION_DATASET)
    assert len(val) == len(mgr.ids)
    assert not val & routes(DEFAULT_EVAL_DATASET) and not val & routes(DEFAULT_TRAIN_DATASET)
    with pytest.raises(DatasetError, match="split"):
        ScenarioManager.from_dataset(root / DEFAULT_VALIDATION_DATASET, split="train")


def test_suite_with_another_dataset_hash_is_refused(root: Path, tmp_path: Path):
    data = json.loads(load_suite("smoke").path.read_text())
    recorded = data["dataset"]["manifest_hash"]
    data["dataset"]["manifest_hash"] = "0" * 64
    path = tmp_path / "smoke-bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(EvalSuiteError) as info:
        load_suite(str(path)).open(root)
    msg = str(info.value)
    assert str(path) in msg and "0" * 64 in msg and recorded in msg and "refusing" in msg


def test_malformed_suite_names_the_field(tmp_path: Path):
    data = json.loads(load_suite("smoke").path.read_text())
    data["episodes"][1]["hazard"]["decel_mps2"] = 20
    path = tmp_path / "s.json"
    path.write_text(json.dumps(data))
    with pytest.raises(EvalSuiteError, match=r"episodes\[1\].hazard"):
        load_suite(str(path))
    with pytest.raises(EvalSuiteError, match="no eval suite"):
        load_suite("does-not-exist")


def test_suite_files_are_what_the_script_draws(root: Path):
    assert make_suites.main(["--root", str(root), "--check"]) == 0


@pytest.mark.slow
def test_regenerate_proves_byte_identical_and_catches_a_changed_copy(root: Path):
    proc = roadsense_cli("scenarios", "regenerate", "smoke", "--root", str(root))
    assert proc.returncode == 0, proc.stderr
    assert "byte-identical" in proc.stdout
    net = next((root / "eval-v1").glob("scenarios/*/*.net.xml"))
    original = net.read_bytes()
    try:
        net.write_bytes(original + b" ")
        proc = roadsense_cli("scenarios", "regenerate", "smoke", "--root", str(root))
        assert proc.returncode == 1
        assert f"differs: {net.relative_to(root / 'eval-v1').as_posix()}" in proc.stderr
    finally:
        net.write_bytes(original)
