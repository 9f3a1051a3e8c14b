"""`roadsense tune` and `roadsense cloud sagemaker train|tune` take their options from typed
settings (one declaration per setting): each option's default is its dataclass field's, `--help`
prints it, no option is declared twice, and the two SageMaker commands share one declaration of
the job's options."""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from roadsense.cli import app
from roadsense.cli import cloud as cloud_cli
from roadsense.cli import tune as tune_cli
from roadsense.cli.options import settings_options, with_options
from roadsense.cli.train import app as train_app
from roadsense.cloud.budget import build_budget_request
from roadsense.cloud.gate import StabilityCriteria
from roadsense.cloud.sagemaker import TrainingJobSpec, TuningJobSettings
from roadsense.cloud.sweep import SweepSettings
from roadsense.options import option
from roadsense.rllib.settings import TrainSettings

ROLE = "arn:aws:iam::123456789012:role/roadsense-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/roadsense:0.1.0-abc"

# command path -> (settings classes whose fields are its options, the command's own options)
COMMANDS = {
    ("tune",): ((SweepSettings, tune_cli.GateChoice, StabilityCriteria), {"fixed", "dry_run"}),
    ("cloud", "sagemaker", "train"): ((TrainingJobSpec, cloud_cli.AwsRequest), {"job_name"}),
    ("cloud", "sagemaker", "tune"): ((TuningJobSettings, tune_cli.GateChoice, StabilityCriteria,
                                      TrainingJobSpec, cloud_cli.AwsRequest), {"job_name"}),
}


def _command(path: tuple[str, ...]):
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


def _option_fields(cls: type) -> dict:
    offered = set(tune_cli.GATE_CRITERIA_HELP) if cls is StabilityCriteria else None
    return {f.name: f for f in fields(cls)
            if "cli" in f.metadata or (offered is not None and f.name in offered)}


def _help_lines(path: tuple[str, ...]) -> dict[str, str]:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return {m.group(1): line for line in result.output.splitlines()
            if (m := re.match(r"^\W*(--[a-z0-9-]+)", line))}


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_options_are_the_settings_fields_with_their_defaults(path: tuple[str, ...]):
    classes, own = COMMANDS[path]
    params = {p.name: p for p in _command(path).params if p.name != "help"}
    declared: dict = {}
    for cls in classes:
        for name, f in _option_fields(cls).items():
            assert name not in declared, f"{name} is a field of two option classes"
            declared[name] = f
    assert set(params) == set(declared) | own
    for name, f in declared.items():
        if f.default is MISSING and f.default_factory is MISSING:
            assert params[name].required, name
        else:
            assert not params[name].required and params[name].default == f.default, name


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_help_prints_each_settings_default(path: tuple[str, ...]):
    lines = _help_lines(path)
    classes, _ = COMMANDS[path]
    flags = {p.name: p.opts[0] for p in _command(path).params}
    checked = 0
    for cls in classes:
        for f in _option_fields(cls).values():
            line = lines[flags[f.name]]
            if f.default is MISSING:
                assert "[required]" in line, line
            elif f.default is not None and not isinstance(f.default, bool):
                assert f"[default: {f.default}]" in line, line
                checked += 1
    assert checked >= 3


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_no_flag_is_declared_twice(path: tuple[str, ...]):
    opts = [o for p in _command(path).params for o in (*p.opts, *p.secondary_opts)]
    assert len(opts) == len(set(opts)), sorted(o for o in opts if opts.count(o) > 1)


def test_the_commands_declare_no_option_themselves():
    """Defaults live in the settings classes: the commands' own code holds no typer.Option."""
    for func in (tune_cli.app, cloud_cli.sagemaker_train, cloud_cli.sagemaker_tune):
        assert "typer.Option" not in inspect.getsource(func), func.__name__


def test_sagemaker_train_and_tune_share_the_job_options():
    train = {p.name: p for p in _command(("cloud", "sagemaker", "train")).params}
    tune = {p.name: p for p in _command(("cloud", "sagemaker", "tune")).params}
    job = set(_option_fields(TrainingJobSpec)) | set(_option_fields(cloud_cli.AwsRequest))
    for name in job:
        a, b = train[name], tune[name]
        assert (a.opts, a.secondary_opts, a.default, a.help, a.envvar) == \
            (b.opts, b.secondary_opts, b.default, b.help, b.envvar), name


def test_sweep_training_options_are_train_settings():
    sweep = {f.name: f for f in fields(SweepSettings)}
    train = {f.name: f for f in fields(TrainSettings)}
    for name in ("seed", "address"):
        assert sweep[name].default == train[name].default
        assert sweep[name].metadata["cli"]["min"] == train[name].metadata["cli"]["min"]
    refused = CliRunner().invoke(app, ["tune", "--storage", "s", "--seed", "-1"])
    assert refused.exit_code == 2 and "greater than or equal to 0" in refused.output


def test_train_settings_make_the_same_options_as_roadsense_train():
    """`roadsense train`'s options are the generic generator's, option for option."""

    def key(p: inspect.Parameter) -> tuple:
        kind, info = p.annotation.__origin__, p.annotation.__metadata__[0]
        return (p.name, p.default, kind, info.default, info.param_decls, info.help, info.min)

    ours = [key(p) for p in settings_options(TrainSettings)]
    names = {k[0] for k in ours}
    train = [key(p) for p in train_app.__signature__.parameters.values() if p.name in names]
    assert ours == train and len(ours) > 20


def test_an_option_declared_twice_is_refused():
    @dataclass
    class A:
        seed: int = option(0, help="a")

    @dataclass
    class B:
        other: int = option(1, flags=("--seed",), help="b")

    with pytest.raises(TypeError, match="'seed' is declared twice"):
        with_options(settings_options(A), settings_options(A))(lambda **v: None)
    with pytest.raises(TypeError, match="'--seed' is declared twice"):
        with_options(settings_options(A), settings_options(B))(lambda **v: None)
    with pytest.raises(TypeError, match="no option field"):
        settings_options(A, only=("nope",))


def test_defaults_reach_the_settings(tmp_path: Path, monkeypatch):
    """Options left out: the objects the commands build are the dataclasses' defaults."""
    plan = CliRunner().invoke(app, ["tune", "--storage", str(tmp_path / "s"), "--force",
                                    "--dry-run", "--name", "n"])
    assert plan.exit_code == 0, (plan.output, plan.exception)
    config = json.loads(plan.stdout)["config"]
    defaults = SweepSettings(storage=str(tmp_path / "s"), name="n")
    for f in fields(SweepSettings):
        assert config[f.name] == getattr(defaults, f.name), f.name

    monkeypatch.setenv("ROADSENSE_SAGEMAKER_ROLE", ROLE)
    job = ["--image", IMAGE, "--dataset", "s3://d/x", "--output", "s3://o/x",
           "--checkpoints", "s3://o/c", "--job-name", "rs-defaults", "--dry-run"]
    train = CliRunner().invoke(app, ["cloud", "sagemaker", "train", *job])
    assert train.exit_code == 0, (train.output, train.exception)
    request = json.loads(train.stdout)["CreateTrainingJob"]
    spec = TrainingJobSpec(job_name="rs-defaults", image_uri=IMAGE, role_arn=ROLE,
                           dataset_uri="s3://d/x", output_uri="s3://o/x",
                           checkpoint_uri="s3://o/c")
    assert request["ResourceConfig"]["InstanceType"] == spec.instance_type
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": spec.max_runtime_minutes * 60,
                                            "MaxWaitTimeInSeconds": spec.max_runtime_minutes * 120}
    assert request["AlgorithmSpecification"]["TrainingInputMode"] == spec.input_mode
    assert request["AlgorithmSpecification"]["ContainerArguments"][-1] == \
        str(spec.train_runtime_minutes)

    tune = CliRunner().invoke(app, ["cloud", "sagemaker", "tune", *job, "--force",
                                    "--range", "lr=1e-5:1e-3:log"])
    assert tune.exit_code == 0, (tune.output, tune.exception)
    config = json.loads(tune.stdout)["CreateHyperParameterTuningJob"][
        "HyperParameterTuningJobConfig"]
    tuning = TuningJobSettings(name="rs-defaults", ranges=["lr=1e-5:1e-3:log"])
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": tuning.max_jobs,
                                        "MaxParallelTrainingJobs": tuning.max_parallel}
    assert config["HyperParameterTuningJobObjective"] == {
        "Type": tuning.objective_type, "MetricName": tuning.objective_metric}


def test_every_cloud_command_shares_the_aws_request_options():
    """--dry-run and --region mean one thing in every `roadsense cloud` command: AwsRequest's."""
    fields_ = _option_fields(cloud_cli.AwsRequest)
    for path in [("cloud", "budget"), ("cloud", "sagemaker", "push-image"),
                 ("cloud", "sagemaker", "train"), ("cloud", "sagemaker", "tune")]:
        params = {p.name: p for p in _command(path).params}
        for name in set(params) & set(fields_):
            assert params[name].default == fields_[name].default
            assert params[name].help == fields_[name].metadata["cli"]["help"], (path, name)
        assert "dry_run" in params, path
    budget = {p.name: p for p in _command(("cloud", "budget")).params}
    assert budget["alert_percent"].default == \
        inspect.signature(build_budget_request).parameters["alert_percent"].default
