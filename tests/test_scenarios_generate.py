"""Scenario generator: determinism, parallel == serial, incremental skip, the convoy contract,
and real SUMO loading every generated scenario with all its cars inserted at t=0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from roadsense.data.factory.families import check_convoy, draw_params
from roadsense.data.manifest import manifest_hash, read_manifest
from roadsense.errors import ConfigError, DatasetError
from scenario_factory import GeneratorSettings, generate_dataset

SETTINGS = GeneratorSettings(dataset_id="gen-test", seed=7, count=13)


def _tree(root: Path) -> dict[str, bytes]:
    """Every file's bytes except the manifest (it carries the creation time)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("serial") / "gen-test"
    generate_dataset(SETTINGS, out, workers=1)
    return out


def test_same_seed_gives_byte_identical_dataset_and_manifest_hash(serial: Path, tmp_path: Path):
    again = tmp_path / "gen-test"
    report = generate_dataset(SETTINGS, again, workers=1, validate=False)
    assert _tree(again) == _tree(serial)
    assert report.manifest_hash == read_manifest(serial)["manifest_hash"]
    a, b = read_manifest(serial), read_manifest(again)
    assert {k: v for k, v in a.items() if k != "created_utc"} == {
        k: v for k, v in b.items() if k != "created_utc"
    }


def test_parallel_output_equals_serial(serial: Path, tmp_path: Path):
    par = tmp_path / "gen-test"
    report = generate_dataset(SETTINGS, par, workers=2)
    assert _tree(par) == _tree(serial)
    assert report.manifest_hash == read_manifest(serial)["manifest_hash"]


def test_other_seed_gives_other_scenarios(serial: Path, tmp_path: Path):
    other = GeneratorSettings(dataset_id="gen-test", seed=8, count=13)
    report = generate_dataset(other, tmp_path / "o", validate=False)
    assert report.manifest_hash != read_manifest(serial)["manifest_hash"]


def test_rerun_skips_identical_scenarios_and_redoes_changed_ones(serial: Path, tmp_path: Path):
    import shutil

    copy = tmp_path / "gen-test"
    shutil.copytree(serial, copy)
    first = generate_dataset(SETTINGS, copy, workers=1)
    assert first.written == [] and len(first.skipped) == 13
    rou = next(copy.glob("scenarios/s0003-*/*.rou.xml"))
    rou.write_text(rou.read_text().replace('depart="0"', 'depart="1"', 1))
    net = next(copy.glob("scenarios/s0005-*/*.net.xml"))
    net.write_bytes(net.read_bytes() + b"\n")
    second = generate_dataset(SETTINGS, copy, workers=1)
    assert sorted(second.written) == sorted([rou.parent.name, net.parent.name])
    assert _tree(copy) == _tree(serial)
    assert second.manifest_hash == first.manifest_hash


def test_other_settings_in_same_folder_refused_unless_forced(serial: Path, tmp_path: Path):
    import shutil

    copy = tmp_path / "gen-test"
    shutil.copytree(serial, copy)
    smaller = GeneratorSettings(dataset_id="gen-test", seed=7, count=5)
    with pytest.raises(DatasetError, match="other settings"):
        generate_dataset(smaller, copy, validate=False)
    report = generate_dataset(smaller, copy, validate=False, force=True)
    assert len(list((copy / "scenarios").iterdir())) == 5
    assert len(report.written) == 5


def test_manifest_records_how_the_dataset_was_made(serial: Path):
    m = read_manifest(serial)
    assert m["manifest_hash"] == manifest_hash(m)
    assert m["seed"] == 7 and m["split"] == "train" and m["dataset_id"] == "gen-test"
    assert m["peer_count_histogram"] == {str(k): 1 for k in range(13)}
    assert m["parameter_ranges"]["tau_s"] == [0.6, 2.0]
    assert m["sumo_version"] == "1.28.0"
    assert any(k.startswith("road/") for k in m["base_scenario_hashes"])
    assert all(len(h) == 64 for h in m["files"].values())
    assert len(m["files"]) == 13 * 5
    assert GeneratorSettings.from_dict(m["settings"]) == SETTINGS


def test_index_has_one_row_per_scenario_with_drawn_parameters(serial: Path):
    table = pq.read_table(serial / "index.parquet")
    rows = table.to_pylist()
    assert [r["peer_count"] for r in rows] == list(range(13))
    for r in rows:
        params = json.loads(r["params_json"])
        assert r["vehicles_ahead"] == len(r["ahead_ids"])
        peers = [f"V{k:03d}" for k in range(2, r["peer_count"] + 2)]
        assert r["ahead_ids"][: r["peer_count"]] == peers
        assert params["convoy"][0]["id"] == "V001"
        assert 0.5 <= r["ego_action_step_s"] <= 1.5


@pytest.mark.parametrize("index", range(0, 39, 3))
def test_every_family_keeps_the_convoy_contract(index: int):
    settings = GeneratorSettings(dataset_id="x", seed=11, count=39)
    params = draw_params(index, settings)
    assert check_convoy(params) == []
    ego = params["convoy"][0]
    assert all(v["pos_m"] > ego["pos_m"] for v in params["convoy"][1:])
    assert params["road_length_m"] - max(v["pos_m"] for v in params["convoy"]) >= 2500
    if params["family"] == "rural":
        assert params["lanes"] == 1
    if params["family"] == "curved":
        assert params["curve_radii_m"]


def test_bad_settings_name_the_field():
    with pytest.raises(ConfigError, match="families"):
        GeneratorSettings(dataset_id="x", seed=1, count=1, families=("moon",))
    with pytest.raises(ConfigError, match="count"):
        GeneratorSettings(dataset_id="x", seed=1, count=0)


_SIM_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from roadsense.data.index import index_params
    from roadsense.sim import SumoProcess
    d = Path(sys.argv[1])
    out = {}
    with SumoProcess(next(d.glob("scenarios/*/*.sumocfg"))) as proc:
        for sid, p in sorted(index_params(d / "index.parquet").items()):
            states = proc.reset(seed=1, sumocfg=d / "scenarios" / sid / f"{sid}.sumocfg")
            want = sorted(v["id"] for v in p["convoy"] + p["background"])
            for _ in range(300):
                states = proc.step()
            order = [states.route_pos_m[states.index(v["id"])] for v in p["convoy"]]
            out[sid] = {"inserted": sorted(states.ids) == want,
                        "order_kept": order == sorted(order),
                        "collisions": len(proc.collisions)}
    print(json.dumps(out))
    """
)


@pytest.mark.slow
def test_sumo_inserts_every_car_at_t0_and_the_convoy_keeps_its_order(serial: Path):
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-c", _SIM_SCRIPT, str(serial)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result) == 13
    for sid, r in result.items():
        assert r == {"inserted": True, "order_kept": True, "collisions": 0}, sid
