"""Ray Tune sweeps (ASHA or PBT) of Phase 1's trainer, gated on Phase 1 stability.

Callers check the stability gate (`roadsense.cloud.gate`) first; this module imports Ray only
inside `run_sweep`. Every trial is a `roadsense train` run: `roadsense.rllib.training.train` on
the sweep's base `TrainSettings` with the sampled values on top, so trials train what Phase 1
trains (its dataset, warm start, imitation term, schedules, lean sampling; the PPO config from
`training.algorithm_config`). The objective is the validation score (collision rate plus
false-braking rate on the validation suite, lower is better): each validation of a trial is
reported to Tune with the run folder (manifest + that checkpoint) as the trial's checkpoint.
A restored trial (PBT's exploit, a retried trial) resumes that run with its own values.

The search spaces vary `TrainSettings` fields only, never the network's shape, and per
scheduler only what is safe: PBT hands one trial's weights and optimiser state to another and
changes only values that apply to a restored run as they are (`PBT_SAFE`).

Every trial stops itself (after a validation and checkpoint) when the sweep's maximum runtime
is reached: its training budget is what is left of it. Tune's own time budget is the backstop.

Every trial's results also go to TensorBoard event files in its trial folder under the sweep's
storage (Tune's `TBXLoggerCallback`, named here so that TUNE_DISABLE_AUTO_CALLBACK_LOGGERS
does not drop it): `tensorboard --logdir <storage>/<name>` shows a sweep while it runs.

The sweep's run manifest (kind "tune") is written next to the results at the start and again at
the end; it records the gate's verdict and ``forced`` when the gate was overridden.
"""

from __future__ import annotations

import logging
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from roadsense.cloud.aws import join_uri, write_json
from roadsense.cloud.gate import MANIFEST_NAME, GateResult
from roadsense.errors import ConfigError
from roadsense.options import option, same_as
from roadsense.rllib.settings import TrainSettings

log = logging.getLogger(__name__)

SCHEDULERS = ("asha", "pbt")
OBJECTIVE = "validation/score"
"""Reported at every validation of a trial: collision + false-braking rate, lower is better."""

TUNABLE = frozenset({
    "lr", "lr_final", "lr_decay_steps", "entropy_coeff", "imitation_weight",
    "false_brake_start", "num_epochs", "minibatch_size", "train_batch_size",
    "warm_start_brake", "warm_start_steps",
})  # fmt: skip
"""`TrainSettings` fields a search space may vary (ASHA: every trial trains from the start)."""
PBT_SAFE = frozenset({"lr", "lr_final", "entropy_coeff", "imitation_weight"})
"""What PBT may mutate: values that apply to a restored run unchanged (no shapes, no batch
layout, no warm start that has already happened)."""

SPACES: dict[str, dict[str, tuple]] = {
    "phase1": {
        "lr": ("loguniform", 1e-4, 1e-3),
        "lr_final": ("loguniform", 1e-5, 1e-4),
        "entropy_coeff": ("choice", [0.0, 0.001, 0.01]),
        "imitation_weight": ("choice", [0.0, 0.5, 1.0, 2.0]),
    },
    "phase1-batch": {
        "lr": ("loguniform", 1e-4, 1e-3),
        "num_epochs": ("choice", [5, 10]),
        "minibatch_size": ("choice", [128, 256, 512]),
        "imitation_weight": ("choice", [0.0, 1.0]),
    },
    "smoke": {"lr": ("grid", [3e-4, 1e-3])},
}
"""Search spaces over `TrainSettings` fields, as (kind, *arguments) of a Ray Tune domain:
`phase1` suits ASHA and PBT, `phase1-batch` ASHA only, `smoke` checks the plumbing."""


@dataclass
class SweepSettings:
    """One sweep: where it writes, what it searches and how long it may run; the fields made
    with `option` are `roadsense tune`'s options."""

    storage: str = option(help="Results/checkpoints root: local dir or s3://...")
    """Results and checkpoints root: a local directory or s3://bucket/prefix."""
    name: str | None = option(None, help="Sweep name (default tune-<utc time>).")
    """Sweep name (the experiment directory under `storage`); None: tune-<utc time>."""
    space: str = option("phase1", help=f"Search space: {', '.join(SPACES)} "
                        "(roadsense.cloud.sweep.SPACES; phase1-batch: ASHA only).")
    """Key in `SPACES`."""
    scheduler: str = option("asha", help=f"{' or '.join(SCHEDULERS)}.")
    num_samples: int = option(8, help="Trials.")
    max_iterations: int = option(50, help="Training iterations per trial.")
    """Training iterations per trial (ASHA's max_t)."""
    grace_period: int = option(5, help="ASHA grace period / PBT interval (iterations).")
    """ASHA: iterations before a trial may be stopped early; PBT: perturbation interval."""
    metric: str = option(OBJECTIVE, help="Metric to optimise (reported at each validation: "
                         "collision + false-braking rate).")
    mode: str = option("min", help="max or min.")
    max_runtime_minutes: float = option(240.0, help="Trials checkpoint and stop after.")
    """Cost guardrail: trials checkpoint and stop after this much wall-clock time."""
    max_concurrent_trials: int | None = None
    seed: int = same_as(TrainSettings, "seed", help="base seed of every trial")
    address: str | None = same_as(TrainSettings, "address")
    """Ray address (e.g. "auto" on the cluster); None starts a local Ray."""
    base_config: dict = field(default_factory=dict)
    """Fixed `TrainSettings` fields of every trial (the sampled ones are set on top), e.g.
    dataset_dir, num_env_runners, validation_suite, validate_every_minutes, checkpoint_every."""

    def __post_init__(self) -> None:
        if self.name is None:
            self.name = f"tune-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"

    def validate(self) -> None:
        """Raise ConfigError naming the bad field."""
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"scheduler {self.scheduler!r}", fix=f"use one of {SCHEDULERS}")
        if self.mode not in ("max", "min"):
            raise ConfigError(f"mode {self.mode!r}", fix="use max or min")
        for name in ("num_samples", "max_iterations", "grace_period"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}", fix="use a positive integer")
        if not self.max_runtime_minutes > 0:
            raise ConfigError(
                f"max_runtime_minutes={self.max_runtime_minutes}", fix="use a positive number"
            )
        if self.space not in SPACES:
            raise ConfigError(f"no search space {self.space!r}", fix=f"use one of {sorted(SPACES)}")
        check_space(SPACES[self.space], self.scheduler)
        known = {f.name for f in fields(TrainSettings)}
        unknown = sorted(set(self.base_config) - known)
        if unknown:
            raise ConfigError(f"--set {unknown[0]} is not a `roadsense train` setting",
                              fix="use TrainSettings field names, e.g. num_env_runners=4")

    def train_settings(self) -> TrainSettings:
        """The trials' base TrainSettings: `base_config` over the sweep's defaults (one env
        runner, no final evaluation, the seed), dataset folders made absolute (trials run in
        their own working directories)."""
        base = {"num_env_runners": 1, "final_eval": False, "seed": self.seed,
                "budget_minutes": self.max_runtime_minutes, "iterations": self.max_iterations,
                **self.base_config}
        settings = replace(TrainSettings(), **base)
        settings.dataset_root = str(Path(settings.dataset_root).resolve())
        if settings.dataset_dir and "://" not in settings.dataset_dir:
            settings.dataset_dir = str(Path(settings.dataset_dir).resolve())
        return settings


def check_space(space: dict, scheduler: str) -> None:
    """ConfigError unless every key is a tunable TrainSettings field, safe under `scheduler`."""
    allowed = PBT_SAFE if scheduler == "pbt" else TUNABLE
    for key in space:
        if key not in allowed:
            why = ("PBT restores one trial's weights and optimiser state into another"
                   if scheduler == "pbt" and key in TUNABLE else
                   "sweeps vary `roadsense train` settings; the network's shape stays fixed")
            raise ConfigError(f"the search space varies {key!r}, which {scheduler} may not vary "
                              f"({why})", fix=f"vary only {sorted(allowed)}")


def tune_domains(space: dict) -> dict:
    """Ray Tune domains for a space of (kind, *arguments) entries."""
    from ray import tune

    kinds = {"loguniform": tune.loguniform, "uniform": tune.uniform, "choice": tune.choice,
             "grid": tune.grid_search, "randint": tune.randint}
    return {key: kinds[kind](*args) for key, (kind, *args) in space.items()}


def _versions() -> dict:
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    from roadsense import __version__

    return {
        "sumo": version("eclipse-sumo"),
        "ray": version("ray"),
        "torch": version("torch"),
        "python": platform.python_version(),
        "roadsense": __version__,
    }


def sweep_manifest(
    settings: SweepSettings,
    *,
    gate: GateResult | None,
    forced: bool,
    phase1: dict | None,
    space: dict | None = None,
    git_commit: str = "unknown",
) -> dict:
    """The sweep's run manifest (kind "tune"), following the shared run-manifest contract."""
    phase1 = phase1 or {}
    return {
        "kind": "tune",
        "run_id": settings.name,
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit,
        "dataset_manifest_hash": phase1.get("dataset_manifest_hash"),
        "eval_suite": phase1.get("eval_suite"),
        "emulator_params_version": phase1.get("emulator_params_version"),
        "versions": _versions(),
        "seed": settings.seed,
        "config": {
            **asdict(settings),
            "search_space": {k: str(v) for k, v in (space or {}).items()},
        },
        "seeds": {"base": settings.seed},
        "evaluations": [],
        "forced": forced,
        "gate": gate.to_dict() if gate is not None else None,
        "phase1_run_id": phase1.get("run_id"),
        "status": "planned",
    }


def _trainable(base: TrainSettings, deadline: float) -> Any:
    """A function trainable: one `roadsense train` run per trial, reporting each validation."""

    def trial(params: dict) -> None:
        from ray import tune

        from roadsense.rllib.training import train

        storage = Path(tempfile.mkdtemp(prefix="rs-trial-"))
        try:
            restored = tune.get_checkpoint()
            if restored is not None:  # PBT exploit or a retried trial: resume that run
                with restored.as_directory() as path:
                    shutil.copytree(path, storage, dirs_exist_ok=True)
            remaining = (deadline - time.time()) / 60
            settings = replace(base, **params, storage=str(storage), resume=restored is not None,
                               budget_minutes=max(0.1, min(base.budget_minutes or remaining,
                                                           remaining)))

            def on_validation(entry: dict) -> None:
                (run,) = [p for p in storage.iterdir() if p.is_dir()]
                with tempfile.TemporaryDirectory() as folder:
                    keep = Path(folder) / run.name
                    shutil.copytree(run / "checkpoints" / entry["checkpoint"],
                                    keep / "checkpoints" / entry["checkpoint"])
                    shutil.copy2(run / MANIFEST_NAME, keep / MANIFEST_NAME)
                    tune.report({OBJECTIVE: entry["score"], "iteration": entry["iteration"],
                                 "validation/collision_rate": entry["collision_rate"],
                                 "validation/false_brake_rate": entry["false_brake_rate"],
                                 "run_id": run.name},
                                checkpoint=tune.Checkpoint.from_directory(folder))

            train(settings, on_validation=on_validation)
        finally:
            shutil.rmtree(storage, ignore_errors=True)

    return trial


def _scheduler(settings: SweepSettings, domains: dict) -> Any:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

    if settings.scheduler == "asha":
        return ASHAScheduler(
            time_attr="iteration",
            max_t=settings.max_iterations,
            grace_period=min(settings.grace_period, settings.max_iterations),
        )
    mutations = {k: tune.choice(v["grid_search"]) if isinstance(v, dict) and "grid_search" in v
                 else v for k, v in domains.items()}
    return PopulationBasedTraining(
        time_attr="iteration",
        perturbation_interval=settings.grace_period,
        hyperparam_mutations=mutations,
    )


def run_sweep(
    settings: SweepSettings,
    *,
    gate: GateResult | None,
    forced: bool,
    phase1: dict | None,
    git_commit: str = "unknown",
) -> dict:
    """Run the sweep with Ray Tune; writes and returns its final run manifest."""
    settings.validate()
    base = settings.train_settings()
    if base.validation_suite is None:
        raise ConfigError("a sweep needs a validation suite: its objective is the validation "
                          "score", fix="leave validation_suite at its default or name a suite")
    base.validate()
    space = SPACES[settings.space]
    manifest = sweep_manifest(
        settings, gate=gate, forced=forced, phase1=phase1, space=space, git_commit=git_commit
    )
    manifest["train_settings"] = asdict(base)
    manifest_uri = join_uri(join_uri(settings.storage, settings.name), MANIFEST_NAME)
    manifest["status"] = "running"
    write_json(manifest_uri, manifest)

    import ray
    from ray import tune
    from ray.rllib.algorithms.ppo import PPO
    from ray.tune.logger import TBXLoggerCallback

    from roadsense.envs import EnvConfig
    from roadsense.rllib.training import algorithm_config

    started = time.time()
    deadline = started + settings.max_runtime_minutes * 60
    env_config = EnvConfig.from_dict({"emulator_params": base.emulator_params,
                                      **base.env_overrides})
    # The trial's resources, from the same config its run builds.
    resources = PPO.default_resource_request(algorithm_config(
        base, base.dataset_dir or "", env_config, int(base.num_env_runners or 0)))
    trainable = tune.with_resources(_trainable(base, deadline), resources)
    domains = tune_domains(space)
    own_ray = not ray.is_initialized()
    if own_ray:
        ray.init(address=settings.address, log_to_driver=False)
    try:
        tuner = tune.Tuner(
            trainable,
            param_space=domains,
            tune_config=tune.TuneConfig(
                metric=settings.metric,
                mode=settings.mode,
                num_samples=settings.num_samples,
                scheduler=_scheduler(settings, domains),
                max_concurrent_trials=settings.max_concurrent_trials,
                # Backstop: trials stop themselves at the deadline after a checkpoint.
                time_budget_s=settings.max_runtime_minutes * 60 + 300,
            ),
            run_config=tune.RunConfig(
                name=settings.name,
                storage_path=settings.storage,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                callbacks=[TBXLoggerCallback()],
            ),
        )
        results = tuner.fit()
    finally:
        if own_ray:
            ray.shutdown()
    best = None
    try:
        best_result = results.get_best_result()
        best = {
            "config": {k: _plain(v) for k, v in (best_result.config or {}).items()},
            "metric": _plain(_lookup(best_result.metrics or {}, settings.metric)),
            "checkpoint": best_result.checkpoint.path if best_result.checkpoint else None,
        }
    except RuntimeError as exc:  # no trial reported the metric
        log.warning("no best trial: %s", exc)
    manifest.update(
        status="finished",
        finished_utc=datetime.now(UTC).isoformat(timespec="seconds"),
        wall_s=round(time.time() - started, 1),
        trials=len(results),
        errors=len(results.errors),
        best=best,
    )
    write_json(manifest_uri, manifest)
    return manifest


def _lookup(metrics: dict, path: str) -> Any:
    node: Any = metrics
    for part in path.split("/"):
        if not isinstance(node, dict) or part not in node:
            return metrics.get(path)
        node = node[part]
    return node


def _plain(value: Any) -> Any:
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


__all__ = ["OBJECTIVE", "PBT_SAFE", "SCHEDULERS", "SPACES", "TUNABLE", "SweepSettings",
           "check_space", "run_sweep", "sweep_manifest", "tune_domains"]
