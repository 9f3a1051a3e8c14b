"""`roadsense train`: the main job. Local Ray by default; `--address auto` on a cluster."""

from __future__ import annotations

import inspect
import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from roadsense.cli.options import settings_options
from roadsense.errors import ConfigError
from roadsense.rllib.settings import (
    DEFAULT_BUDGET_MINUTES,
    TrainSettings,
    cli_value,
    load_toml,
)

app_help = "Train the policy with RLlib PPO (Deep Sets over ragged peer sets)."


def resolve_budget(budget_minutes: float | None, max_runtime_minutes: float | None) -> float:
    """The run's wall-clock budget: --budget-minutes capped by --max-runtime-minutes; either
    alone is the budget; neither: `DEFAULT_BUDGET_MINUTES`. A cloud run given only its max
    runtime trains for all of it."""
    if max_runtime_minutes is None:
        return DEFAULT_BUDGET_MINUTES if budget_minutes is None else budget_minutes
    if budget_minutes is None:
        return max_runtime_minutes
    return min(budget_minutes, max_runtime_minutes)


def _cli_parameters() -> list[inspect.Parameter]:
    """The options that are not settings: they shape how settings are made or shown."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    return [
        inspect.Parameter("config", keyword, default=None, annotation=Annotated[
            Path | None, typer.Option(help="TOML file of TrainSettings fields (e.g. seed = 3, "
                                      "an env_overrides table); the flags given override it")]),
        inspect.Parameter("budget_minutes", keyword, default=None, annotation=Annotated[
            float | None, typer.Option(help=f"wall-clock budget (default: --max-runtime-minutes "
                                       f"if given, else {DEFAULT_BUDGET_MINUTES:g})")]),
        inspect.Parameter("max_runtime_minutes", keyword, default=None, annotation=Annotated[
            float | None, typer.Option(help="hard cap for cloud runs: checkpoint and stop; also "
                                       "the budget unless --budget-minutes is smaller")]),
        inspect.Parameter("debug", keyword, default=False, annotation=Annotated[
            bool, typer.Option(help="one worker in this process (num_env_runners=0): "
                               "breakpoints in the env work")]),
        inspect.Parameter("env", keyword, default=None, annotation=Annotated[
            list[str] | None, typer.Option(help="EnvConfig override KEY=JSON, repeatable (e.g. "
                                           "episode_s=20)")]),
    ]


def make_settings(ctx: typer.Context, config: Path | None, budget_minutes: float | None,
                  max_runtime_minutes: float | None, debug: bool, env: list[str] | None,
                  **flags: Any) -> TrainSettings:
    """The run's settings: `TrainSettings` defaults, then the --config file, then the flags
    given on the command line (a flag left at its default does not override the file)."""
    flags = {name: _plain(value) for name, value in flags.items()}
    values = {name: cli_value(name, value) for name, value in flags.items()}
    values |= load_toml(config) if config is not None else {}
    values |= {name: cli_value(name, value) for name, value in flags.items()
               if _given(ctx, name)}
    if env:
        values["env_overrides"] = _env_overrides(env)
    if budget_minutes is not None:
        values["budget_minutes"] = budget_minutes
    # the budget: the flag's or the file's, capped by the maximum runtime (`resolve_budget`)
    values["budget_minutes"] = resolve_budget(values.get("budget_minutes"), max_runtime_minutes)
    if debug:
        values["num_env_runners"] = 0
    return TrainSettings(**values)


def _plain(value: Any) -> Any:
    """A repeatable option's values as a list; none given: None (the field's default)."""
    if isinstance(value, tuple):
        return list(value) or None
    return value


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option `name` was given (command line or environment), not left at its default.
    By the source's name: typer ships its own copy of click's `ParameterSource`."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _env_overrides(items: list[str]) -> dict[str, Any]:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--env {item!r} is not KEY=JSON", fix="e.g. --env episode_s=20")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def app(**kwargs: Any) -> None:
    """Train PPO on ConvoyEnv and write checkpoints, a run manifest and an evaluation report."""
    from roadsense.rllib.training import train

    debug, settings = kwargs["debug"], make_settings(**kwargs)
    eval_suite = settings.eval_suite
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
        console.print(_table(f"final evaluation ({eval_suite})",
                             ("policy", "collision rate", "false braking", "reaction s"),
                             [(name, _pct(m["collision_rate"]), _pct(m["false_brake_rate"]),
                               _f(m["reaction_s_median"])) for name, m in final.items()]))
    for rec, by_policy in (manifest.get("final_replay") or {}).items():
        console.print(_table(
            f"replay of {rec} (a calm real drive: every brake is a false one)",
            ("policy", "rows braking", "brake onsets/min", "longest brake s"),
            [(name, _pct(m["brake_share"]), _f(m["onsets_per_min"]), _f(m["longest_brake_s"]))
             for name, m in by_policy.items()]))


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    return table


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


app.__signature__ = inspect.Signature(
    [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)]
    + settings_options(TrainSettings) + _cli_parameters())
