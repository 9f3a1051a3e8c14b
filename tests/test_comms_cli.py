"""`roadsense emulator check` and `roadsense emulator report`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from roadsense.cli.emulator import app
from roadsense.comms import default_params_path, params_version, validate_params

runner = CliRunner()


def _bad_file(tmp_path: Path) -> tuple[Path, list[str]]:
    raw = json.loads(default_params_path().read_text())
    raw["loss"]["overall_loss"] = 1.7
    raw["domain_randomization"]["jitter_std_ms"] = {"min": 3.0, "max": 1.0}
    del raw["staleness"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    return path, validate_params(raw)


def test_check_accepts_the_packaged_file():
    result = runner.invoke(app, ["check", str(default_params_path())])
    assert result.exit_code == 0, result.output
    assert params_version() in result.stdout


def test_check_prints_one_line_per_problem_and_exits_1(tmp_path):
    path, problems = _bad_file(tmp_path)
    assert len(problems) == 3
    result = runner.invoke(app, ["check", str(path)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == len(problems)
    for line, problem in zip(lines, problems, strict=True):
        assert line == f"{path}: {problem}"
    assert any("loss.overall_loss" in x for x in lines)
    assert any("staleness: missing section" in x for x in lines)


def test_check_through_the_installed_command(tmp_path):
    exe = Path(sys.executable).parent / "roadsense"
    path, problems = _bad_file(tmp_path)
    env = dict(os.environ)
    bad = subprocess.run([str(exe), "emulator", "check", str(path)], capture_output=True,
                         text=True, timeout=120, env=env)
    assert bad.returncode == 1
    assert len(bad.stderr.strip().splitlines()) == len(problems)
    good = subprocess.run([str(exe), "emulator", "check", str(default_params_path())],
                          capture_output=True, text=True, timeout=120, env=env)
    assert good.returncode == 0, good.stderr


def test_report_prints_the_table_and_writes_the_plots(tmp_path):
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", "--out", str(out), "--duration-s", "60"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for stat in ("delivery ratio", "mean loss burst", "latency p50", "latency p95",
                 "inter-arrival", "message age"):
        assert stat in result.stdout
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["loss_vs_distance.png", "latency_hist.png", "interarrival_cdf.png",
                            "age_cdf.png"])
    for p in out.iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


def test_report_with_a_bad_params_file_fails_cleanly(tmp_path):
    path, _ = _bad_file(tmp_path)
    out = tmp_path / "never"
    result = runner.invoke(app, ["report", "--params", str(path), "--out", str(out)])
    assert result.exit_code != 0
    assert "loss.overall_loss" in str(result.exception)
    assert not out.exists()
