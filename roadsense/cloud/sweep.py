"""Ray Tune sweeps over `rllib_configs` search spaces (ASHA or PBT), gated on Phase 1 stability.

Callers check the stability gate (`roadsense.cloud.gate`) first; this module imports Ray only
inside `run_sweep`. Each trial builds its PPO config with ``rllib_configs.ppo_convoy
.build_config(**base, **sampled)``, trains, and reports a checkpoint every few iterations to the
sweep's storage (local dir or s3://; Tune writes s3:// through pyarrow's filesystem). Every trial
stops itself, after a final checkpoint, once the sweep's maximum runtime is reached (the cost
guardrail); Tune's own time budget is the backstop.

Every trial's results also go to TensorBoard event files in its trial folder under the sweep's
storage (Tune's `TBXLoggerCallback`, named here so that TUNE_DISABLE_AUTO_CALLBACK_LOGGERS
does not drop it): `tensorboard --logdir <storage>/<name>` shows a sweep while it runs.

The sweep's run manifest (kind "tune") is written next to the results at the start and again at
the end; it records the gate's verdict and ``forced`` when the gate was overridden.
"""

from __future__ import annotations

import importlib
import logging
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from roadsense.cloud.aws import join_uri, write_json
from roadsense.cloud.gate import MANIFEST_NAME, GateResult
from roadsense.errors import ConfigError

log = logging.getLogger(__name__)

SCHEDULERS = ("asha", "pbt")


@dataclass
class SweepSettings:
    """One sweep: where it writes, what it searches and how long it may run."""

    storage: str
    """Results and checkpoints root: a local directory or s3://bucket/prefix."""
    name: str
    """Sweep name (the experiment directory under `storage`)."""
    space: str | None = None
    """Key in rllib_configs.search_spaces.SEARCH_SPACES (None: the only/whole space)."""
    scheduler: str = "asha"
    num_samples: int = 8
    max_iterations: int = 50
    """Training iterations per trial (ASHA's max_t)."""
    grace_period: int = 5
    """ASHA: iterations before a trial may be stopped early; PBT: perturbation interval."""
    checkpoint_every: int = 5
    metric: str = "env_runners/episode_return_mean"
    mode: str = "max"
    max_runtime_minutes: float = 240.0
    """Cost guardrail: trials checkpoint and stop after this much wall-clock time."""
    max_concurrent_trials: int | None = None
    seed: int = 0
    address: str | None = None
    """Ray address (e.g. "auto" on the cluster); None starts a local Ray."""
    base_config: dict = field(default_factory=dict)
    """Fixed keyword arguments for build_config (the sampled ones are added on top)."""

    def validate(self) -> None:
        """Raise ConfigError naming the bad field."""
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"scheduler {self.scheduler!r}", fix=f"use one of {SCHEDULERS}")
        if self.mode not in ("max", "min"):
            raise ConfigError(f"mode {self.mode!r}", fix="use max or min")
        for name in ("num_samples", "max_iterations", "grace_period", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}", fix="use a positive integer")
        if not self.max_runtime_minutes > 0:
            raise ConfigError(
                f"max_runtime_minutes={self.max_runtime_minutes}", fix="use a positive number"
            )


def resolve_space(spaces: dict, name: str | None) -> dict:
    """Pick the search space: SEARCH_SPACES[name], its only entry, or SEARCH_SPACES itself."""
    named = bool(spaces) and all(isinstance(v, dict) for v in spaces.values())
    if name is not None:
        if not named or name not in spaces:
            known = sorted(spaces) if named else []
            raise ConfigError(f"no search space {name!r}", fix=f"use one of {known}")
        return dict(spaces[name])
    if named:
        if len(spaces) == 1:
            return dict(next(iter(spaces.values())))
        raise ConfigError(
            "rllib_configs.search_spaces has several spaces", fix=f"pass --space {sorted(spaces)}"
        )
    return dict(spaces)


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


def _trainable(build_config: Any, base: dict, settings: SweepSettings, deadline: float) -> Any:
    """A function trainable: build, restore, train with periodic checkpoints, stop at deadline."""

    def trial(params: dict) -> None:
        import tempfile

        from ray import tune

        algo = build_config(**{**base, **params}).build_algo()
        try:
            start = 0
            checkpoint = tune.get_checkpoint()
            if checkpoint is not None:  # PBT exploit or a restored trial
                with checkpoint.as_directory() as path:
                    algo.restore_from_path(path)
                start = int(getattr(algo, "iteration", 0) or 0)
            for i in range(start, settings.max_iterations):
                result = algo.train()
                last = i + 1 == settings.max_iterations
                out_of_time = time.time() >= deadline
                if last or out_of_time or (i + 1) % settings.checkpoint_every == 0:
                    with tempfile.TemporaryDirectory() as path:
                        algo.save_to_path(path)
                        tune.report(result, checkpoint=tune.Checkpoint.from_directory(path))
                else:
                    tune.report(result)
                if out_of_time:
                    log.warning("trial reached the sweep's max runtime; checkpointed and stopped")
                    return
        finally:
            algo.stop()

    return trial


def _scheduler(settings: SweepSettings, space: dict) -> Any:
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

    if settings.scheduler == "asha":
        return ASHAScheduler(
            time_attr="training_iteration",
            max_t=settings.max_iterations,
            grace_period=min(settings.grace_period, settings.max_iterations),
        )
    return PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=settings.grace_period,
        hyperparam_mutations=space,
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
    search_spaces = importlib.import_module("rllib_configs.search_spaces")
    ppo_convoy = importlib.import_module("rllib_configs.ppo_convoy")
    space = resolve_space(search_spaces.SEARCH_SPACES, settings.space)
    manifest = sweep_manifest(
        settings, gate=gate, forced=forced, phase1=phase1, space=space, git_commit=git_commit
    )
    manifest_uri = join_uri(join_uri(settings.storage, settings.name), MANIFEST_NAME)
    manifest["status"] = "running"
    write_json(manifest_uri, manifest)

    import ray
    from ray import tune
    from ray.rllib.algorithms.ppo import PPO
    from ray.tune.logger import TBXLoggerCallback

    base = {"seed": settings.seed, **settings.base_config}
    started = time.time()
    deadline = started + settings.max_runtime_minutes * 60
    resources = PPO.default_resource_request(ppo_convoy.build_config(**base))
    trainable = tune.with_resources(
        _trainable(ppo_convoy.build_config, base, settings, deadline), resources
    )
    own_ray = not ray.is_initialized()
    if own_ray:
        ray.init(address=settings.address, log_to_driver=False)
    try:
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                metric=settings.metric,
                mode=settings.mode,
                num_samples=settings.num_samples,
                scheduler=_scheduler(settings, space),
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


__all__ = ["SCHEDULERS", "SweepSettings", "resolve_space", "run_sweep", "sweep_manifest"]
