"""`roadsense cloud`: cluster config validation, budgets, and SageMaker (image push, train, tune).

Every command that talks to AWS has ``--dry-run``, which prints the request JSON and sends
nothing. Credentials come from the standard AWS chain (and ``AWS_ENDPOINT_URL``), never flags.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from roadsense.cli.options import plain_option, settings_options, values_for, with_options
from roadsense.cli.tune import check_gate_options, gate_options
from roadsense.cloud.budget import build_budget_request
from roadsense.cloud.sagemaker import TrainingJobSpec, TuningJobSettings
from roadsense.errors import ConfigError
from roadsense.options import option

app = typer.Typer(no_args_is_help=True, add_completion=False)
sagemaker_app = typer.Typer(
    no_args_is_help=True, help="SageMaker Phase 2: push the image, train, tune (gated)."
)
app.add_typer(sagemaker_app, name="sagemaker")

console = Console(stderr=True, soft_wrap=True)
DEFAULT_CLUSTER = Path("cluster.yaml")
HERE = Path(".")
_REQUIRED = inspect.Parameter.empty


def _print_json(data: dict) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def _default(func: Any, name: str) -> Any:
    """The default of keyword `name` of `func` (so a command does not repeat it)."""
    return inspect.signature(func).parameters[name].default


def _job_name(prefix: str) -> str:
    return f"{prefix}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"


@app.command()
def validate(
    cluster_yaml: Annotated[Path, typer.Argument(help="The Ray cluster config.")] = DEFAULT_CLUSTER,
) -> None:
    """Validate a Ray cluster config offline: Ray's schema and checks plus our rules."""
    from roadsense.cloud.cluster import validate_cluster_config

    report = validate_cluster_config(cluster_yaml)
    for warning in report.warnings:
        console.print(f"[yellow]warning[/yellow]: {cluster_yaml}: {warning}", highlight=False)
    if report.problems:
        for problem in report.problems:
            console.print(f"[red]problem[/red]: {cluster_yaml}: {problem}", highlight=False)
        raise ConfigError(
            f"{len(report.problems)} problem(s) in the cluster config (listed above)",
            fix="correct them and re-run `roadsense cloud validate`",
            path=cluster_yaml,
        )
    console.print(f"{cluster_yaml}: ok (Ray's checks and ours)", highlight=False)


@dataclass
class AwsRequest:
    """Where a command's AWS request goes, or that it is only printed."""

    region: str | None = option(None, help="AWS region (default: the AWS chain's).")
    dry_run: bool = option(False, flags=("--dry-run",), help="Print the request; send nothing.")


@app.command()
@with_options(
    [plain_option("limit_usd", float, _REQUIRED, "Monthly cost limit in USD.", "--limit-usd"),
     plain_option("email", str, _REQUIRED, "Address that receives the alerts.", "--email"),
     plain_option("name", str, "roadsense-monthly", "Budget name.", "--name"),
     plain_option("alert_percent", float, _default(build_budget_request, "alert_percent"),
                  "Alert when actual spend passes this %."),
     plain_option("account", str | None, None, "Account id (default: the caller's, STS).")],
    settings_options(AwsRequest, only=("dry_run",)),
)
def budget(*, limit_usd: float, email: str, name: str, alert_percent: float,
           account: str | None, dry_run: bool) -> None:
    """Create an AWS Budgets monthly cost budget with e-mail alerts (actual and forecast)."""
    from roadsense.cloud import budget as budgets

    if account is None:
        account = "ACCOUNT_ID" if dry_run else budgets.caller_account()
    request = budgets.build_budget_request(
        account=account,
        name=name,
        monthly_limit_usd=limit_usd,
        email=email,
        alert_percent=alert_percent,
    )
    if dry_run:
        _print_json({"CreateBudget": request})
        return
    budgets.create_budget(request)
    console.print(f"budget {name!r}: {limit_usd:.2f} USD/month, alerts to {email}")


@sagemaker_app.command("push-image")
@with_options(
    [plain_option("repository", str, "roadsense", "ECR repository name."),
     plain_option("tag", str | None, None, "Image tag (default: <version>-<git commit>)."),
     plain_option("context", Path, HERE, "Docker build context (repository root)."),
     plain_option("print_only", bool, False, "Create the repository; print the docker commands "
                  "only.", "--print-only")],
    settings_options(AwsRequest),
)
def push_image(*, repository: str, tag: str | None, context: Path, print_only: bool,
               region: str | None, dry_run: bool) -> None:
    """Create the ECR repository and push the image (or print the docker commands)."""
    from roadsense import __version__
    from roadsense.cloud import ecr
    from roadsense.cloud.aws import region_name
    from roadsense.provenance import git_commit

    if dry_run:
        commit = git_commit(context) or "unknown"
        plan = ecr.PushPlan(
            repository_uri=f"ACCOUNT_ID.dkr.ecr.{region_name(region)}.amazonaws.com/{repository}",
            tag=tag or ecr.default_tag(__version__, commit),
            region=region_name(region),
            git_commit=commit,
        )
        _print_json(
            {
                "CreateRepository": {
                    "repositoryName": repository,
                    "imageTagMutability": "IMMUTABLE",
                    "imageScanningConfiguration": {"scanOnPush": True},
                },
                "image_uri": plan.image_uri,
                "commands": ecr.format_commands(plan, context),
            }
        )
        return
    plan = ecr.make_plan(repository, region=region, tag=tag, context=context)
    if not print_only and ecr.docker_engine_available():
        ecr.run_push(plan, context)
        console.print(f"pushed {plan.image_uri}", highlight=False)
        return
    if not print_only:
        console.print("no working docker engine here; run these commands where one is:")
    for line in ecr.format_commands(plan, context):
        typer.echo(line)
    console.print(f"image: {plan.image_uri}", highlight=False)


_EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}


@sagemaker_app.command("train", context_settings=_EXTRA)
@with_options(
    settings_options(TrainingJobSpec),
    settings_options(AwsRequest),
    [plain_option("job_name", str | None, None, "Job name (default roadsense-<utc time>).")],
    context=True,
)
def sagemaker_train(ctx: typer.Context, **values: Any) -> None:
    """Start a SageMaker training job running `roadsense train --resume` (args after `--`)."""
    from roadsense.cloud import sagemaker

    spec = TrainingJobSpec(**values_for(TrainingJobSpec, values) | {
        "job_name": values["job_name"] or _job_name("roadsense"), "train_args": list(ctx.args)})
    aws = AwsRequest(**values_for(AwsRequest, values))
    request = sagemaker.build_training_job_request(spec)
    if aws.dry_run:
        _print_json({"CreateTrainingJob": request})
        return
    arn = sagemaker.create_training_job(request, aws.region)
    typer.echo(arn)


@sagemaker_app.command("tune")
@with_options(
    settings_options(TuningJobSettings),
    gate_options(),
    settings_options(TrainingJobSpec),
    settings_options(AwsRequest),
    [plain_option("job_name", str | None, None, "Tuning job name (<= 32 characters; default "
                  "rs-tune-<utc time>).")],
)
def sagemaker_tune(**values: Any) -> None:
    """Start a SageMaker hyperparameter tuning job, only through the Phase 1 stability gate."""
    from roadsense.cloud import sagemaker

    gate, forced = check_gate_options(values)
    name = values["job_name"] or _job_name("rs-tune")[:32]
    spec = TrainingJobSpec(**values_for(TrainingJobSpec, values) | {"job_name": name})
    tuning = TuningJobSettings(**values_for(TuningJobSettings, values) | {"name": name})
    aws = AwsRequest(**values_for(AwsRequest, values))
    request = sagemaker.build_tuning_job_request(spec, tuning)
    request["Tags"] += [
        {"Key": "roadsense:gate-forced", "Value": str(forced).lower()},
        {"Key": "roadsense:phase1-run", "Value": str(gate.run_id if gate else None)},
    ]
    if aws.dry_run:
        _print_json(
            {
                "CreateHyperParameterTuningJob": request,
                "forced": forced,
                "gate": gate.to_dict() if gate else None,
            }
        )
        return
    typer.echo(sagemaker.create_tuning_job(request, aws.region))
