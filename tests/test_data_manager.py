"""ScenarioManager: verified once on load, random picks from the env's RNG only, fixed lookups."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from roadsense.data import Scenario, ScenarioManager
from roadsense.errors import DatasetError
from scenario_factory import GeneratorSettings, generate_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mgr") / "mgr-test"
    generate_dataset(GeneratorSettings(dataset_id="mgr-test", seed=5, count=13), out,
                     validate=False)
    return out


def test_from_dataset_lists_scenarios_with_their_parameters(dataset: Path):
    mgr = ScenarioManager.from_dataset(dataset)
    assert len(mgr) == 13
    assert mgr.ids == sorted(mgr.ids)
    manifest = json.loads((dataset / "manifest.json").read_text())
    assert mgr.manifest_hash == manifest["manifest_hash"]
    s = mgr.get(mgr.ids[4])
    assert isinstance(s, Scenario)
    assert s.sumocfg.is_file() and s.sumocfg.is_absolute()
    assert s.peer_count == 4 == len(s.params["convoy"]) - 1
    assert s.family == s.params["family"]


def test_pick_is_a_function_of_the_rng_alone(dataset: Path):
    mgr = ScenarioManager.from_dataset(dataset)
    a = [mgr.pick(np.random.default_rng(42)).id for _ in range(3)]
    assert len(set(a)) == 1
    rng1, rng2 = np.random.default_rng(7), np.random.default_rng(7)
    seq1 = [mgr.pick(rng1).id for _ in range(50)]
    seq2 = [mgr.pick(rng2).id for _ in range(50)]
    assert seq1 == seq2
    assert len(set(seq1)) > 8  # uniform over 13 scenarios
    # a pickled copy (what each env runner gets) picks the same
    clone = pickle.loads(pickle.dumps(mgr))
    assert [clone.pick(np.random.default_rng(7)).id for _ in range(1)] == seq1[:1]


def test_unknown_id_names_the_dataset(dataset: Path):
    mgr = ScenarioManager.from_dataset(dataset)
    with pytest.raises(DatasetError, match="'nope' is not in this dataset"):
        mgr.get("nope")


def test_training_on_an_eval_dataset_is_refused(tmp_path: Path):
    out = tmp_path / "ev"
    generate_dataset(GeneratorSettings(dataset_id="ev", seed=1, count=2, split="eval"), out,
                     validate=False)
    with pytest.raises(DatasetError, match="split is 'eval', not 'train'"):
        ScenarioManager.from_dataset(out)
    assert len(ScenarioManager.from_dataset(out, split="eval")) == 2


def test_tampered_dataset_fails_on_load_listing_every_problem(dataset: Path, tmp_path: Path):
    d = tmp_path / "t"
    shutil.copytree(dataset, d)
    files = sorted((d / "scenarios").rglob("*.rou.xml"))
    files[0].write_text(files[0].read_text() + " ")
    files[1].unlink()
    with pytest.raises(DatasetError) as info:
        ScenarioManager.from_dataset(d)
    msg = str(info.value)
    assert f"{files[0]}: sha256 does not match" in msg
    assert f"{files[1]}: file listed in the manifest is missing" in msg


def test_single_scenario_needs_no_manifest(dataset: Path):
    cfg = next(dataset.glob("scenarios/*/*.sumocfg"))
    mgr = ScenarioManager.single(cfg)
    assert len(mgr) == 1 and mgr.manifest is None and mgr.manifest_hash is None
    assert mgr.pick(np.random.default_rng(0)).sumocfg == cfg.resolve()
    with pytest.raises(DatasetError, match="not found"):
        ScenarioManager.single(dataset / "missing.sumocfg")
