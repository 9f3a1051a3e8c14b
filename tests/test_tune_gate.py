"""The Phase 1 stability gate in front of `roadsense tune` (and SageMaker tuning): refuses with the
failed criterion and its numbers, passes a stable finished run, and `--force` is recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import boto3
import pytest
import typer
from typer.testing import CliRunner

from roadsense.cli import tune as tune_cli
from roadsense.cloud.gate import StabilityCriteria, check_stability, require_stable
from roadsense.errors import ConfigError, StorageError

ROOT = Path(__file__).resolve().parents[1]


def manifest(rates: list[tuple[float, float]], *, status: str | None = "finished") -> dict:
    """A Phase 1 run manifest (shared contract) with one validation per (collision, false brake);
    its training-rollout evaluations swing widely, and the gate does not read them."""
    data = {
        "kind": "train",
        "run_id": "phase1-test",
        "created_utc": "2026-01-01T00:00:00+00:00",
        "git_commit": "abc",
        "dataset_manifest_hash": "sha256:dataset",
        "eval_suite": {"name": "standard-v1", "version": 1},
        "emulator_params_version": "espnow-v1+sha256:1234",
        "versions": {},
        "seed": 7,
        "config": {},
        "seeds": {},
        "evaluations": [
            {"iteration": 5 * (i + 1), "env_steps": 2000 * (i + 1), "collision_rate": i % 2,
             "false_brake_rate": 0.5 * (i % 3), "return_mean": 1.0, "checkpoint": "x"}
            for i in range(2 * len(rates))
        ],
        "validations": [
            {
                "checkpoint": f"iter_{10 * (i + 1):06d}",
                "iteration": 10 * (i + 1),
                "suite": "validation-v2",
                "collision_rate": c,
                "false_brake_rate": f,
                "score": c + f,
                "seconds": 30.0,
            }
            for i, (c, f) in enumerate(rates)
        ],
    }
    if status is not None:
        data["status"] = status
    return data


STABLE = [(0.40, 0.2), (0.12, 0.05), (0.10, 0.04), (0.11, 0.06), (0.10, 0.05)]
UNSTABLE = [(0.30, 0.05), (0.10, 0.05), (0.22, 0.05)]


def _write(tmp_path: Path, data: dict) -> Path:
    run = tmp_path / "phase1"
    run.mkdir(exist_ok=True)
    (run / "run_manifest.json").write_text(json.dumps(data))
    return run


def test_stable_finished_run_passes():
    result = check_stability(manifest(STABLE))
    assert result.passed, result.failures
    # Only the last 3 count: the early 0.40 is outside the window.
    assert result.stats["collision_rate_range"] == [0.10, 0.11]
    assert result.stats["iterations"] == [30, 40, 50]


def test_unstable_run_names_the_criterion_and_the_numbers():
    result = check_stability(manifest(UNSTABLE))
    assert not result.passed
    assert len(result.failures) == 1
    failure = result.failures[0]
    assert (
        "collision_rate" in failure
        and "0.100..0.300" in failure
        and "0.200 > band 0.050" in failure
    )
    assert "--force" in result.message()


@pytest.mark.parametrize(
    "data, expected",
    [
        (manifest(STABLE, status=None), "not recorded as finished"),
        (manifest(STABLE, status="running"), "not recorded as finished"),
        (manifest(STABLE[:2]), "only 2 validations recorded, 3 needed"),
        ({**manifest(STABLE), "kind": "eval"}, "not 'train'"),
        (manifest([(0.1, 0.1), (0.1, 0.1), (0.1, 0.3)]), "false_brake_rate"),
    ],
)
def test_each_criterion_refuses(data: dict, expected: str):
    result = check_stability(data)
    assert not result.passed
    assert any(expected in f for f in result.failures), result.failures


def test_non_numeric_rates_refuse():
    data = manifest(STABLE)
    data["validations"][-1]["collision_rate"] = None
    result = check_stability(data)
    assert any("no numeric collision_rate" in f for f in result.failures)


def test_finished_utc_counts_as_finished():
    data = manifest(STABLE, status=None)
    data["finished_utc"] = "2026-01-02T00:00:00+00:00"
    assert check_stability(data).passed


def test_criteria_are_configurable_and_validated():
    assert check_stability(manifest(UNSTABLE), StabilityCriteria(collision_band=0.25)).passed
    assert check_stability(manifest(STABLE), StabilityCriteria(last_k=5)).passed is False
    with pytest.raises(ConfigError, match="last_k"):
        StabilityCriteria(last_k=1)
    with pytest.raises(ConfigError, match="collision_band"):
        StabilityCriteria(collision_band=2.0)


def test_require_stable_raises_unless_forced(tmp_path: Path):
    run = _write(tmp_path, manifest(UNSTABLE))
    with pytest.raises(ConfigError, match="not stable enough") as info:
        require_stable(run)
    assert "--force" in str(info.value) and "run_manifest.json" in str(info.value)
    forced = require_stable(run, force=True)
    assert not forced.passed and forced.run_id == "phase1-test"
    assert require_stable(_write(tmp_path, manifest(STABLE))).passed


def test_missing_or_broken_manifest_is_a_clear_error(tmp_path: Path):
    with pytest.raises(StorageError, match="not found"):
        require_stable(tmp_path / "nowhere", force=True)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "run_manifest.json").write_text("{not json")
    with pytest.raises(StorageError, match="not valid JSON"):
        require_stable(bad)


def test_manifest_on_s3(s3_bucket: str):
    s3 = boto3.client("s3")
    s3.put_object(
        Bucket=s3_bucket, Key="runs/p1/run_manifest.json", Body=json.dumps(manifest(STABLE))
    )
    assert require_stable(f"s3://{s3_bucket}/runs/p1").passed
    s3.put_object(
        Bucket=s3_bucket, Key="runs/p2/run_manifest.json", Body=json.dumps(manifest(UNSTABLE))
    )
    with pytest.raises(ConfigError, match="spread 0.200"):
        require_stable(f"s3://{s3_bucket}/runs/p2")
    with pytest.raises(StorageError, match="not found"):
        require_stable(f"s3://{s3_bucket}/runs/none")


# --- the `roadsense tune` command ---------------------------------------------------------------


def _cli() -> typer.Typer:
    cli = typer.Typer()
    cli.command()(tune_cli.app)
    return cli


def test_tune_refuses_an_unstable_run(tmp_path: Path):
    run = _write(tmp_path, manifest(UNSTABLE))
    result = CliRunner().invoke(_cli(), ["--phase1", str(run), "--storage", str(tmp_path / "s")])
    assert isinstance(result.exception, ConfigError)
    assert "collision_rate" in str(result.exception) and "--force" in str(result.exception)
    assert not (tmp_path / "s").exists()


def test_tune_refuses_without_a_phase1_run(tmp_path: Path):
    result = CliRunner().invoke(_cli(), ["--storage", str(tmp_path / "s")])
    assert isinstance(result.exception, ConfigError)
    assert "no Phase 1 run given" in str(result.exception)


def _dry_run(args: list[str]) -> dict:
    result = CliRunner().invoke(_cli(), [*args, "--dry-run", "--name", "sweep-test"])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def test_forced_sweep_is_recorded(tmp_path: Path):
    run = _write(tmp_path, manifest(UNSTABLE))
    plan = _dry_run(["--phase1", str(run), "--storage", str(tmp_path / "s"), "--force"])
    assert plan["kind"] == "tune" and plan["forced"] is True
    assert plan["gate"]["passed"] is False and "collision_rate" in plan["gate"]["failures"][0]
    assert plan["phase1_run_id"] == "phase1-test"
    assert plan["dataset_manifest_hash"] == "sha256:dataset"
    assert plan["emulator_params_version"] == "espnow-v1+sha256:1234"
    assert plan["config"]["max_runtime_minutes"] == 240.0 and plan["config"]["scheduler"] == "asha"


def test_stable_sweep_is_not_forced(tmp_path: Path):
    run = _write(tmp_path, manifest(STABLE))
    plan = _dry_run(["--phase1", str(run), "--storage", "s3://bucket/sweeps", "--force"])
    assert plan["forced"] is False and plan["gate"]["passed"] is True
    nophase = _dry_run(["--storage", str(tmp_path / "s"), "--force"])
    assert nophase["forced"] is True and nophase["gate"] is None


def test_refusal_happens_before_any_ray_import(tmp_path: Path):
    run = _write(tmp_path, manifest(UNSTABLE))
    code = textwrap.dedent(
        f"""
        import sys, typer
        from typer.testing import CliRunner
        from roadsense.cli import tune
        cli = typer.Typer(); cli.command()(tune.app)
        result = CliRunner().invoke(cli, ["--phase1", {str(run)!r}, "--storage", "/tmp/x"])
        assert type(result.exception).__name__ == "ConfigError", result.exception
        assert "ray" not in sys.modules, "ray was imported before the gate refused"
        print("refused-without-ray")
        """
    )
    env = dict(os.environ)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    assert "refused-without-ray" in done.stdout
