"""A real (tiny) `roadsense tune` sweep: local Ray, the toy env, ASHA, results and checkpoints on
moto's S3 server; the sweep's manifest on S3 records the forced gate and the best trial."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import boto3
import pytest
import typer
from typer.testing import CliRunner

from roadsense.cli import tune as tune_cli


@pytest.fixture
def local_ray():
    import ray

    # A short path: Ray's unix sockets must fit in 107 bytes.
    temp = tempfile.mkdtemp(prefix="rs-ray-", dir="/tmp")
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_tiny_sweep_writes_results_and_manifest_to_s3(s3_bucket: str, local_ray, tmp_path: Path):
    phase1 = tmp_path / "phase1"
    phase1.mkdir()
    evals = [
        {"iteration": i, "env_steps": i, "collision_rate": r, "false_brake_rate": 0.0,
         "return_mean": 0.0}
        for i, r in enumerate([0.5, 0.1, 0.3])
    ]  # fmt: skip
    (phase1 / "run_manifest.json").write_text(
        json.dumps({"kind": "train", "run_id": "p1", "status": "finished", "evaluations": evals})
    )
    cli = typer.Typer()
    cli.command()(tune_cli.app)
    args = [
        "--phase1", str(phase1), "--force", "--storage", f"s3://{s3_bucket}/sweeps",
        "--name", "tiny", "--space", "smoke", "--max-iterations", "2", "--grace-period", "1",
        "--num-samples", "1", "--max-runtime-minutes", "5",
        "--set", 'env_id="roadsense/ToyRagged-v0"', "--set", "train_batch_size=200",
        "--set", "minibatch_size=50", "--set", "num_epochs=1", "--set", "num_env_runners=0",
    ]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, (result.output[-3000:], result.exception)

    s3 = boto3.client("s3")
    body = s3.get_object(Bucket=s3_bucket, Key="sweeps/tiny/run_manifest.json")["Body"].read()
    manifest = json.loads(body)
    assert manifest["kind"] == "tune" and manifest["status"] == "finished"
    assert manifest["forced"] is True and manifest["gate"]["passed"] is False
    assert manifest["trials"] == 2 and manifest["errors"] == 0  # the smoke space: a 2-point grid
    assert manifest["best"]["config"]["lr"] in (3e-4, 1e-3)
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=s3_bucket, Prefix="sweeps/tiny/"
        )
        for o in page.get("Contents", [])
    ]
    assert any("/checkpoint_" in k for k in keys), keys[:20]
    # each trial's TensorBoard event files, in the sweep's storage
    events = [k for k in keys if "/events.out.tfevents." in k]
    assert len({k.rsplit("/", 1)[0] for k in events}) == 2, keys[:40]
