"""The training run behind `roadsense train`: local Ray (or a cluster), PPO with Deep Sets on
ConvoyEnv, checkpoints and a run manifest in local or S3 storage, resume, final evaluation.

`train(settings)` prepares a run (its settings checked, the dataset, the env config, a new or
resumed run folder and manifest) and hands it to the trainer loop (`roadsense.rllib.trainer`).
The run's lifecycle lives in one module each: `settings` (`TrainSettings`), `run_storage` (the
run folder, local or S3), `trainer` (Ray, the algorithm, the loop, checkpoints), `validation`
(validation and checkpoint selection) and `reporting` (iteration reports, final evaluation,
learning curve). The names other code uses are importable from here too.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from roadsense import run_manifest
from roadsense.comms import params_version
from roadsense.data import ScenarioManager, ensure_dataset, load_suite
from roadsense.envs import EnvConfig
from roadsense.rllib.reporting import IterationReport
from roadsense.rllib.run_storage import CHECKPOINTS, Storage, latest_run, mirror_root
from roadsense.rllib.settings import (
    DEFAULT_RECORDINGS,
    EXPECTED_STEPS_PER_S_PER_RUNNER,
    EXPECTED_STEPS_PER_S_PER_RUNNER_RLLIB_LOOP,
    LR_DECAY_MINUTES,
    REPLAY_WEIGHT,
    TrainSettings,
)
from roadsense.rllib.sizing import default_env_runners
from roadsense.rllib.trainer import algorithm_config, driver_env_config, run
from roadsense.rllib.validation import VALIDATIONS, selected_checkpoint, validation_score
from roadsense.tracking import RunTracker

__all__ = [
    "CHECKPOINTS",
    "DEFAULT_RECORDINGS",
    "EXPECTED_STEPS_PER_S_PER_RUNNER",
    "EXPECTED_STEPS_PER_S_PER_RUNNER_RLLIB_LOOP",
    "LR_DECAY_MINUTES",
    "REPLAY_WEIGHT",
    "VALIDATIONS",
    "IterationReport",
    "Storage",
    "TrainSettings",
    "algorithm_config",
    "driver_env_config",
    "latest_run",
    "mirror_root",
    "selected_checkpoint",
    "train",
    "validation_score",
]

log = logging.getLogger(__name__)


def train(settings: TrainSettings,
          on_iteration: Callable[[IterationReport], None] | None = None,
          on_validation: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Run training to its budget; returns the final run manifest. `on_validation` gets each
    validation's manifest entry."""
    settings.validate()

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
        return run(settings, store, manifest, dataset, env_config, runners, resumed, tracker,
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


def _suite_info(name: str) -> dict[str, str] | None:
    suite = load_suite(name)
    return {"name": suite.name, "version": suite.version}
