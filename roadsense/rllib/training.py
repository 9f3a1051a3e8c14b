"""The training run behind `roadsense train`: local Ray (or a cluster), PPO with Deep Sets on
ConvoyEnv, checkpoints and a run manifest in local or S3 storage, resume, final evaluation.

Storage layout (a local folder or `s3://bucket/prefix`)::

    <storage>/<run_id>/run_manifest.json
    <storage>/<run_id>/checkpoints/iter_000010/...   RLlib checkpoint + policy.pt (plain torch)
    <storage>/<run_id>/validations/iter_000010.jsonl     the validation's rows, one per episode
    <storage>/<run_id>/eval/report.md, metrics.parquet, *.png
    <storage>/<run_id>/learning_curve.png, progress.jsonl
    <storage>/<run_id>/tensorboard/events.out.tfevents.*   (roadsense.tracking)
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from roadsense import run_manifest
from roadsense.rllib.settings import (  # noqa: F401  (re-exported: tests, cloud code)
    DEFAULT_RECORDINGS,
    EXPECTED_STEPS_PER_S_PER_RUNNER,
    EXPECTED_STEPS_PER_S_PER_RUNNER_RLLIB_LOOP,
    LR_DECAY_MINUTES,
    REPLAY_WEIGHT,
    TrainSettings,
)
from roadsense.seeding import worker_seed

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
VALIDATIONS = "validations"
"""Folder of each validation's per-episode rows (`<checkpoint>.jsonl`)."""
CURVE_WINDOW = 20
"""Iterations averaged per point of the learning curve."""
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
    from roadsense.rllib.ppo import CONVOY_MODEL, build_config

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
    from roadsense.comms import params_version
    from roadsense.data import ensure_dataset
    from roadsense.envs import EnvConfig
    from roadsense.rllib.sizing import default_env_runners
    from roadsense.tracking import RunTracker

    resumed = latest_run(settings.storage) if settings.resume else None
    if settings.resume and resumed is None:
        # A spot job's first start passes --resume too (SageMaker restarts the same command).
        log.warning("--resume: no run with a checkpoint under %s; starting a new run",
                    settings.storage)
    dataset = settings.dataset_dir or str(ensure_dataset(root=Path(settings.dataset_root)))
    env_config = EnvConfig.from_dict({"emulator_params": settings.emulator_params,
                                      **settings.env_overrides})
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
            eval_suite=_suite_info(settings.eval_suite),
            emulator_params_version=params_version(settings.emulator_params))
        manifest["env_overrides"] = dict(settings.env_overrides)
        manifest["emulator_params"] = settings.emulator_params
        run_id = manifest["run_id"]
    store = Storage(settings.storage, run_id)
    if resumed and store.local != resumed[1]:
        shutil.copytree(resumed[1], store.local, dirs_exist_ok=True)
    tracker = RunTracker(store.local, manifest, asdict(settings), settings.mlflow_uri)
    run_manifest.save(manifest, store.local)
    store.sync()
    try:
        return _run(settings, store, manifest, dataset, env_config, runners, resumed, tracker,
                    on_iteration, on_validation)
    except BaseException as exc:  # including KeyboardInterrupt: the manifest says why
        manifest["status"] = "failed"
        manifest["failure"] = f"{type(exc).__name__}: {exc}"
        manifest["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            run_manifest.save(manifest, store.local)
            store.sync()
        except Exception:  # the original error matters more than a failed upload
            log.exception("could not record the failure of run %s", manifest["run_id"])
        log.error("run %s failed: %s", manifest["run_id"], manifest["failure"])
        raise


def _run(settings: TrainSettings, store: Storage, manifest: dict, dataset: str, env_config: Any,
         runners: int, resumed: tuple[str, Path] | None, tracker: Any,
         on_iteration: Callable[[IterationReport], None] | None,
         on_validation: Callable[[dict], None] | None) -> dict[str, Any]:
    """`train` from Ray's start on; Ray (when started here) is shut down whatever happens."""
    import ray

    from roadsense.eval.policies import save_policy
    from roadsense.rllib.env_runner import collect_seed_records, scheduled_weights
    from roadsense.rllib.learner import IMITATION_LOSS
    from roadsense.rllib.ppo import CONVOY_MODEL
    from roadsense.rllib.warm_start import keep_imitating, warm_start

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
        replays = _replay_inputs(settings)
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
            ckpt = _checkpoints(store.local)[-1]
            algo.restore_from_path(str(ckpt))
            _forget_after(manifest, int((ckpt / "DONE").read_text()))
            log.info("resumed %s from %s", manifest["run_id"], ckpt.name)
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
                folder = _checkpoint(algo, store, it, manifest, report, save_policy,
                                     collect_seed_records)
                last_ckpt = it
                if validate:
                    entry = _validate(settings, store, folder, it, manifest, env_config,
                                      replays)
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

    _learning_curve(progress, store.local / "learning_curve.png", manifest.get("validations"))
    if settings.final_eval:
        ckpt = selected_checkpoint(store.local, manifest)
        manifest["final_eval"] = _final_eval(settings, store, ckpt, env_config, manifest)
        tracker.final_eval(manifest["final_eval"])
        if replays:
            manifest["final_replay"] = _final_replay(store, ckpt, replays)
    manifest["status"] = "finished"
    manifest["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    run_manifest.save(manifest, store.local)
    tracker.finish(manifest, selected_checkpoint(store.local, manifest) / "policy.pt")
    store.sync()
    manifest["storage"] = store.where
    return manifest


def _demonstrations(settings: TrainSettings, dataset: str, env_config: Any,
                    manifest: dict) -> Any:
    """The warm start's baseline demonstrations, from one env in this process (seed recorded;
    a resumed run makes the same ones again from its record). An episode whose SUMO dies is
    dropped and recorded in the manifest (`dropped_episodes`)."""
    from roadsense.envs import ConvoyEnv
    from roadsense.envs.episodes import EpisodeRunner
    from roadsense.rllib.warm_start import demonstrations

    if "warm_start" in manifest:
        seed = int(manifest["warm_start"]["seed"])
    else:
        seed = worker_seed(settings.seed, purpose="warm_start")
        manifest["warm_start"] = {"baseline": settings.warm_start, "seed": seed}
    config = driver_env_config(env_config)
    with EpisodeRunner(lambda: ConvoyEnv(dataset, config), "warm_start",
                       on_drop=_recorder(manifest), context={"policy": settings.warm_start}
                       ) as runner:
        return demonstrations(runner, settings.warm_start, settings.warm_start_steps, seed)


def driver_env_config(env_config: Any) -> dict[str, Any]:
    """The env config of the envs this process runs itself (warm start, validation, final
    evaluation): training's, on the traci backend, so that a SUMO death is a child's death
    (`roadsense.envs.episodes`) and the env runners keep this process's libsumo in debug
    mode."""
    from roadsense.envs.episodes import DRIVER_SUMO_BACKEND

    return {**env_config.as_dict(), "sumo_backend": DRIVER_SUMO_BACKEND}


def _recorder(manifest: dict, **context: Any) -> Callable[[Any], None]:
    """`on_drop` for an `EpisodeRunner`: the dropped episode goes to the manifest's
    `dropped_episodes` (saved at the next save)."""

    def record(dropped: Any) -> None:
        manifest.setdefault("dropped_episodes", []).append(dropped.as_dict() | context)

    return record


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
    """Checkpoint atomically: write to a temp name, add policy.pt, mark DONE, then rename.
    The manifest's seed records keep those of runners that died since the last checkpoint."""
    from roadsense.rllib.env_runner import merge_seed_records

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


def validation_score(summary: dict[str, Any], replay_brake_share: float | None = None,
                     replay_weight: float = REPLAY_WEIGHT) -> float:
    """Lower is better: collision rate (hazard episodes) plus false-braking rate (no-hazard
    episodes) plus `replay_weight` x the share of real-recording rows braking (None: no
    recordings)."""
    return (float(summary["collision_rate"] or 0.0) + float(summary["false_brake_rate"] or 0.0)
            + replay_weight * float(replay_brake_share or 0.0))


def _replay_inputs(settings: TrainSettings) -> list[Any]:
    """The recordings of `settings.replay`, loaded and converted once for the whole run."""
    from roadsense.eval.replay import convert, load_recording

    return [convert(load_recording(p)) for p in settings.recordings()]


def _replay_brake_share(policy: Any, replays: list[Any]) -> float | None:
    """Share of the recordings' rows (all recordings together) where `policy` brakes."""
    from roadsense.eval.replay import metrics, run_policy

    if not replays:
        return None
    rows = sum(inp.recording.rows for inp in replays)
    braking = sum(metrics(run_policy(policy, inp), inp)["brake_share"] * inp.recording.rows
                  for inp in replays)
    return braking / rows


def _validate(settings: TrainSettings, store: Storage, folder: Path, iteration: int,
              manifest: dict, env_config: Any, replays: list[Any]) -> dict[str, Any]:
    """Run the validation suite on `folder`'s policy (checkpoint of `iteration`) with
    training's env config and radio, and replay it on the real recordings; record it in the
    manifest and pick the best so far (lowest score, the later one on a tie)."""
    from roadsense.eval import load_policy, run_suite, summarize

    started = time.monotonic()
    name, policy = load_policy(str(folder))
    before = len(manifest.get("dropped_episodes", []))
    rows = run_suite(policy, settings.validation_suite, policy_name=name,
                     root=Path(settings.dataset_root), env_config=driver_env_config(env_config),
                     place="validation",
                     on_drop=_recorder(manifest, checkpoint=folder.name, iteration=iteration))
    summary = summarize(rows)[name]
    replay_share = _replay_brake_share(policy, replays)
    episodes = store.local / VALIDATIONS / f"{folder.name}.jsonl"  # per episode, for audits
    episodes.parent.mkdir(exist_ok=True)
    episodes.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
    entry = {"checkpoint": folder.name, "iteration": iteration,
             "suite": settings.validation_suite,
             "collision_rate": summary["collision_rate"],
             "false_brake_rate": summary["false_brake_rate"],
             "replay_brake_share": replay_share,
             "score": validation_score(summary, replay_share, settings.replay_weight),
             "episodes": len(rows),
             "dropped_episodes": len(manifest.get("dropped_episodes", [])) - before,
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


def _final_eval(settings: TrainSettings, store: Storage, ckpt: Path, env_config: Any,
                manifest: dict) -> dict[str, Any]:
    """The checkpoint and the baselines on the test suites, with training's env config and
    radio (the report says which); dropped episodes go to the manifest."""
    from roadsense.comms import params_version
    from roadsense.eval import load_policy, run_suite, summarize, write_report

    suites = [settings.eval_suite] + ([settings.eval_no_hazard_suite]
                                      if settings.eval_no_hazard_suite else [])
    config = driver_env_config(env_config)
    rows = []
    for spec in (str(ckpt), "no_assist", "v2v_rule"):
        name, policy = load_policy(spec)
        for suite in suites:
            rows += run_suite(policy, suite, policy_name=name,
                              root=Path(settings.dataset_root), env_config=config,
                              place="final_eval", on_drop=_recorder(manifest, checkpoint=ckpt.name))
    dropped = [d for d in manifest.get("dropped_episodes", []) if d["place"] == "final_eval"]
    write_report(rows, store.local / "eval", title=f"Evaluation of {ckpt.name}",
                 meta={"checkpoint": ckpt.name, "suites": ", ".join(suites),
                       "emulator params": params_version(env_config.emulator_params),
                       "env overrides": json.dumps(settings.env_overrides, sort_keys=True),
                       "episodes dropped (SUMO died)": str(len(dropped))})
    return summarize(rows)


def _final_replay(store: Storage, ckpt: Path, replays: list[Any]) -> dict[str, Any]:
    """The checkpoint and the baselines replayed on the real recordings (`eval/replay.md`);
    per recording and policy, the closed-loop calm-driving figures."""
    from roadsense.eval import load_policy
    from roadsense.eval.replay import replay_report

    summary = replay_report([load_policy(str(ckpt)), "no_assist", "v2v_rule"],
                            [inp.recording for inp in replays], store.local / "eval")
    keep = ("brake_share", "onsets_per_min", "longest_brake_s", "events_braked",
            "stretches_braked")
    return {rec: {name: {k: r["closed_loop"][k] for k in keep}
                  for name, r in body["results"].items()}
            for rec, body in summary["recordings"].items()}


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
