"""`RoadSenseEnvRunner`: RLlib's single-agent env runner, telling our env creator who it is.

RLlib hands the env creator a plain dict (its `EnvContext | {"num_envs": n}` drops the worker
index), so the creator cannot derive per-runner seeds by itself. This runner declares its
identity (worker index; "eval" for evaluation runners, "train" otherwise) around env creation,
and exposes the seeds its sub-envs were reset with.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

from roadsense.rllib.vector_env import EnvIdentity, reset_identity, set_identity


class RoadSenseEnvRunner(SingleAgentEnvRunner):
    """Env runner seeding its vector env from (run seed, worker, vector index, purpose)."""

    def make_env(self) -> None:
        purpose = "eval" if self.config.in_evaluation else "train"
        token = set_identity(EnvIdentity(worker_index=int(self.worker_index or 0), purpose=purpose))
        try:
            super().make_env()
        finally:
            reset_identity(token)

    def seed_records(self) -> list[dict[str, Any]]:
        """Every seed this runner's sub-envs were reset with (see `RaggedVectorEnv`)."""
        env = self.env.unwrapped if self.env is not None else None
        return list(getattr(env, "seed_records", []))

    def crash_count(self) -> int:
        """How many sub-env crashes this runner recovered from."""
        env = self.env.unwrapped if self.env is not None else None
        return int(getattr(env, "crash_count", 0))


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
    unique = {tuple(sorted(r.items())): r for r in records}
    return sorted(
        unique.values(),
        key=lambda r: (r["purpose"], r["worker_index"], r["vector_index"], r["rebuild"]),
    )
