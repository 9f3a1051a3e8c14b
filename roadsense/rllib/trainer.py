"""The trainer loop of a run: start Ray (or join a cluster), build the PPO algorithm
(`algorithm_config`), warm start or resume it, then train, checkpoint and validate until the
budget is spent; the final evaluation and the learning curve follow. `roadsense.rllib.training`
prepares the run (settings, storage, manifest) and calls `run`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from roadsense import run_manifest
from roadsense.envs import ConvoyEnv
from roadsense.envs.episodes import EpisodeRunner
from roadsense.eval.policies import save_policy
from roadsense.rllib.env_runner import collect_seed_records, merge_seed_records, scheduled_weights
from roadsense.rllib.learner import IMITATION_LOSS
from roadsense.rllib.ppo import CONVOY_MODEL, build_config
from roadsense.rllib.reporting import (
    IterationReport,
    final_eval,
    final_gating,
    final_replay,
    learner_stat,
    learning_curve,
    metric,
    timer,
)
from roadsense.rllib.run_storage import CHECKPOINTS, Storage, checkpoints
from roadsense.rllib.settings import TrainSettings
from roadsense.rllib.validation import (
    best_validation,
    driver_env_config,
    recorder,
    replay_inputs,
    selected_checkpoint,
    validate_checkpoint,
)
from roadsense.rllib.warm_start import (
    demonstrations,
    keep_imitating,
    warm_start,
    with_gating_counterexamples,
)
from roadsense.seeding import worker_seed

log = logging.getLogger(__name__)


def algorithm_config(settings: TrainSettings, dataset: str, env_config: Any,
                     runners: int) -> Any:
    """The PPO config of a run from its settings: the one builder behind `roadsense train`, Tune
    trials (`roadsense.cloud.sweep`) and SageMaker jobs, so that a sweep tunes Phase 1's trainer
    (its dataset, schedules, lean sampling, the imitation learner) and not a bare config.
    `env_config` is the run's `EnvConfig`; `runners` the resolved number of env runners."""
    config = build_config(
        env_kwargs={"scenarios": dataset, "config": env_config.as_dict()},
        seed=settings.seed, num_env_runners=runners,
        num_envs_per_env_runner=settings.num_envs_per_env_runner,
        train_batch_size=settings.train_batch_size, minibatch_size=settings.minibatch_size,
        num_epochs=settings.num_epochs, lr=settings.lr_schedule(runners),
        entropy_coeff=settings.entropy_coeff, identity_kwarg="identity",
        model=CONVOY_MODEL, lean_sampling=settings.lean_sampling,
        reward_schedule=settings.reward_schedule(runners, env_config.reward.false_brake))
    return config.fault_tolerance(restart_failed_env_runners=True)


def run(settings: TrainSettings, store: Storage, manifest: dict, dataset: str, env_config: Any,
        runners: int, resumed: tuple[str, Path] | None, tracker: Any,
        on_iteration: Callable[[IterationReport], None] | None,
        on_validation: Callable[[dict], None] | None) -> dict[str, Any]:
    """`train` from Ray's start on; Ray (when started here) is shut down whatever happens."""
    import ray  # deferred: Ray starts here, not when the module is imported

    cpus = os.cpu_count() or 2
    ray_tmp = Path(tempfile.gettempdir()) / "roadsense-ray"
    started_ray = False
    algo = None
    try:
        if not ray.is_initialized():
            started_ray = True
            if settings.address:
                ray.init(address=settings.address, log_to_driver=False)
            else:
                # Token auth stays on, with a per-run token in the environment (inherited by
                # the workers) instead of one written to ~/.ray/auth_token.
                os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
                ray.init(num_cpus=max(cpus, runners), include_dashboard=False,
                         log_to_driver=False, _temp_dir=str(ray_tmp))
        reward_schedule = settings.reward_schedule(runners, env_config.reward.false_brake)
        # what the warm start, the validations and the final evaluation run (evaluation
        # without domain randomisation: its suites fix the radio level)
        manifest["driver_env"] = driver_env_config(env_config)
        replays = replay_inputs(settings)
        manifest["replay_recordings"] = [
            {"name": inp.recording.name, "path": str(inp.recording.path),
             "sha256": hashlib.sha256(inp.recording.path.read_bytes()).hexdigest()}
            for inp in replays]
        warm_started = time.monotonic()
        demo = None
        if settings.warm_start and (not resumed or settings.imitation_weight > 0):
            demo = _demonstrations(settings, dataset, env_config, manifest)
        algo = algorithm_config(settings, dataset, env_config, runners).build_algo()
        if resumed:
            ckpt = checkpoints(store.local)[-1]
            algo.restore_from_path(str(ckpt))
            forget_after(manifest, int((ckpt / "DONE").read_text()))
            log.info("resumed %s from %s", manifest["run_id"], ckpt.name)
        elif demo is not None:
            fitted = warm_start(algo, demo, seed=manifest["warm_start"]["seed"],
                                **_targets(settings, env_config))
            manifest["warm_start"].update(fitted.as_dict(),
                                          seconds=time.monotonic() - warm_started)
            run_manifest.save(manifest, store.local)
            log.info("warm start from %s: %s", settings.warm_start, fitted)
        if demo is not None and settings.imitation_weight > 0:
            keep_imitating(algo, demo, weight=settings.imitation_weight,
                           seed=manifest["warm_start"]["seed"], **_targets(settings, env_config))
        # the warm start counts against the budget
        started = time.monotonic() if demo is None else warm_started
        budget_s = settings.budget_minutes * 60 if settings.budget_minutes else None
        every_s = settings.validate_every_minutes * 60
        next_validation = every_s
        it = algo.iteration
        last_ckpt = it
        progress = store.local / "progress.jsonl"
        while True:
            result = algo.train()
            it = int(result["training_iteration"])
            elapsed = time.monotonic() - started
            env_steps = int(result.get("num_env_steps_sampled_lifetime", 0)
                            or result.get("env_runners", {}).get(
                                "num_env_steps_sampled_lifetime", 0))
            sampled = float(result.get("env_runners", {}).get("num_env_steps_sampled", 0))
            report = IterationReport(
                iteration=it, env_steps=env_steps,
                steps_per_s=sampled / max(1e-9, float(result.get("time_this_iter_s", 1.0))),
                return_mean=metric(result, "episode_return_mean"),
                collision_rate=metric(result, "convoy/collision_rate"),
                false_brake_rate=metric(result, "convoy/false_brake_rate"),
                elapsed_s=elapsed, lr=learner_stat(result, "default_optimizer_learning_rate"),
                imitation_loss=learner_stat(result, IMITATION_LOSS),
                sample_s=timer(result, "env_runner_sampling_timer"),
                learn_s=timer(result, "learner_update_timer"),
                # the runners got the weights for the step count before this iteration
                reward_weights=scheduled_weights(reward_schedule, env_steps - int(sampled))
                if reward_schedule else None)
            with progress.open("a") as f:
                f.write(json.dumps(asdict(report)) + "\n")
            tracker.iteration(asdict(report))
            if on_iteration:
                on_iteration(report)
            log.info("iter %d convoy/collision_rate=%s convoy/false_brake_rate=%s return=%s",
                     it, report.collision_rate, report.false_brake_rate, report.return_mean)
            done = (settings.iterations is not None and it >= settings.iterations) or (
                budget_s is not None and elapsed >= budget_s)
            validate = settings.validation_suite is not None and (
                done or elapsed >= next_validation)
            if done or validate or it - last_ckpt >= settings.checkpoint_every:
                folder = save_checkpoint(algo, store, it, manifest, report)
                last_ckpt = it
                if validate:
                    entry = validate_checkpoint(settings, store, folder, it, manifest,
                                                env_config, replays)
                    tracker.validation(entry)
                    if on_validation:
                        on_validation(entry)
                    next_validation = time.monotonic() - started + every_s
            if done:
                break
    finally:
        try:
            if algo is not None:
                algo.stop()
        finally:  # a failed run must not leave Ray up for the next `ray.init` in this process
            if started_ray:
                ray.shutdown()

    learning_curve(progress, store.local / "learning_curve.png", manifest.get("validations"))
    if settings.final_eval:
        ckpt = selected_checkpoint(store.local, manifest)
        manifest["final_eval"] = final_eval(settings, store, ckpt, env_config, manifest)
        tracker.final_eval(manifest["final_eval"])
        if replays:
            manifest["final_replay"] = final_replay(store, ckpt, replays)
        manifest["final_gating"] = final_gating(store, ckpt, env_config.brake_threshold)
    manifest["status"] = "finished"
    manifest["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    run_manifest.save(manifest, store.local)
    tracker.finish(manifest, selected_checkpoint(store.local, manifest) / "policy.pt")
    store.sync()
    manifest["storage"] = store.where
    return manifest


def _targets(settings: TrainSettings, env_config: Any) -> dict[str, Any]:
    """What the warm start and the imitation term imitate (`warm_start.imitation_targets`)."""
    return {"no_brake_mean": CONVOY_MODEL["init_action_mean"],
            "brake_threshold": env_config.brake_threshold, "brake": settings.warm_start_brake,
            "brake_gain": settings.warm_start_brake_gain,
            "brake_cap": settings.warm_start_brake_cap,
            "urgent_mps2": env_config.urgent_warning_mps2,
            "max_brake_mps2": env_config.max_brake_mps2}


def _demonstrations(settings: TrainSettings, dataset: str, env_config: Any,
                    manifest: dict) -> Any:
    """The warm start's baseline demonstrations, from one env in this process (seed recorded;
    a resumed run makes the same ones again from its record). An episode whose SUMO dies is
    dropped and recorded in the manifest (`dropped_episodes`)."""
    if "warm_start" in manifest:
        seed = int(manifest["warm_start"]["seed"])
    else:
        seed = worker_seed(settings.seed, purpose="warm_start")
        manifest["warm_start"] = {"baseline": settings.warm_start, "seed": seed}
    config = driver_env_config(env_config)
    with EpisodeRunner(lambda: ConvoyEnv(dataset, config), "warm_start",
                       on_drop=recorder(manifest), context={"policy": settings.warm_start}
                       ) as runner:
        demo = demonstrations(runner, settings.warm_start, settings.warm_start_steps, seed)
    if settings.gating_counterexamples:
        demo = with_gating_counterexamples(demo, decel_mps2=env_config.hazard_msg_decel_mps2,
                                           seed=seed)
    return demo


def forget_after(manifest: dict, iteration: int) -> None:
    """Drop the records of iterations after the checkpoint a resume starts from: they are
    redone. A kill while a checkpoint uploads can leave the manifest ahead of the last whole
    checkpoint (seen once: iteration 3 recorded twice)."""
    manifest["evaluations"] = [e for e in manifest.get("evaluations", [])
                               if e["iteration"] <= iteration]
    if "validations" in manifest:
        kept = [v for v in manifest["validations"] if v["iteration"] <= iteration]
        manifest["validations"] = kept
        if kept:
            manifest["selected_checkpoint"] = best_validation(kept)["checkpoint"]
        else:
            manifest.pop("selected_checkpoint", None)


def save_checkpoint(algo: Any, store: Storage, it: int, manifest: dict,
                    report: IterationReport) -> Path:
    """Checkpoint atomically: write to a temp name, add policy.pt, mark DONE, then rename.
    The manifest's seed records keep those of runners that died since the last checkpoint."""
    folder = store.local / CHECKPOINTS / f"iter_{it:06d}"
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    algo.save_to_path(str(tmp.resolve()))
    save_policy(algo.get_module(), tmp / "policy.pt")
    (tmp / "DONE").write_text(str(it))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    manifest["evaluations"].append({
        "iteration": it, "env_steps": report.env_steps,
        "collision_rate": report.collision_rate, "false_brake_rate": report.false_brake_rate,
        "return_mean": report.return_mean, "checkpoint": folder.name})
    try:
        manifest["seeds"] = {"workers": merge_seed_records(
            manifest.get("seeds", {}).get("workers", []), collect_seed_records(algo))}
    except Exception as exc:  # a restarted runner may not answer; keep the earlier record
        log.warning("could not collect seed records: %s", exc)
    run_manifest.save(manifest, store.local)
    store.sync()
    return folder
