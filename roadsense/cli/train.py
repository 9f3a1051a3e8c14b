"""`roadsense train`: the main job. Local Ray by default; `--address auto` on a cluster."""

from __future__ import annotations

import json
import logging
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

app_help = "Train the policy with RLlib PPO (Deep Sets over ragged peer sets)."
DEFAULT_BUDGET_MINUTES = 10.0


def resolve_budget(budget_minutes: float | None, max_runtime_minutes: float | None) -> float:
    """The run's wall-clock budget: --budget-minutes capped by --max-runtime-minutes; either
    alone is the budget; neither: `DEFAULT_BUDGET_MINUTES`. A cloud run given only its max
    runtime trains for all of it."""
    if max_runtime_minutes is None:
        return DEFAULT_BUDGET_MINUTES if budget_minutes is None else budget_minutes
    if budget_minutes is None:
        return max_runtime_minutes
    return min(budget_minutes, max_runtime_minutes)


def app(
    dataset_dir: Annotated[str | None, typer.Option(
        "--dataset-dir", "--dataset",
        help="training dataset folder or s3:// URI (default: the built-in default-v1)")] = None,
    eval_suite: Annotated[str, typer.Option(help="suite of the final evaluation")] = "standard-v1",
    seed: Annotated[int, typer.Option(min=0, help="base seed of the run")] = 0,
    emulator_params: Annotated[str | None, typer.Option(
        help="radio parameter file (default: the packaged calibration)")] = None,
    storage: Annotated[str, typer.Option(help="runs folder or s3://bucket/prefix")] = "runs",
    num_env_runners: Annotated[int | None, typer.Option(
        min=0, help="env runners (default: one per core; with --address, one per CPU of the "
        "cluster's workers at its autoscaling maximum; 0 = in this process)")] = None,
    num_envs_per_env_runner: Annotated[int, typer.Option(
        min=1, help="envs per runner (the first on libsumo, the rest on traci)")] = 4,
    budget_minutes: Annotated[float | None, typer.Option(
        help=f"wall-clock budget (default: --max-runtime-minutes if given, else "
        f"{DEFAULT_BUDGET_MINUTES:g})")] = None,
    iterations: Annotated[int | None, typer.Option(min=1, help="stop after N iterations")] = None,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="iterations")] = 5,
    resume: Annotated[bool, typer.Option(
        help="continue the latest run in --storage (a new run if there is none)")] = False,
    address: Annotated[str | None, typer.Option(
        help="join a Ray cluster (e.g. auto) instead of starting local Ray")] = None,
    debug: Annotated[bool, typer.Option(
        help="one worker in this process (num_env_runners=0): breakpoints in the env work")
    ] = False,
    train_batch_size: Annotated[int, typer.Option(min=64)] = 4000,
    minibatch_size: Annotated[int, typer.Option(min=16)] = 256,
    num_epochs: Annotated[int, typer.Option(min=1)] = 10,
    lr: Annotated[float, typer.Option(min=0.0, help="learning rate at the start")] = 3e-4,
    lr_final: Annotated[float, typer.Option(
        min=0.0, help="learning rate reached linearly, then kept (0: keep --lr)")] = 3e-5,
    lr_decay_steps: Annotated[int | None, typer.Option(
        min=1, help="env steps of the decay (default: the run's expected length, at most "
        "15 minutes of it)")] = None,
    false_brake_start: Annotated[float | None, typer.Option(
        min=0.0, help="false-braking penalty weight at the start, raised to the env's (3.0) "
        "over 40-80% of the learning-rate decay (default: the env's weight throughout)")
    ] = None,
    warm_start: Annotated[str, typer.Option(
        help="start from an imitation of this baseline ('none': from scratch)")
    ] = "v2v_rule",
    warm_start_steps: Annotated[int, typer.Option(
        min=1, help="env steps of the baseline to imitate")] = 40_000,
    warm_start_brake: Annotated[float, typer.Option(
        help="brake level imitated on the baseline's braking steps in hazard episodes "
             "(0: the baseline's own)")] = 1.0,
    imitation_weight: Annotated[float, typer.Option(
        min=0.0, help="weight of the imitation term kept in PPO's loss (0: plain PPO after "
        "the warm start)")] = 1.0,
    validation_suite: Annotated[str, typer.Option(
        help="suite that picks the checkpoint to evaluate ('none': the last one)")
    ] = "validation-v2",
    validate_every_minutes: Annotated[float, typer.Option(
        min=0.1, help="how often to validate (also at the end)")] = 6.0,
    replay: Annotated[list[str] | None, typer.Option(
        help="real recording (.npz) or folder of them, replayed at every validation and in "
             "the final report, repeatable (default: ./recordings when it exists; 'none': no "
             "replay)")] = None,
    replay_weight: Annotated[float, typer.Option(
        min=0.0, help="weight of the recordings' braking share in the validation score")
    ] = 1.0,
    lean_sampling: Annotated[bool, typer.Option(
        help="sample with LeanEnvRunner (RLlib's bookkeeping, no per-step connectors, the "
             "policy in numpy); --no-lean-sampling: RLlib's own loop")
    ] = True,
    env: Annotated[list[str] | None, typer.Option(
        help="EnvConfig override KEY=JSON, repeatable (e.g. episode_s=20)")] = None,
    final_eval: Annotated[bool, typer.Option(help="evaluate on the suite at the end")] = True,
    max_runtime_minutes: Annotated[float | None, typer.Option(
        help="hard cap for cloud runs: checkpoint and stop; also the budget unless "
        "--budget-minutes is smaller")] = None,
    mlflow_uri: Annotated[str | None, typer.Option(
        help="also track the run in MLflow (a tracking server URL, or file:PATH); TensorBoard "
             "event files go under the run folder either way")] = None,
) -> None:
    """Train PPO on ConvoyEnv and write checkpoints, a run manifest and an evaluation report."""
    from roadsense.errors import ConfigError
    from roadsense.rllib.training import TrainSettings, train

    overrides = {}
    for item in env or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--env {item!r} is not KEY=JSON", fix="e.g. --env episode_s=20")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    budget_minutes = resolve_budget(budget_minutes, max_runtime_minutes)
    settings = TrainSettings(
        dataset_dir=dataset_dir, eval_suite=eval_suite, seed=seed,
        emulator_params=emulator_params, storage=storage,
        num_env_runners=0 if debug else num_env_runners,
        num_envs_per_env_runner=num_envs_per_env_runner, budget_minutes=budget_minutes,
        iterations=iterations, checkpoint_every=checkpoint_every, resume=resume,
        address=address, train_batch_size=train_batch_size, minibatch_size=minibatch_size,
        num_epochs=num_epochs, lr=lr, lr_final=lr_final or None, lr_decay_steps=lr_decay_steps,
        validation_suite=None if validation_suite.lower() == "none" else validation_suite,
        validate_every_minutes=validate_every_minutes, lean_sampling=lean_sampling,
        env_overrides=overrides, final_eval=final_eval,
        false_brake_start=false_brake_start,
        warm_start=None if warm_start.lower() == "none" else warm_start,
        warm_start_steps=warm_start_steps, warm_start_brake=warm_start_brake or None,
        imitation_weight=imitation_weight, mlflow_uri=mlflow_uri,
        replay=None if replay is None else [r for r in replay if r.lower() != "none"],
        replay_weight=replay_weight)
    settings.validate()  # bad input fails before the live table starts
    logging.basicConfig(level=logging.INFO if debug else logging.WARNING)
    console = Console()
    table = Table(title="roadsense train")
    for col in ("iter", "env steps", "steps/s", "return", "collision rate", "false braking",
                "elapsed"):
        table.add_column(col, justify="right")

    with Live(table, console=console, refresh_per_second=2, transient=False) as live:
        def on_iteration(r) -> None:
            table.add_row(str(r.iteration), f"{r.env_steps:,}", f"{r.steps_per_s:,.0f}",
                          _f(r.return_mean), _pct(r.collision_rate), _pct(r.false_brake_rate),
                          f"{r.elapsed_s / 60:.1f} min")
            # SageMaker reads metrics from log lines of this form
            console.log(f"convoy/collision_rate={r.collision_rate} "
                        f"convoy/false_brake_rate={r.false_brake_rate} "
                        f"episode_return_mean={r.return_mean}")
            live.refresh()

        def on_validation(v: dict) -> None:
            # SageMaker tuning's objective (the last value printed counts)
            console.log(f"validation/score={v['score']}")
            console.log(f"validation of {v['checkpoint']} on {v['suite']}: collisions "
                        f"{_pct(v['collision_rate'])}, false braking "
                        f"{_pct(v['false_brake_rate'])} ({v['seconds']:.0f} s)")

        manifest = train(settings, on_iteration, on_validation)
    console.print(f"run {manifest['run_id']} finished: {manifest['storage']}")
    if manifest.get("selected_checkpoint"):
        console.print(f"checkpoint picked on {settings.validation_suite}: "
                      f"{manifest['selected_checkpoint']}")
        picked = [v for v in manifest.get("validations", [])
                  if v["checkpoint"] == manifest["selected_checkpoint"]]
        if picked:  # the last objective line: the score of the checkpoint the run picked
            console.print(f"validation/score={picked[-1]['score']}")
    final = manifest.get("final_eval")
    if final:
        res = Table(title=f"final evaluation ({eval_suite})")
        for col in ("policy", "collision rate", "false braking", "reaction s"):
            res.add_column(col)
        for name, m in final.items():
            res.add_row(name, _pct(m["collision_rate"]), _pct(m["false_brake_rate"]),
                        _f(m["reaction_s_median"]))
        console.print(res)
    for rec, by_policy in (manifest.get("final_replay") or {}).items():
        res = Table(title=f"replay of {rec} (a calm real drive: every brake is a false one)")
        for col in ("policy", "rows braking", "brake onsets/min", "longest brake s"):
            res.add_column(col)
        for name, m in by_policy.items():
            res.add_row(name, _pct(m["brake_share"]), _f(m["onsets_per_min"]),
                        _f(m["longest_brake_s"]))
        console.print(res)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"
