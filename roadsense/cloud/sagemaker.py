"""Phase 2: SageMaker training jobs (and gated hyperparameter tuning jobs) running our image.

The job runs the same `roadsense train` as a laptop or the EC2 cluster, inside the image built
from docker/Dockerfile. The dataset is an S3 input channel (FastFile by default: streamed, no
copy before start); SageMaker syncs ``/opt/ml/checkpoints`` with the checkpoint S3 URI, so a
managed-spot job that is interrupted restarts with the checkpoints in place and ``--resume``
continues from the last one. Training stops itself (checkpointing) a grace period before
SageMaker's MaxRuntimeInSeconds, the hard cost cap.

boto3 is imported lazily (the cloud path's deliberate second boto3 importer, for non-S3
services).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

from roadsense.cloud.aws import aws_error, client, is_s3_uri
from roadsense.cloud.sweep import OBJECTIVE
from roadsense.errors import ConfigError
from roadsense.options import option

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "/opt/ml/checkpoints"
"""Where SageMaker mirrors the checkpoint S3 URI inside the container."""
ENTRYPOINT = "/opt/roadsense-entrypoint.sh"
"""docker/entrypoint.sh inside the image (docker/Dockerfile)."""
DATASET_CHANNEL = "dataset"
DATASET_DIR = f"/opt/ml/input/data/{DATASET_CHANNEL}"
INPUT_MODES = ("FastFile", "File")
ROLE_ENV = "ROADSENSE_SAGEMAKER_ROLE"
"""Environment variable read for the execution role ARN when no flag is given."""
GRACE_MINUTES = 10
"""Training checkpoints and stops this long before a job's hard cap."""

_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


@dataclass(kw_only=True)
class TrainingJobSpec:
    """Everything a SageMaker training job of ours needs; validated by `validate()`. The fields
    made with `option` are the options of `roadsense cloud sagemaker train` and `... tune`."""

    job_name: str
    """Unique job name (letters, digits, hyphens; at most 63 characters)."""
    image_uri: str = option(flags=("--image",),
                            help="Training image URI in ECR (pinned tag or digest).")
    """The training image in ECR, pinned by tag or digest."""
    dataset_uri: str = option(flags=("--dataset",),
                              help="Dataset s3:// prefix (the input channel).")
    """s3:// prefix of the dataset (manifest.json + scenarios)."""
    output_uri: str = option(flags=("--output",), help="s3:// prefix for the jobs' output.")
    """s3:// prefix where SageMaker writes the job's output (model.tar.gz)."""
    checkpoint_uri: str = option(flags=("--checkpoints",),
                                 help="s3:// prefix for checkpoints (spot resume).")
    """s3:// prefix mirrored to /opt/ml/checkpoints: checkpoints + run manifest; spot resume."""
    role_arn: str | None = option(None, flags=("--role",), envvar=ROLE_ENV,
                                  help="SageMaker execution role ARN.")
    """Execution role ARN (from --role or ROADSENSE_SAGEMAKER_ROLE; never hard-coded)."""
    instance_type: str = option("ml.c5.4xlarge", help="Instance type.")
    """CPU instance: SUMO rollouts are CPU-bound."""
    instance_count: int = 1
    volume_gb: int = 50
    max_runtime_minutes: int = option(720, help=f"Hard cap per training job; training "
                                      f"checkpoints and stops {GRACE_MINUTES} min before.")
    """Hard cap on billed training time (SageMaker stops the job)."""
    max_wait_minutes: int | None = option(None, help="Spot: runtime + waiting (default 2x).")
    """Spot only: runtime plus time waiting for spot capacity (default twice the runtime)."""
    grace_minutes: int = GRACE_MINUTES
    """Training checkpoints and stops this long before the hard cap."""
    spot: bool = option(True, flags=("--spot/--no-spot",), help="Managed spot training.")
    input_mode: str = option("FastFile", help=f"Dataset channel mode: {' or '.join(INPUT_MODES)}.")
    train_args: list[str] = field(default_factory=list)
    """Extra arguments appended to `roadsense train`."""
    tags: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field and the fix."""
        if not _JOB_NAME.match(self.job_name):
            raise ConfigError(
                f"job name {self.job_name!r} is invalid",
                fix="use letters, digits and hyphens, at most 63 characters",
            )
        if not self.role_arn:
            raise ConfigError(
                "no SageMaker execution role",
                fix=f"pass --role arn:aws:iam::ACCOUNT:role/NAME or set {ROLE_ENV}",
            )
        if not _ROLE_ARN.match(self.role_arn):
            raise ConfigError(
                f"role {self.role_arn!r} is not an IAM role ARN",
                fix="use arn:aws:iam::ACCOUNT:role/NAME",
            )
        for name in ("dataset_uri", "output_uri", "checkpoint_uri"):
            if not is_s3_uri(getattr(self, name)):
                raise ConfigError(
                    f"{name} {getattr(self, name)!r} is not an s3:// URI",
                    fix="use s3://bucket/prefix",
                )
        if self.input_mode not in INPUT_MODES:
            raise ConfigError(
                f"input mode {self.input_mode!r} is not supported", fix=f"use one of {INPUT_MODES}"
            )
        if self.instance_count < 1 or self.volume_gb < 1:
            raise ConfigError("instance_count and volume_gb must be at least 1")
        if self.max_runtime_minutes <= self.grace_minutes:
            raise ConfigError(
                f"max runtime {self.max_runtime_minutes} min leaves no time after the "
                f"{self.grace_minutes} min checkpoint grace",
                fix="raise --max-runtime-minutes",
            )
        if self.spot and self.max_wait_minutes is not None:
            if self.max_wait_minutes < self.max_runtime_minutes:
                raise ConfigError(
                    f"max wait {self.max_wait_minutes} min < max runtime "
                    f"{self.max_runtime_minutes} min",
                    fix="SageMaker requires MaxWaitTimeInSeconds >= MaxRuntimeInSeconds",
                )

    @property
    def train_runtime_minutes(self) -> int:
        """The runtime handed to `roadsense train`: the hard cap minus the checkpoint grace."""
        return self.max_runtime_minutes - self.grace_minutes

    def container_command(self) -> list[str]:
        """The command the job's container runs: the image's entry point with `train`, as
        tuning jobs start it, which runs the same `roadsense train --resume` as everywhere
        (checkpoints in CHECKPOINT_DIR/<job name>, the dataset channel) and exports the
        picked policy to /opt/ml/model (docker/entrypoint.sh)."""
        return [
            "bash", ENTRYPOINT, "train",
            "--max-runtime-minutes", str(self.train_runtime_minutes),
            *self.train_args,
        ]  # fmt: skip


def build_training_job_request(spec: TrainingJobSpec) -> dict:
    """The CreateTrainingJob request for `spec` (what `--dry-run` prints)."""
    spec.validate()
    command = spec.container_command()
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": spec.max_runtime_minutes * 60}
    if spec.spot:
        wait = spec.max_wait_minutes or 2 * spec.max_runtime_minutes
        stopping["MaxWaitTimeInSeconds"] = wait * 60
    request = {
        "TrainingJobName": spec.job_name,
        "RoleArn": spec.role_arn,
        "AlgorithmSpecification": {
            "TrainingImage": spec.image_uri,
            "TrainingInputMode": spec.input_mode,
            "ContainerEntrypoint": command[:2],
            "ContainerArguments": command[2:],
        },
        "InputDataConfig": [
            {
                "ChannelName": DATASET_CHANNEL,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": spec.dataset_uri,
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "InputMode": spec.input_mode,
            }
        ],
        "OutputDataConfig": {"S3OutputPath": spec.output_uri},
        "ResourceConfig": {
            "InstanceType": spec.instance_type,
            "InstanceCount": spec.instance_count,
            "VolumeSizeInGB": spec.volume_gb,
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": spec.spot,
        "CheckpointConfig": {"S3Uri": spec.checkpoint_uri, "LocalPath": CHECKPOINT_DIR},
        "Environment": {
            "RAY_AUTH_MODE": "token",
            "RS_MAX_RUNTIME_MIN": str(spec.train_runtime_minutes),
        },
        "Tags": [{"Key": "project", "Value": "roadsense"}]
        + [{"Key": k, "Value": v} for k, v in sorted(spec.tags.items())],
    }
    return request


def create_training_job(request: dict, region: str | None = None) -> str:
    """Send a CreateTrainingJob request; returns the job ARN."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        response = client("sagemaker", region).create_training_job(**request)
    except (BotoCoreError, ClientError) as exc:
        name = request.get("TrainingJobName")
        raise aws_error(exc, f"sagemaker:CreateTrainingJob {name}") from None
    log.info("created training job %s", response["TrainingJobArn"])
    return str(response["TrainingJobArn"])


def describe_training_job(name: str, region: str | None = None) -> dict:
    """DescribeTrainingJob, as a plain dict."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return dict(client("sagemaker", region).describe_training_job(TrainingJobName=name))
    except (BotoCoreError, ClientError) as exc:
        raise aws_error(exc, f"sagemaker:DescribeTrainingJob {name}") from None


def parse_range(text: str) -> tuple[str, dict]:
    """``lr=1e-5:1e-3[:log]`` -> (kind, SageMaker parameter range); kinds Continuous/Integer."""
    name, sep, rest = text.partition("=")
    parts = rest.split(":")
    if not sep or not name or len(parts) not in (2, 3):
        raise ConfigError(
            f"bad range {text!r}",
            fix="write NAME=MIN:MAX or NAME=MIN:MAX:log (e.g. lr=1e-5:1e-3:log)",
        )
    scaling = "Logarithmic" if len(parts) == 3 and parts[2] == "log" else "Auto"
    if len(parts) == 3 and parts[2] not in ("log", "linear"):
        raise ConfigError(f"bad range scaling in {text!r}", fix="use :log or :linear")
    try:
        lo, hi = float(parts[0]), float(parts[1])
    except ValueError:
        raise ConfigError(f"bad range bounds in {text!r}", fix="bounds must be numbers") from None
    if not lo < hi:
        raise ConfigError(f"range {text!r} has min >= max")
    is_int = all(re.fullmatch(r"-?\d+", p) for p in parts[:2])
    kind = "IntegerParameterRanges" if is_int else "ContinuousParameterRanges"
    return kind, {"Name": name, "MinValue": parts[0], "MaxValue": parts[1], "ScalingType": scaling}


@dataclass(kw_only=True)
class TuningJobSettings:
    """What a SageMaker hyperparameter tuning job searches, what for, and how many training jobs
    it runs; the fields made with `option` are options of `roadsense cloud sagemaker tune`."""

    name: str
    """Tuning job name (letters, digits, hyphens; at most 32 characters)."""
    ranges: list[str] = option(flags=("--range",), help="NAME=MIN:MAX[:log], repeat.")
    """Hyperparameter ranges, ``NAME=MIN:MAX[:log|:linear]`` (`parse_range`)."""
    objective_metric: str = option(OBJECTIVE, flags=("--objective",), help="Metric parsed from "
                                   "the log (last value; validation/score: collision + "
                                   "false-braking rate of the picked checkpoint, minimised).")
    maximize: bool = option(False, flags=("--maximize",), help="Maximize (default: minimize).")
    max_jobs: int = option(8, help="Training jobs in total.")
    max_parallel: int = option(2, help="Training jobs at a time.")
    strategy: str = "Bayesian"

    @property
    def objective_type(self) -> str:
        return "Maximize" if self.maximize else "Minimize"

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field and the fix."""
        if not _JOB_NAME.match(self.name) or len(self.name) > 32:
            raise ConfigError(
                f"tuning job name {self.name!r} is invalid",
                fix="use letters, digits and hyphens, at most 32 characters",
            )
        if not self.ranges:
            raise ConfigError("no hyperparameter ranges", fix="pass --range NAME=MIN:MAX[:log]")
        if self.max_parallel < 1 or self.max_jobs < self.max_parallel:
            raise ConfigError(f"max_jobs={self.max_jobs}, max_parallel={self.max_parallel}",
                              fix="1 <= parallel <= jobs")


def build_tuning_job_request(spec: TrainingJobSpec, tuning: TuningJobSettings) -> dict:
    """CreateHyperParameterTuningJob for `spec` over `tuning.ranges` (only after the stability
    gate).

    Tuning jobs start the image as ``<image> train``; docker/entrypoint.sh turns SageMaker's
    hyperparameters.json into `roadsense train --KEY VALUE` arguments. The objective is parsed
    from the training log lines ``<metric>=<value>``; SageMaker takes the last one. The default,
    ``validation/score`` (collision + false-braking rate on the validation suite, minimised),
    is printed at every validation and last for the checkpoint the run picked. Each child
    checkpoints under its own job name (docker/entrypoint.sh), so none resumes another's run.
    """
    spec.validate()
    tuning.validate()
    parameter_ranges: dict[str, list] = {
        "ContinuousParameterRanges": [],
        "IntegerParameterRanges": [],
        "CategoricalParameterRanges": [],
    }
    for text in tuning.ranges:
        kind, rng = parse_range(text)
        parameter_ranges[kind].append(rng)
    training = build_training_job_request(spec)
    stopping = training["StoppingCondition"]
    definition = {
        "AlgorithmSpecification": {
            "TrainingImage": spec.image_uri,
            "TrainingInputMode": spec.input_mode,
            "MetricDefinitions": [
                {"Name": tuning.objective_metric,
                 "Regex": re.escape(tuning.objective_metric) + r"=([0-9.eE+-]+)"}
            ],
        },
        "RoleArn": spec.role_arn,
        "InputDataConfig": training["InputDataConfig"],
        "OutputDataConfig": training["OutputDataConfig"],
        "ResourceConfig": training["ResourceConfig"],
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": spec.spot,
        "CheckpointConfig": training["CheckpointConfig"],
        "StaticHyperParameters": {"max-runtime-minutes": str(spec.train_runtime_minutes)},
        "Environment": training["Environment"],
    }
    return {
        "HyperParameterTuningJobName": tuning.name,
        "HyperParameterTuningJobConfig": {
            "Strategy": tuning.strategy,
            "HyperParameterTuningJobObjective": {
                "Type": tuning.objective_type,
                "MetricName": tuning.objective_metric,
            },
            "ResourceLimits": {
                "MaxNumberOfTrainingJobs": tuning.max_jobs,
                "MaxParallelTrainingJobs": tuning.max_parallel,
            },
            "ParameterRanges": parameter_ranges,
        },
        "TrainingJobDefinition": definition,
        "Tags": training["Tags"],
    }


def create_tuning_job(request: dict, region: str | None = None) -> str:
    """Send a CreateHyperParameterTuningJob request; returns the tuning job ARN."""
    from botocore.exceptions import BotoCoreError, ClientError

    name = request.get("HyperParameterTuningJobName")
    try:
        response = client("sagemaker", region).create_hyper_parameter_tuning_job(**request)
    except (BotoCoreError, ClientError) as exc:
        raise aws_error(exc, f"sagemaker:CreateHyperParameterTuningJob {name}") from None
    return str(response["HyperParameterTuningJobArn"])
