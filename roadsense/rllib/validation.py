"""Validation and checkpoint selection: each validation runs the validation suite, the real
recordings and the gating probe's validation cases on a checkpoint's policy, scores it
(`validation_score`, lower is better) and records the best so far in the manifest;
`selected_checkpoint` is the one the final evaluation uses.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from roadsense import run_manifest
from roadsense.envs.episodes import DRIVER_SUMO_BACKEND
from roadsense.eval import load_policy, run_suite, summarize
from roadsense.eval.gating import VALIDATION_CASES, gating_probe
from roadsense.eval.replay import convert, metrics, run_policy
from roadsense.rllib.run_storage import CHECKPOINTS, Storage, checkpoints
from roadsense.rllib.settings import COLLISION_WEIGHT, GATING_WEIGHT, REPLAY_WEIGHT, TrainSettings

log = logging.getLogger(__name__)


VALIDATIONS = "validations"
"""Folder of each validation's per-episode rows (`<checkpoint>.jsonl`)."""


def validation_score(summary: dict[str, Any], replay_brake_share: float | None = None,
                     replay_weight: float = REPLAY_WEIGHT, gating_failed_share: float = 0.0,
                     gating_weight: float = GATING_WEIGHT,
                     collision_weight: float = COLLISION_WEIGHT) -> float:
    """Lower is better: `collision_weight` x the collision rate (hazard episodes) plus the
    false-braking rate (no-hazard episodes) plus `replay_weight` x the share of real-recording
    rows braking (None: no recordings) plus `gating_weight` x the share of the gating probe's
    validation cases answered unlike a driver."""
    return (collision_weight * float(summary["collision_rate"] or 0.0)
            + float(summary["false_brake_rate"] or 0.0)
            + replay_weight * float(replay_brake_share or 0.0)
            + gating_weight * float(gating_failed_share))


def replay_inputs(settings: TrainSettings) -> list[Any]:
    """The recordings of `settings.replay`, loaded and converted once for the whole run."""
    return [convert(rec) for rec in settings.load_recordings()]


def _replay_brake_share(policy: Any, replays: list[Any]) -> float | None:
    """Share of the recordings' rows (all recordings together) where `policy` brakes."""
    if not replays:
        return None
    rows = sum(inp.recording.rows for inp in replays)
    braking = sum(metrics(run_policy(policy, inp), inp)["brake_share"] * inp.recording.rows
                  for inp in replays)
    return braking / rows


def validate_checkpoint(settings: TrainSettings, store: Storage, folder: Path, iteration: int,
                        manifest: dict, env_config: Any, replays: list[Any]) -> dict[str, Any]:
    """Run the validation suite on `folder`'s policy (checkpoint of `iteration`) with
    training's env config and radio, replay it on the real recordings and ask it the gating
    probe's `VALIDATION_CASES`; record it in the manifest and pick the best so far (lowest
    score, the later one on a tie)."""
    started = time.monotonic()
    name, policy = load_policy(str(folder))
    before = len(manifest.get("dropped_episodes", []))
    rows = run_suite(policy, settings.validation_suite, policy_name=name,
                     root=Path(settings.dataset_root), env_config=driver_env_config(env_config),
                     place="validation",
                     on_drop=recorder(manifest, checkpoint=folder.name, iteration=iteration))
    summary = summarize(rows)[name]
    replay_share = _replay_brake_share(policy, replays)
    gating = gating_probe(policy, brake_threshold=env_config.brake_threshold,
                          cases=VALIDATION_CASES)
    gating_share = gating["failed"] / gating["judged"]
    episodes = store.local / VALIDATIONS / f"{folder.name}.jsonl"  # per episode, for audits
    episodes.parent.mkdir(exist_ok=True)
    episodes.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
    entry = {"checkpoint": folder.name, "iteration": iteration,
             "suite": settings.validation_suite,
             "collision_rate": summary["collision_rate"],
             "false_brake_rate": summary["false_brake_rate"],
             "replay_brake_share": replay_share,
             "gating_failed": gating["failed"],
             "score": validation_score(summary, replay_share, settings.replay_weight,
                                       gating_share, settings.gating_weight,
                                       settings.collision_weight),
             "episodes": len(rows),
             "dropped_episodes": len(manifest.get("dropped_episodes", [])) - before,
             "seconds": round(time.monotonic() - started, 1)}
    manifest.setdefault("validations", []).append(entry)
    best = best_validation(manifest["validations"])
    manifest["selected_checkpoint"] = best["checkpoint"]
    log.info("validation of %s on %s: collisions %.1f%%, false braking %.1f%% (%.0f s); "
             "best so far %s", folder.name, settings.validation_suite,
             100 * (entry["collision_rate"] or 0), 100 * (entry["false_brake_rate"] or 0),
             entry["seconds"], best["checkpoint"])
    run_manifest.save(manifest, store.local)
    store.sync()
    return entry


def best_validation(validations: list[dict]) -> dict:
    """The lowest score; the later checkpoint on a tie."""
    return min(validations, key=lambda v: (v["score"], -v["iteration"]))


def selected_checkpoint(run_dir: Path, manifest: dict) -> Path:
    """The checkpoint validation picked, else the newest (no validation suite, or none ran)."""
    chosen = manifest.get("selected_checkpoint")
    if chosen and (run_dir / CHECKPOINTS / chosen / "DONE").is_file():
        return run_dir / CHECKPOINTS / chosen
    return checkpoints(run_dir)[-1]


def driver_env_config(env_config: Any) -> dict[str, Any]:
    """The env config of the envs this process runs itself (warm start, validation, final
    evaluation): training's, on the traci backend, so that a SUMO death is a child's death
    (`roadsense.envs.episodes`) and the env runners keep this process's libsumo in debug
    mode."""
    return {**env_config.as_dict(), "sumo_backend": DRIVER_SUMO_BACKEND}


def recorder(manifest: dict, **context: Any) -> Callable[[Any], None]:
    """`on_drop` for an `EpisodeRunner`: the dropped episode goes to the manifest's
    `dropped_episodes` (saved at the next save)."""

    def record(dropped: Any) -> None:
        manifest.setdefault("dropped_episodes", []).append(dropped.as_dict() | context)

    return record
