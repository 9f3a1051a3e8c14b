"""The training run behind `roadsense train`: local Ray (or a cluster), PPO with Deep Sets on
ConvoyEnv, checkpoints and a run manifest in local or S3 storage, resume, final evaluation.

Storage layout (a local folder or `s3://bucket/prefix`)::

    <storage>/<run_id>/run_manifest.json
    <storage>/<run_id>/checkpoints/iter_000010/...   RLlib checkpoint + policy.pt (plain torch)
    <storage>/<run_id>/eval/report.md, metrics.parquet, *.png
    <storage>/<run_id>/learning_curve.png, progress.jsonl
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from roadsense import run_manifest
from roadsense.errors import ConfigError
from roadsense.seeding import worker_seed

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
CURVE_WINDOW = 20
"""Iterations averaged per point of the learning curve."""
EXPECTED_STEPS_PER_S_PER_RUNNER = 1000
"""Training env steps/s per runner, learner updates included (4 envs per runner, 2-core
laptop, lean loop: an hour-long run made 7.4 M steps with 2 runners, i.e. ~1,030); only used
to size the schedules of a timed run. Until 2026-11-26 it was 700, RLlib's loop's rate, so with
the lean loop the decay ended after ~10 minutes instead of `LR_DECAY_MINUTES`."""
EXPECTED_STEPS_PER_S_PER_RUNNER_RLLIB_LOOP = 700
"""The same with RLlib's own sampling loop (``lean_sampling=False``)."""
LR_DECAY_MINUTES = 15.0
"""By default the learning rate reaches `lr_final` after this much training (or at the end of
a shorter run) and stays there, so most of an hour's checkpoints come from a slowly moving
policy. Why: with the decay spread over the hour, checkpoints 6 minutes apart swung between 0
and 4 validation collisions in 153 and 2-13% false braking. Not yet shown better: single runs
of either schedule differ more between themselves than the schedules do (measured, README)."""


@dataclass
class TrainSettings:
    """Everything `roadsense train` takes (one field per flag)."""

    dataset_dir: str | None = None
    """Training dataset (folder or s3://); None: the built-in default, generated on first use."""
    eval_suite: str = "standard-v1"
    """Suite of the final evaluation (also run: no-hazard-v1, for false braking)."""
    seed: int = 0
    emulator_params: str | None = None
    storage: str = "runs"
    """Local folder or s3://bucket/prefix for checkpoints, manifest and report."""
    num_env_runners: int | None = None
    """None: one per core, or on a cluster one per CPU it can offer
    (`roadsense.rllib.sizing`). 0: everything in this process (debug)."""
    num_envs_per_env_runner: int = 4
    """The first on libsumo, the others on traci: one batched forward pass for all (RLlib's
    per-step cost dominates: 4 envs gave 1.4x the steps/s of 1)."""
    budget_minutes: float | None = 10.0
    iterations: int | None = None
    checkpoint_every: int = 5
    resume: bool = False
    address: str | None = None
    """Join an existing Ray cluster ("auto" on a cluster node) instead of starting one."""
    train_batch_size: int = 4000
    minibatch_size: int = 256
    num_epochs: int = 10
    lr: float = 3e-4
    lr_final: float | None = 3e-5
    """Learning rate reached linearly from `lr` and then kept (None: constant `lr`).
    Tried because at a constant rate checkpoints kept swinging between 0-1.3% collisions and
    2.6-6.4% false braking on the test suites; with the decay they still swing (1.9-13.5%
    false braking on validation-v1 over an hour, measured), so the checkpoint selection on
    `validation_suite` does most of the work."""
    lr_decay_steps: int | None = None
    """Env steps over which `lr` falls to `lr_final`; None: the run's expected length
    (`iterations` x batch, or the budget at `EXPECTED_STEPS_PER_S_PER_RUNNER`), at most
    `LR_DECAY_MINUTES` of training at that rate."""
    validation_suite: str | None = "validation-v2"
    """Evaluated every `validate_every_minutes` and at the end (the time counts against the
    budget); the final evaluation uses the checkpoint that scored best on it. None: the last
    checkpoint. `validation-v2` is on `val-v1`, scenarios drawn like the test ones and neither
    trained nor tested on, so its false braking estimates the test suite's: on 26 checkpoints
    of one hour-long run it counted 2-6 of 78 calm episodes where `no-hazard-v1` counted 2-9,
    while `validation-v1` (training scenarios, the default before 2026-11-26) counted 0-2 of
    52 at that run's 10 validations. Per checkpoint the two counts hardly agree (single brake
    blips on different roads): selection cannot separate checkpoints one false brake apart."""
    validate_every_minutes: float = 6.0
    entropy_coeff: float = 0.0
    false_brake_start: float | None = None
    """Weight of the false-braking penalty at the start; it stays there for the first 40% of
    the learning-rate decay (`lr_decay_steps`) and rises linearly to the env's weight
    (`RewardWeights.false_brake`, 3.0) at 80% of it (None: the env's weight throughout).
    Tried at 1.0 against the "never brake" collapse of seed 3 (README, learning bar): it did
    not prevent it (no braking on hazard messages after 12 minutes, as before), so it is off
    by default."""
    lean_sampling: bool = True
    """Env runners sample with `LeanEnvRunner`: RLlib's episode bookkeeping without its per-step
    connector pipelines, the policy's forward pass in numpy (1.6x RLlib's sampling steps/s with
    4 envs per runner, 4.5x with one, benchmarks/training.py on 2026-11-26).
    False: RLlib's own loop (the learning bar runs before 2026-11-26 04:10 used it)."""
    warm_start: str | None = "v2v_rule"
    """Start PPO from an imitation of this baseline (`roadsense.rllib.warm_start`), fitted on
    `warm_start_steps` steps of it on the training dataset before the first iteration (the
    time counts against the budget); None: from the module's initial policy. Why: from
    scratch, whether a run learned to brake on warnings depended on its first minute (one seed
    in four never did, README, learning bar)."""
    warm_start_steps: int = 40_000
    warm_start_brake: float | None = 1.0
    """Brake level the imitation fits on the baseline's braking steps in hazard episodes (None:
    the baseline's own, 0.8 for `v2v_rule`); its brakes in calm episodes are fitted as "no
    brake" (`roadsense.rllib.warm_start.imitation_targets`). Full brake, because the returns
    favour it: `v2v_rule` braking at 1.0 instead of 0.8 on the same 1,300 training episodes
    (hazards drawn as in training) returned 0.21 against 0.11 per episode (1 collision each),
    and on the 240 with a single peer 2.00 against 1.43 (0 collisions against 1); and a
    single peer's hard-braking report is where an imitation fitted to 0.8 (0.73 there)
    collided on the test suite and the rule did not (2026-11-26)."""
    imitation_weight: float = 1.0
    """Weight of the imitation term added to PPO's loss for the whole run, on the warm start's
    demonstrations (`roadsense.rllib.learner`); 0, or no `warm_start`: plain PPO."""
    env_overrides: dict[str, Any] = field(default_factory=dict)
    """EnvConfig fields to override (e.g. {"episode_s": 20.0})."""
    final_eval: bool = True
    eval_no_hazard_suite: str | None = "no-hazard-v1"
    dataset_root: str = "datasets"

    def decay_steps(self, runners: int) -> int:
        """Env steps of the learning-rate decay: `lr_decay_steps`, or the run's expected
        length (`iterations` x batch, or the budget at the expected rate), at most
        `LR_DECAY_MINUTES` of training."""
        if self.lr_decay_steps is not None:
            return int(self.lr_decay_steps)
        per_s = (EXPECTED_STEPS_PER_S_PER_RUNNER if self.lean_sampling
                 else EXPECTED_STEPS_PER_S_PER_RUNNER_RLLIB_LOOP)
        rate = 60 * per_s * max(1, runners)  # steps per minute
        expected = [int(LR_DECAY_MINUTES * rate)]
        if self.iterations is not None:
            expected.append(self.iterations * self.train_batch_size)
        if self.budget_minutes is not None:
            expected.append(int(self.budget_minutes * rate))
        return min(expected)

    def lr_schedule(self, runners: int) -> float | list[list[float]]:
        """RLlib's `lr`: a constant, or [[0, lr], [decay steps, lr_final]] (linear)."""
        if self.lr_final is None:
            return self.lr
        return [[0, self.lr], [self.decay_steps(runners), self.lr_final]]

    def reward_schedule(self, runners: int, false_brake: float
                        ) -> dict[str, list[list[float]]] | None:
        """The env runners' reward schedule (see `false_brake_start`); `false_brake` is the
        env's weight, reached at 80% of the learning-rate decay."""
        if self.false_brake_start is None or self.false_brake_start == false_brake:
            return None
        steps = self.decay_steps(runners)
        return {"false_brake": [[0, self.false_brake_start],
                                [int(0.4 * steps), self.false_brake_start],
                                [int(0.8 * steps), false_brake]]}

    def validate(self) -> None:
        problems = []
        if self.budget_minutes is None and self.iterations is None:
            problems.append("give --budget-minutes or --iterations (or both)")
        if self.budget_minutes is not None and self.budget_minutes <= 0:
            problems.append(f"--budget-minutes must be > 0, got {self.budget_minutes}")
        if self.iterations is not None and self.iterations <= 0:
            problems.append(f"--iterations must be > 0, got {self.iterations}")
        if self.num_env_runners is not None and self.num_env_runners < 0:
            problems.append(f"--num-env-runners must be >= 0, got {self.num_env_runners}")
        if self.checkpoint_every < 1:
            problems.append("--checkpoint-every must be >= 1")
        if self.lr <= 0 or (self.lr_final is not None and self.lr_final <= 0):
            problems.append("--lr and --lr-final must be > 0")
        if self.false_brake_start is not None and self.false_brake_start < 0:
            problems.append(f"--false-brake-start must be >= 0, got {self.false_brake_start}")
        if self.lr_decay_steps is not None and self.lr_decay_steps < 1:
            problems.append(f"--lr-decay-steps must be >= 1, got {self.lr_decay_steps}")
        if self.validate_every_minutes <= 0:
            problems.append("--validate-every-minutes must be > 0")
        from roadsense.envs.baselines import BASELINES

        if self.warm_start is not None and self.warm_start not in BASELINES:
            problems.append(f"--warm-start {self.warm_start!r} is not a baseline; one of "
                            f"{sorted(BASELINES)} or none")
        if self.warm_start_steps < 1:
            problems.append(f"--warm-start-steps must be >= 1, got {self.warm_start_steps}")
        if self.warm_start_brake is not None and not 0.05 < self.warm_start_brake <= 1.0:
            problems.append(f"--warm-start-brake must be in (0.05, 1] (above the brake "
                            f"threshold), got {self.warm_start_brake}")
        if not (math.isfinite(self.imitation_weight) and self.imitation_weight >= 0):
            problems.append(f"--imitation-weight must be >= 0, got {self.imitation_weight}")
        if problems:
            raise ConfigError("; ".join(problems), fix="see `roadsense train --help`")
        if self.validation_suite:  # a bad name fails now, not at the first validation
            from roadsense.data import load_suite

            load_suite(self.validation_suite)


@dataclass
class IterationReport:
    iteration: int
    env_steps: int
    steps_per_s: float
    return_mean: float | None
    collision_rate: float | None
    false_brake_rate: float | None
    elapsed_s: float
    lr: float | None = None
    reward_weights: dict[str, float] | None = None
    """Scheduled reward weights of the iteration's sampling (None: no schedule)."""
    imitation_loss: float | None = None
    """The imitation term's mean squared error (unweighted) at the iteration's last update."""


def _metric(result: dict, key: str) -> float | None:
    v = result.get("env_runners", {}).get(key)
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def _learner_stat(result: dict, key: str) -> float | None:
    for stats in (result.get("learners") or {}).values():
        if isinstance(stats, dict) and key in stats:
            return float(stats[key])
    return None


class Storage:
    """A run folder: local, or a local mirror synced to S3 after every write."""

    def __init__(self, root: str, run_id: str) -> None:
        from roadsense.data.storage import is_s3_uri

        self.remote = f"{root.rstrip('/')}/{run_id}" if is_s3_uri(root) else None
        if self.remote:
            self.local = mirror_root() / run_id
        else:
            self.local = Path(root) / run_id
        self.local.mkdir(parents=True, exist_ok=True)

    def sync(self) -> None:
        if self.remote:
            from roadsense.data.storage import upload_dir

            upload_dir(self.local, self.remote)

    @property
    def where(self) -> str:
        return self.remote or str(self.local)


def mirror_root() -> Path:
    """Local mirror of runs kept on S3 (under $ROADSENSE_CACHE, default ~/.cache/roadsense)."""
    from roadsense.sim.scenario import cache_root

    return cache_root() / "runs"


def latest_run(root: str) -> tuple[str, Path] | None:
    """(run_id, local folder) of the newest run with a checkpoint under `root` (S3: pulled)."""
    from roadsense.data.storage import is_s3_uri

    if is_s3_uri(root):
        from roadsense.data.storage import download_dir, list_prefixes

        runs = sorted(list_prefixes(root))
        for run_id in reversed(runs):
            local = mirror_root() / run_id
            download_dir(f"{root.rstrip('/')}/{run_id}", local)
            if _checkpoints(local):
                return run_id, local
        return None
    base = Path(root)
    if not base.is_dir():
        return None
    for run in sorted((p for p in base.iterdir() if p.is_dir()), reverse=True):
        if _checkpoints(run):
            return run.name, run
    return None


def _checkpoints(run_dir: Path) -> list[Path]:
    folder = run_dir / CHECKPOINTS
    return sorted(p for p in folder.glob("iter_*") if (p / "DONE").is_file()) \
        if folder.is_dir() else []


def algorithm_config(settings: TrainSettings, dataset: str, env_config: Any,
                     runners: int) -> Any:
    """The PPO config of a run from its settings: the one builder behind `roadsense train`, Tune
    trials (`roadsense.cloud.sweep`) and SageMaker jobs, so that a sweep tunes Phase 1's trainer
    (its dataset, schedules, lean sampling, the imitation learner) and not a bare config.
    `env_config` is the run's `EnvConfig`; `runners` the resolved number of env runners."""
    from rllib_configs.ppo_convoy import CONVOY_MODEL, build_config

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


def train(settings: TrainSettings,
          on_iteration: Callable[[IterationReport], None] | None = None,
          on_validation: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Run training to its budget; returns the final run manifest. `on_validation` gets each
    validation's manifest entry."""
    settings.validate()
    import ray

    from rllib_configs.ppo_convoy import CONVOY_MODEL
    from roadsense.data import ensure_dataset
    from roadsense.envs import EnvConfig
    from roadsense.eval.policies import save_policy
    from roadsense.rllib import collect_seed_records
    from roadsense.rllib.env_runner import scheduled_weights
    from roadsense.rllib.learner import IMITATION_LOSS
    from roadsense.rllib.sizing import default_env_runners
    from roadsense.rllib.warm_start import keep_imitating, warm_start

    resumed = latest_run(settings.storage) if settings.resume else None
    if settings.resume and resumed is None:
        # A spot job's first start passes --resume too (SageMaker restarts the same command).
        log.warning("--resume: no run with a checkpoint under %s; starting a new run",
                    settings.storage)
    dataset = settings.dataset_dir or str(ensure_dataset(root=Path(settings.dataset_root)))
    env_config = EnvConfig.from_dict({"emulator_params": settings.emulator_params,
                                      **settings.env_overrides})
    cpus = os.cpu_count() or 2
    runners = (default_env_runners(settings.address) if settings.num_env_runners is None
               else settings.num_env_runners)

    if resumed:
        run_id, local = resumed
        manifest = run_manifest.load(local)
        manifest["status"] = "running"
        manifest.setdefault("resumed", []).append(time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                time.gmtime()))
    else:
        from roadsense.data import ScenarioManager

        mgr = ScenarioManager.from_dataset(dataset)
        manifest = run_manifest.new_manifest(
            kind="train", seed=settings.seed, config=asdict(settings) | {
                "env": env_config.as_dict(), "num_env_runners_resolved": runners},
            dataset_manifest_hash=mgr.manifest_hash,
            eval_suite=_suite_info(settings.eval_suite))
        run_id = manifest["run_id"]
    store = Storage(settings.storage, run_id)
    if resumed and store.local != resumed[1]:
        shutil.copytree(resumed[1], store.local, dirs_exist_ok=True)
    run_manifest.save(manifest, store.local)
    store.sync()

    ray_tmp = Path(tempfile.gettempdir()) / "roadsense-ray"
    started_ray = False
    if not ray.is_initialized():
        if settings.address:
            ray.init(address=settings.address, log_to_driver=False)
        else:
            # Token auth stays on, with a per-run token in the environment (inherited by the
            # workers) instead of one written to ~/.ray/auth_token.
            os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
            ray.init(num_cpus=max(cpus, runners), include_dashboard=False,
                     log_to_driver=False, _temp_dir=str(ray_tmp),
                     runtime_env={"env_vars": {"PYTHONPATH": _project_root()}})
        started_ray = True
    reward_schedule = settings.reward_schedule(runners, env_config.reward.false_brake)
    warm_started = time.monotonic()
    demo = None
    if settings.warm_start and (not resumed or settings.imitation_weight > 0):
        # before the env runners exist: this process's libsumo is free
        demo = _demonstrations(settings, dataset, env_config, manifest)
    algo = None
    try:
        algo = algorithm_config(settings, dataset, env_config, runners).build_algo()
        if resumed:
            ckpt = _checkpoints(store.local)[-1]
            algo.restore_from_path(str(ckpt))
            _forget_after(manifest, int((ckpt / "DONE").read_text()))
            log.info("resumed %s from %s", run_id, ckpt.name)
        elif demo is not None:
            fitted = warm_start(algo, demo, no_brake_mean=CONVOY_MODEL["init_action_mean"],
                                brake_threshold=env_config.brake_threshold,
                                brake=settings.warm_start_brake,
                                seed=manifest["warm_start"]["seed"])
            manifest["warm_start"].update(fitted.as_dict(),
                                          seconds=time.monotonic() - warm_started)
            run_manifest.save(manifest, store.local)
            log.info("warm start from %s: %s", settings.warm_start, fitted)
        if demo is not None and settings.imitation_weight > 0:
            keep_imitating(algo, demo, weight=settings.imitation_weight,
                           no_brake_mean=CONVOY_MODEL["init_action_mean"],
                           brake_threshold=env_config.brake_threshold,
                           brake=settings.warm_start_brake, seed=manifest["warm_start"]["seed"])
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
                return_mean=_metric(result, "episode_return_mean"),
                collision_rate=_metric(result, "convoy/collision_rate"),
                false_brake_rate=_metric(result, "convoy/false_brake_rate"),
                elapsed_s=elapsed, lr=_learner_stat(result, "default_optimizer_learning_rate"),
                imitation_loss=_learner_stat(result, IMITATION_LOSS),
                # the runners got the weights for the step count before this iteration
                reward_weights=scheduled_weights(reward_schedule, env_steps - int(sampled))
                if reward_schedule else None)
            with progress.open("a") as f:
                f.write(json.dumps(asdict(report)) + "\n")
            if on_iteration:
                on_iteration(report)
            log.info("iter %d convoy/collision_rate=%s convoy/false_brake_rate=%s return=%s",
                     it, report.collision_rate, report.false_brake_rate, report.return_mean)
            done = (settings.iterations is not None and it >= settings.iterations) or (
                budget_s is not None and elapsed >= budget_s)
            validate = settings.validation_suite is not None and (
                done or elapsed >= next_validation)
            if done or validate or it - last_ckpt >= settings.checkpoint_every:
                folder = _checkpoint(algo, store, it, manifest, report, save_policy,
                                     collect_seed_records)
                last_ckpt = it
                if validate:
                    entry = _validate(settings, store, folder, it, manifest,
                                      debug=runners == 0)
                    if on_validation:
                        on_validation(entry)
                    next_validation = time.monotonic() - started + every_s
            if done:
                break
    finally:
        if algo is not None:
            algo.stop()
        if started_ray:
            ray.shutdown()

    _learning_curve(progress, store.local / "learning_curve.png", manifest.get("validations"))
    if settings.final_eval:
        manifest["final_eval"] = _final_eval(settings, store, selected_checkpoint(store.local,
                                                                                  manifest))
    manifest["status"] = "finished"
    manifest["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    run_manifest.save(manifest, store.local)
    store.sync()
    manifest["storage"] = store.where
    return manifest


def _demonstrations(settings: TrainSettings, dataset: str, env_config: Any,
                    manifest: dict) -> Any:
    """The warm start's baseline demonstrations, from one in-process env (seed recorded; a
    resumed run makes the same ones again from its record)."""
    from roadsense.envs import ConvoyEnv
    from roadsense.rllib.warm_start import demonstrations

    if "warm_start" in manifest:
        seed = int(manifest["warm_start"]["seed"])
    else:
        seed = worker_seed(settings.seed, purpose="warm_start")
        manifest["warm_start"] = {"baseline": settings.warm_start, "seed": seed}
    env = ConvoyEnv(dataset, env_config.as_dict())
    try:
        return demonstrations(env, settings.warm_start, settings.warm_start_steps, seed)
    finally:
        env.close()


def _best_validation(validations: list[dict]) -> dict:
    """The lowest score; the later checkpoint on a tie."""
    return min(validations, key=lambda v: (v["score"], -v["iteration"]))


def _forget_after(manifest: dict, iteration: int) -> None:
    """Drop the records of iterations after the checkpoint a resume starts from: they are
    redone. A kill while a checkpoint uploads can leave the manifest ahead of the last whole
    checkpoint (seen once: iteration 3 recorded twice)."""
    manifest["evaluations"] = [e for e in manifest.get("evaluations", [])
                               if e["iteration"] <= iteration]
    if "validations" in manifest:
        kept = [v for v in manifest["validations"] if v["iteration"] <= iteration]
        manifest["validations"] = kept
        if kept:
            manifest["selected_checkpoint"] = _best_validation(kept)["checkpoint"]
        else:
            manifest.pop("selected_checkpoint", None)


def _checkpoint(algo: Any, store: Storage, it: int, manifest: dict, report: IterationReport,
                save_policy: Callable, collect_seed_records: Callable) -> Path:
    """Checkpoint atomically: write to a temp name, add policy.pt, mark DONE, then rename."""
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
        manifest["seeds"] = {"workers": collect_seed_records(algo)}
    except Exception as exc:  # a restarted runner may not answer; keep the earlier record
        log.warning("could not collect seed records: %s", exc)
    run_manifest.save(manifest, store.local)
    store.sync()
    return folder


def validation_score(summary: dict[str, Any]) -> float:
    """Lower is better: collision rate (hazard episodes) plus false-braking rate (no-hazard)."""
    return float(summary["collision_rate"] or 0.0) + float(summary["false_brake_rate"] or 0.0)


def _validate(settings: TrainSettings, store: Storage, folder: Path, iteration: int,
              manifest: dict, *, debug: bool) -> dict[str, Any]:
    """Run the validation suite on `folder`'s policy (checkpoint of `iteration`); record it
    in the manifest and pick the best so far (lowest score, the later one on a tie)."""
    from roadsense.eval import load_policy, run_suite, summarize

    started = time.monotonic()
    name, policy = load_policy(str(folder))
    # --debug keeps the training env's libsumo in this process: validate over traci then.
    rows = run_suite(policy, settings.validation_suite, policy_name=name,
                     root=Path(settings.dataset_root),
                     env_config={"sumo_backend": "traci"} if debug else None)
    summary = summarize(rows)[name]
    entry = {"checkpoint": folder.name, "iteration": iteration,
             "suite": settings.validation_suite,
             "collision_rate": summary["collision_rate"],
             "false_brake_rate": summary["false_brake_rate"],
             "score": validation_score(summary),
             "seconds": round(time.monotonic() - started, 1)}
    manifest.setdefault("validations", []).append(entry)
    best = _best_validation(manifest["validations"])
    manifest["selected_checkpoint"] = best["checkpoint"]
    log.info("validation of %s on %s: collisions %.1f%%, false braking %.1f%% (%.0f s); "
             "best so far %s", folder.name, settings.validation_suite,
             100 * (entry["collision_rate"] or 0), 100 * (entry["false_brake_rate"] or 0),
             entry["seconds"], best["checkpoint"])
    run_manifest.save(manifest, store.local)
    store.sync()
    return entry


def selected_checkpoint(run_dir: Path, manifest: dict) -> Path:
    """The checkpoint validation picked, else the newest (no validation suite, or none ran)."""
    chosen = manifest.get("selected_checkpoint")
    if chosen and (run_dir / CHECKPOINTS / chosen / "DONE").is_file():
        return run_dir / CHECKPOINTS / chosen
    return _checkpoints(run_dir)[-1]


def _final_eval(settings: TrainSettings, store: Storage, ckpt: Path) -> dict[str, Any]:
    from roadsense.eval import load_policy, run_suite, summarize, write_report

    suites = [settings.eval_suite] + ([settings.eval_no_hazard_suite]
                                      if settings.eval_no_hazard_suite else [])
    rows = []
    for spec in (str(ckpt), "no_assist", "v2v_rule"):
        name, policy = load_policy(spec)
        for suite in suites:
            rows += run_suite(policy, suite, policy_name=name,
                              root=Path(settings.dataset_root))
    write_report(rows, store.local / "eval", title=f"Evaluation of {ckpt.name}",
                 meta={"checkpoint": ckpt.name, "suites": ", ".join(suites)})
    return summarize(rows)


def _learning_curve(progress: Path, out: Path, validations: list[dict] | None = None) -> None:
    """Training return and rates (mean over `CURVE_WINDOW` iterations: one iteration holds
    only ~16 episodes) against env steps, with each validation of a checkpoint on top."""
    if not progress.is_file():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [json.loads(ln) for ln in progress.read_text().splitlines() if ln.strip()]
    if not rows:
        return

    def smooth(key: str) -> np.ndarray:
        v = np.array([np.nan if r[key] is None else r[key] for r in rows], float)
        k = min(CURVE_WINDOW, len(v))
        filled = np.nan_to_num(v)
        counts = np.convolve(~np.isnan(v), np.ones(k), "same")
        return np.convolve(filled, np.ones(k), "same") / np.maximum(counts, 1)

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    x = [r["env_steps"] for r in rows]
    a.plot(x, smooth("return_mean"))
    a.set_xlabel("env steps")
    a.set_ylabel(f"episode return (mean of {CURVE_WINDOW} iterations)")
    b.plot(x, smooth("collision_rate"), label="collision rate (training)", color="C3")
    b.plot(x, smooth("false_brake_rate"), label="false braking (training)", color="C1")
    steps_at = {r["iteration"]: r["env_steps"] for r in rows}
    done = [(steps_at.get(v["iteration"]), v) for v in validations or []]
    done = [(s, v) for s, v in done if s is not None]
    if done:
        vx = [s for s, _ in done]
        b.plot(vx, [v["collision_rate"] or 0 for _, v in done], "o--", color="C3",
               label=f"collision rate ({done[0][1]['suite']})")
        b.plot(vx, [v["false_brake_rate"] or 0 for _, v in done], "s--", color="C1",
               label=f"false braking ({done[0][1]['suite']})")
    b.set_xlabel("env steps")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _suite_info(name: str) -> dict[str, str] | None:
    from roadsense.data import load_suite

    suite = load_suite(name)
    return {"name": suite.name, "version": suite.version}


def _project_root() -> str:
    """So env runner processes import `rllib_configs` and `roadsense` from this checkout."""
    return str(Path(__file__).resolve().parents[2])
