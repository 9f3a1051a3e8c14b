"""SageMaker jobs, ECR and AWS Budgets against moto's server on 127.0.0.1 (no AWS account):
each request is built, sent, and read back through the service's Describe call."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from typer.testing import CliRunner

from roadsense.cli.cloud import app
from roadsense.cloud import budget, ecr, sagemaker
from roadsense.cloud.sagemaker import CHECKPOINT_DIR, TrainingJobSpec
from roadsense.errors import ConfigError

ROLE = "arn:aws:iam::123456789012:role/roadsense-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/roadsense:0.1.0-abc"


def _spec(**overrides) -> TrainingJobSpec:
    fields = dict(
        job_name="roadsense-test-1",
        image_uri=IMAGE,
        role_arn=ROLE,
        dataset_uri="s3://data/default-v1",
        output_uri="s3://runs/output",
        checkpoint_uri="s3://runs/ckpt/roadsense-test-1",
        max_runtime_minutes=120,
    )
    fields.update(overrides)
    return TrainingJobSpec(**fields)


def test_training_job_request_round_trip(s3_server: str):
    request = sagemaker.build_training_job_request(_spec(train_args=["--seed", "3"]))
    arn = sagemaker.create_training_job(request)
    assert arn.endswith(":training-job/roadsense-test-1")
    job = sagemaker.describe_training_job("roadsense-test-1")

    spec = job["AlgorithmSpecification"]
    assert spec["TrainingImage"] == IMAGE and spec["TrainingInputMode"] == "FastFile"
    command = spec["ContainerEntrypoint"] + spec["ContainerArguments"]
    # The image's entry point, which runs `roadsense train --resume` on the checkpoint dir and
    # the dataset channel and exports the model (tests/test_cloud_sagemaker_contract.py).
    assert command[:3] == ["bash", "/opt/roadsense-entrypoint.sh", "train"]
    # Training stops itself (checkpointing) 10 minutes before SageMaker's hard cap.
    assert command[command.index("--max-runtime-minutes") + 1] == "110"
    assert command[-2:] == ["--seed", "3"]

    assert job["RoleArn"] == ROLE
    (channel,) = job["InputDataConfig"]
    assert channel["ChannelName"] == "dataset" and channel["InputMode"] == "FastFile"
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == "s3://data/default-v1"
    assert job["OutputDataConfig"]["S3OutputPath"] == "s3://runs/output"
    assert job["CheckpointConfig"] == {
        "S3Uri": "s3://runs/ckpt/roadsense-test-1",
        "LocalPath": CHECKPOINT_DIR,
    }
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 14400}
    assert job["ResourceConfig"]["InstanceType"] == "ml.c5.4xlarge"


def test_on_demand_job_has_no_wait_time():
    request = sagemaker.build_training_job_request(_spec(spot=False, input_mode="File"))
    assert request["EnableManagedSpotTraining"] is False
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200}
    assert request["InputDataConfig"][0]["InputMode"] == "File"


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"role_arn": ""}, "no SageMaker execution role"),
        ({"role_arn": "admin"}, "not an IAM role ARN"),
        ({"dataset_uri": "/local/data"}, "dataset_uri"),
        ({"checkpoint_uri": "ckpt"}, "checkpoint_uri"),
        ({"job_name": "bad_name!"}, "job name"),
        ({"input_mode": "Pipe"}, "input mode"),
        ({"max_runtime_minutes": 5}, "no time after"),
        ({"max_wait_minutes": 60}, "MaxWaitTimeInSeconds >= MaxRuntimeInSeconds"),
    ],
)
def test_bad_training_specs_are_refused(overrides: dict, match: str):
    with pytest.raises(ConfigError, match=match):
        sagemaker.build_training_job_request(_spec(**overrides))


_TRAIN_ARGS = [
    "sagemaker", "train", "--image", IMAGE, "--dataset", "s3://data/d",
    "--output", "s3://runs/out", "--checkpoints", "s3://runs/ckpt",
    "--job-name", "roadsense-cli-1", "--max-runtime-minutes", "60",
]  # fmt: skip


def test_cli_train_dry_run_prints_the_request_and_sends_nothing(s3_server: str, monkeypatch):
    monkeypatch.setenv(sagemaker.ROLE_ENV, ROLE)  # the role comes from the environment
    result = CliRunner().invoke(app, [*_TRAIN_ARGS, "--dry-run", "--", "--seed", "5"])
    assert result.exit_code == 0, (result.output, result.exception)
    request = json.loads(result.stdout)["CreateTrainingJob"]
    assert request["RoleArn"] == ROLE
    assert request["AlgorithmSpecification"]["ContainerArguments"][-2:] == ["--seed", "5"]
    names = [
        j["TrainingJobName"]
        for j in boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]
    ]
    assert "roadsense-cli-1" not in names


def test_cli_train_creates_the_job(s3_server: str):
    result = CliRunner().invoke(app, [*_TRAIN_ARGS, "--role", ROLE, "--no-spot"])
    assert result.exit_code == 0, (result.output, result.exception)
    job = sagemaker.describe_training_job("roadsense-cli-1")
    assert job["EnableManagedSpotTraining"] is False
    assert job["StoppingCondition"]["MaxRuntimeInSeconds"] == 3600


def test_cli_train_without_role_is_refused(monkeypatch):
    monkeypatch.delenv(sagemaker.ROLE_ENV, raising=False)
    result = CliRunner().invoke(app, [*_TRAIN_ARGS, "--dry-run"])
    assert isinstance(result.exception, ConfigError)
    assert sagemaker.ROLE_ENV in str(result.exception)


def _phase1(tmp_path: Path, rates: list[float]) -> Path:
    run = tmp_path / "p1"
    run.mkdir()
    validations = [
        {"iteration": i, "checkpoint": f"iter_{i:06d}", "suite": "validation-v2",
         "collision_rate": r, "false_brake_rate": 0.0, "score": r, "seconds": 1.0}
        for i, r in enumerate(rates)
    ]  # fmt: skip
    (run / "run_manifest.json").write_text(json.dumps(
        {"kind": "train", "run_id": "p1", "status": "finished", "validations": validations}))
    return run


_TUNE_ARGS = [
    "sagemaker", "tune", "--image", IMAGE, "--dataset", "s3://data/d", "--output", "s3://o/x",
    "--checkpoints", "s3://o/ckpt", "--role", ROLE, "--range", "lr=1e-5:1e-3:log",
    "--range", "num-epochs=5:20", "--job-name", "rs-tune-test",
]  # fmt: skip


def test_sagemaker_tuning_goes_through_the_gate(s3_server: str, tmp_path: Path):
    unstable = _phase1(tmp_path, [0.3, 0.1, 0.2])
    refused = CliRunner().invoke(app, [*_TUNE_ARGS, "--phase1", str(unstable)])
    assert isinstance(refused.exception, ConfigError) and "--force" in str(refused.exception)

    forced = CliRunner().invoke(
        app, [*_TUNE_ARGS, "--phase1", str(unstable), "--force", "--dry-run"]
    )
    assert forced.exit_code == 0, (forced.output, forced.exception)
    plan = json.loads(forced.stdout)
    assert plan["forced"] is True
    assert {"Key": "roadsense:gate-forced", "Value": "true"} in plan[
        "CreateHyperParameterTuningJob"
    ]["Tags"]

    created = CliRunner().invoke(app, [*_TUNE_ARGS, "--phase1", str(unstable), "--force"])
    assert created.exit_code == 0, (created.output, created.exception)
    job = boto3.client("sagemaker").describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="rs-tune-test"
    )
    ranges = job["HyperParameterTuningJobConfig"]["ParameterRanges"]
    assert ranges["ContinuousParameterRanges"][0]["Name"] == "lr"
    assert ranges["ContinuousParameterRanges"][0]["ScalingType"] == "Logarithmic"
    assert ranges["IntegerParameterRanges"][0]["Name"] == "num-epochs"
    definition = job["TrainingJobDefinition"]
    assert definition["EnableManagedSpotTraining"] is True
    assert definition["CheckpointConfig"]["LocalPath"] == CHECKPOINT_DIR


def test_budget_with_email_alert(s3_server: str):
    account = budget.caller_account()
    request = budget.build_budget_request(
        account=account, name="roadsense-test", monthly_limit_usd=150, email="ops@example.com"
    )
    budget.create_budget(request)
    client = boto3.client("budgets", region_name="us-east-1")
    (found,) = [
        b for b in client.describe_budgets(AccountId=account)["Budgets"]
        if b["BudgetName"] == "roadsense-test"
    ]  # fmt: skip
    assert found["BudgetLimit"] == {"Amount": "150.00", "Unit": "USD"}
    assert found["TimeUnit"] == "MONTHLY" and found["BudgetType"] == "COST"
    notes = client.describe_notifications_for_budget(AccountId=account, BudgetName="roadsense-test")
    kinds = {(n["NotificationType"], n["Threshold"]) for n in notes["Notifications"]}
    assert kinds == {("ACTUAL", 80.0), ("FORECASTED", 100.0)}


def test_cli_budget(s3_server: str):
    dry = CliRunner().invoke(
        app, ["budget", "--limit-usd", "99", "--email", "a@b.io", "--name", "rs-dry", "--dry-run"]
    )
    assert dry.exit_code == 0, dry.output
    request = json.loads(dry.stdout)["CreateBudget"]
    subscribers = request["NotificationsWithSubscribers"][0]["Subscribers"]
    assert subscribers == [{"SubscriptionType": "EMAIL", "Address": "a@b.io"}]
    real = CliRunner().invoke(app, ["budget", "--limit-usd", "99", "--email", "a@b.io"])
    assert real.exit_code == 0, (real.output, real.exception)
    account = budget.caller_account()
    names = [
        b["BudgetName"]
        for b in boto3.client("budgets").describe_budgets(AccountId=account)["Budgets"]
    ]
    assert "roadsense-monthly" in names and "rs-dry" not in names
    bad = CliRunner().invoke(app, ["budget", "--limit-usd", "0", "--email", "a@b.io", "--dry-run"])
    assert isinstance(bad.exception, ConfigError)


def test_ecr_repository_and_push_commands(s3_server: str):
    uri = ecr.ensure_repository("roadsense-test")
    assert uri.endswith(".amazonaws.com/roadsense-test")
    assert ecr.ensure_repository("roadsense-test") == uri  # idempotent
    repo = boto3.client("ecr").describe_repositories(repositoryNames=["roadsense-test"])
    assert repo["repositories"][0]["imageTagMutability"] == "IMMUTABLE"

    result = CliRunner().invoke(
        app, ["sagemaker", "push-image", "--repository", "roadsense-test", "--tag", "9.9.9",
              "--print-only"],
    )  # fmt: skip
    assert result.exit_code == 0, (result.output, result.exception)
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("aws ecr get-login-password") and "--password-stdin" in lines[0]
    assert lines[1].startswith("docker build -f ") and "-t roadsense-test:9.9.9" in lines[1]
    assert lines[2] == f"docker tag roadsense-test:9.9.9 {uri}:9.9.9"
    assert lines[3] == f"docker push {uri}:9.9.9"
    assert ecr.registry_password()  # the token decodes (never printed)
    assert "password" not in " ".join(lines[1:]).lower()


def test_latest_tag_is_refused(s3_server: str):
    with pytest.raises(ConfigError, match="not a pin"):
        ecr.make_plan("roadsense-test", region=None, tag="latest")
