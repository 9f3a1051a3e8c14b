"""`roadsense scenarios check` reports every problem kind at once, with a non-zero exit code."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import roadsense_cli

from roadsense.data.check import verify_dataset
from scenario_factory import GeneratorSettings, generate_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("check") / "chk"
    generate_dataset(GeneratorSettings(dataset_id="chk", seed=3, count=8), out, workers=1)
    return out


def test_intact_dataset_passes(dataset: Path):
    assert verify_dataset(dataset) == []
    proc = roadsense_cli("scenarios", "check", str(dataset))
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout


def test_check_reports_every_problem_kind_at_once(dataset: Path, tmp_path: Path):
    d = tmp_path / "broken"
    shutil.copytree(dataset, d)
    sids = sorted(p.name for p in (d / "scenarios").iterdir())
    # 1. a deleted file
    (d / "scenarios" / sids[0] / f"{sids[0]}.nod.xml").unlink()
    # 2. one tampered byte in a network
    net = d / "scenarios" / sids[1] / f"{sids[1]}.net.xml"
    data = bytearray(net.read_bytes())
    data[-20] = ord("X") if data[-20] != ord("X") else ord("Y")
    net.write_bytes(bytes(data))
    # 3. V001 removed
    rou = d / "scenarios" / sids[2] / f"{sids[2]}.rou.xml"
    rou.write_text("\n".join(ln for ln in rou.read_text().splitlines() if 'id="V001"' not in ln))
    # 4. V001 departing late
    rou = d / "scenarios" / sids[3] / f"{sids[3]}.rou.xml"
    text = rou.read_text().replace('id="V001" type="t_V001" route="r_road" depart="0"',
                                   'id="V001" type="t_V001" route="r_road" depart="5"')
    assert 'depart="5"' in text
    rou.write_text(text)
    # 5. a sumocfg that is broken XML
    cfg = d / "scenarios" / sids[4] / f"{sids[4]}.sumocfg"
    cfg.write_text(cfg.read_text()[:-30])
    # 6. a sumocfg that parses but that SUMO cannot load (names an option SUMO does not know)
    cfg6 = d / "scenarios" / sids[5] / f"{sids[5]}.sumocfg"
    cfg6.write_text(cfg6.read_text().replace("<time>", "<time>\n<no-such-option value=\"1\"/>"))
    # 7. a manifest field missing (the manifest hash then no longer matches either)
    manifest = json.loads((d / "manifest.json").read_text())
    del manifest["peer_count_histogram"]
    (d / "manifest.json").write_text(json.dumps(manifest))

    proc = roadsense_cli("scenarios", "check", str(d))
    assert proc.returncode == 1
    out = proc.stderr
    assert f"{sids[0]}.nod.xml: file listed in the manifest is missing" in out
    assert f"{sids[1]}.net.xml: sha256 does not match" in out
    assert f"{sids[2]}.sumocfg: no vehicle 'V001'" in out
    assert f"{sids[3]}.rou.xml: V001 departs at '5', not at t=0" in out
    assert f"{sids[4]}.sumocfg: sumocfg is not valid XML" in out
    assert f"{sids[5]}.sumocfg: SUMO cannot load it" in out
    assert "manifest field 'peer_count_histogram' is missing" in out
    assert "manifest content was changed" in out
    assert "problem(s)" in out
    # the library call sees the same problems
    assert len(verify_dataset(d)) >= 8


def test_ego_not_last_and_unlisted_file_are_reported(dataset: Path, tmp_path: Path):
    d = tmp_path / "d"
    shutil.copytree(dataset, d)
    sid = sorted(p.name for p in (d / "scenarios").iterdir())[2]  # two peers
    rou = d / "scenarios" / sid / f"{sid}.rou.xml"
    text = re.sub(r'(id="V002"[^>]*departPos=")[0-9.]+"', r'\g<1>1.00"', rou.read_text())
    rou.write_text(text)
    (d / "scenarios" / sid / "notes.txt").write_text("x")
    problems = verify_dataset(d, sumo=False)
    assert any("file is not listed in the manifest" in p for p in problems)
    assert any("sha256 does not match" in p and sid in p for p in problems)
    assert any("peer V002 starts behind V001; the ego must be last" in p for p in problems)


def test_missing_manifest_is_one_clear_error(tmp_path: Path):
    proc = roadsense_cli("scenarios", "check", str(tmp_path))
    assert proc.returncode == 1
    assert "no manifest.json" in proc.stderr
