"""A real (tiny) `roadsense tune` sweep: local Ray, ConvoyEnv on real SUMO, ASHA, results and
checkpoints on moto's S3 server. Each trial is a Phase 1 `roadsense train` run (warm start,
imitation term, lean sampling, schedules) scored on its validation suite; the sweep's manifest on
S3 records the forced gate and the best trial."""

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
from scenario_factory import GeneratorSettings, generate_dataset


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
@pytest.mark.timeout(600)
def test_tiny_sweep_writes_results_and_manifest_to_s3(s3_bucket: str, local_ray, tmp_path: Path):
    phase1 = tmp_path / "phase1"
    phase1.mkdir()
    validations = [
        {"iteration": 10 * i, "checkpoint": f"iter_{10 * i:06d}", "suite": "validation-v2",
         "collision_rate": r, "false_brake_rate": 0.0, "score": r, "seconds": 1.0}
        for i, r in enumerate([0.5, 0.1, 0.3], start=1)
    ]  # fmt: skip
    (phase1 / "run_manifest.json").write_text(json.dumps(
        {"kind": "train", "run_id": "p1", "status": "finished", "validations": validations}))
    dataset = tmp_path / "sweep-data"
    generate_dataset(GeneratorSettings(dataset_id="sweep-test", seed=3, count=4), dataset,
                     workers=1)
    cli = typer.Typer()
    cli.command()(tune_cli.app)
    args = [
        "--phase1", str(phase1), "--force", "--storage", f"s3://{s3_bucket}/sweeps",
        "--name", "tiny", "--space", "smoke", "--max-iterations", "2", "--grace-period", "1",
        "--num-samples", "1", "--max-runtime-minutes", "8",
        "--set", f'dataset_dir="{dataset}"', "--set", "train_batch_size=200",
        "--set", "minibatch_size=100", "--set", "num_epochs=1", "--set", "num_env_runners=0",
        "--set", "warm_start_steps=300", "--set", 'validation_suite="smoke"',
        "--set", "validate_every_minutes=100", "--set", 'env_overrides={"episode_s": 12}',
    ]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, (result.output[-3000:], result.exception)

    s3 = boto3.client("s3")
    body = s3.get_object(Bucket=s3_bucket, Key="sweeps/tiny/run_manifest.json")["Body"].read()
    manifest = json.loads(body)
    assert manifest["kind"] == "tune" and manifest["status"] == "finished"
    assert manifest["forced"] is True and manifest["gate"]["passed"] is False
    assert manifest["trials"] == 2 and manifest["errors"] == 0  # the smoke space: a 2-point grid
    best = manifest["best"]
    assert best["config"]["lr"] in (3e-4, 1e-3)
    # The objective is the validation score: collision + false-braking rate on the suite.
    assert 0.0 <= best["metric"] <= 2.0
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=s3_bucket, Prefix="sweeps/tiny/"
        )
        for o in page.get("Contents", [])
    ]
    runs = [k for k in keys if "/checkpoint_" in k and k.endswith("/run_manifest.json")]
    assert len(runs) >= 2, keys[:20]
    assert any(k.endswith("/checkpoints/iter_000002/policy.pt") for k in keys), keys[:20]
    # Each trial trained Phase 1's setup: the dataset, the warm start and imitation term, lean
    # sampling, the learning-rate schedule, with the sampled lr on top.
    lrs = set()
    for key in runs:
        run = json.loads(s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
        config = run["config"]
        assert run["kind"] == "train" and config["dataset_dir"] == str(dataset)
        assert config["warm_start"] == "v2v_rule" and run["warm_start"]["steps"] >= 300
        assert config["imitation_weight"] == 1.0 and config["lean_sampling"] is True
        assert config["lr_final"] == 3e-5
        assert [v["suite"] for v in run["validations"]] == ["smoke"]
        lrs.add(config["lr"])
    assert lrs == {3e-4, 1e-3}
    # each trial's TensorBoard event files, in the sweep's storage
    events = [k for k in keys if "/events.out.tfevents." in k]
    assert len({k.rsplit("/", 1)[0] for k in events}) >= 2, keys[:40]
