"""`RoadSenseEnvRunner`: RLlib's single-agent env runner, telling our env creator who it is.

RLlib hands the env creator a plain dict (its `EnvContext | {"num_envs": n}` drops the worker
index), so the creator cannot derive per-runner seeds by itself. This runner declares its
identity (worker index; "eval" for evaluation runners, "train" otherwise) around env creation,
and exposes the seeds its sub-envs were reset with.

It also applies the run's reward schedule (``env_config["reward_schedule"]``: reward weight
name -> ``[[env steps, weight], ...]``, linear in between, like RLlib's ``lr`` schedule) to its
training sub-envs: at creation and whenever RLlib broadcasts the run's lifetime env-step count
(after every iteration), so a restarted runner has the current weights again from the next
iteration on, and a resumed run continues where its step count stands.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

from roadsense.errors import ConfigError
from roadsense.rllib.vector_env import EnvIdentity, reset_identity, set_identity

logger = logging.getLogger(__name__)

REWARD_SCHEDULE = "reward_schedule"
"""env_config key of the reward schedule (see the module docstring)."""


def check_reward_schedule(schedule: dict[str, Any] | None) -> dict[str, list[list[float]]]:
    """The schedule as plain lists, or a ConfigError naming the weight and what is wrong."""
    out: dict[str, list[list[float]]] = {}
    for name, points in (schedule or {}).items():
        try:
            pts = [[int(step), float(value)] for step, value in points]
        except (TypeError, ValueError):
            pts = []
        steps = [p[0] for p in pts]
        if not pts or steps[0] < 0 or steps != sorted(steps):
            raise ConfigError(
                f"reward schedule of {name!r} must be [[env steps, weight], ...] with steps "
                f">= 0 in increasing order, got {points!r}",
                fix="e.g. {'false_brake': [[0, 1.0], [600000, 1.0], [1200000, 3.0]]}")
        out[str(name)] = pts
    return out


def scheduled_weights(schedule: dict[str, list[list[float]]], env_steps: int) -> dict[str, float]:
    """Each scheduled weight at `env_steps`: linear between points, flat outside them."""
    return {name: float(np.interp(env_steps, [p[0] for p in pts], [p[1] for p in pts]))
            for name, pts in schedule.items()}


class RoadSenseEnvRunner(SingleAgentEnvRunner):
    """Env runner seeding its vector env from (run seed, worker, vector index, purpose)."""

    def make_env(self) -> None:
        purpose = "eval" if self.config.in_evaluation else "train"
        token = set_identity(EnvIdentity(worker_index=int(self.worker_index or 0), purpose=purpose))
        try:
            super().make_env()
        finally:
            reset_identity(token)
        self._reward_weights: dict[str, float] = {}
        self._apply_reward_schedule()

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if NUM_ENV_STEPS_SAMPLED_LIFETIME in state:
            self._apply_reward_schedule()

    def _apply_reward_schedule(self) -> None:
        schedule = self.config.env_config.get(REWARD_SCHEDULE)  # checked by build_config
        if not schedule or self.config.in_evaluation or self.env is None:
            return
        weights = scheduled_weights(schedule, int(getattr(self, "num_env_steps_sampled_lifetime",
                                                          0) or 0))
        if weights != getattr(self, "_reward_weights", None):
            self.env.unwrapped.set_reward_weights(weights)
            self._reward_weights = weights
            logger.debug("runner %s: reward weights %s", self.worker_index, weights)

    def seed_records(self) -> list[dict[str, Any]]:
        """Every seed this runner's sub-envs were reset with (see `RaggedVectorEnv`)."""
        env = self.env.unwrapped if self.env is not None else None
        return list(getattr(env, "seed_records", []))

    def crash_count(self) -> int:
        """How many sub-env crashes this runner recovered from."""
        env = self.env.unwrapped if self.env is not None else None
        return int(getattr(env, "crash_count", 0))


def merge_seed_records(*lists: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One sorted list without duplicates: the records a manifest holds already (those of
    runners that died since) plus the live runners' records."""
    unique = {tuple(sorted(r.items())): r for records in lists for r in records}
    return sorted(unique.values(), key=lambda r: (
        r["purpose"], r["worker_index"], r.get("incarnation", 0), r["vector_index"],
        r["rebuild"], r["seed"]))


def collect_seed_records(algo: Any) -> list[dict[str, Any]]:
    """All seeds used so far by the training and evaluation runners of `algo` (for manifests)."""
    records: list[dict[str, Any]] = []
    groups = [getattr(algo, "env_runner_group", None), getattr(algo, "eval_env_runner_group", None)]
    for group in groups:
        if group is None:
            continue
        for runner_records in group.foreach_env_runner(
            lambda r: r.seed_records() if hasattr(r, "seed_records") else []
        ):
            records.extend(runner_records or [])
    return merge_seed_records(records)
