"""The PPO config of RoadSense: Deep Sets module, ragged vector env, our connectors, learner.

`build_config(...)` returns one `PPOConfig` chain: one `RaggedVectorEnv` per env runner (one
SUMO per sub-env, seeded from (seed, worker, vector index, "train"/"eval")), packed peer sets
through the env-to-module connector, padded-to-batch-maximum sets with counts on the learner,
and `DeepSetsRLModule` over `roadsense.models.DeepSets`. `roadsense train`
(`roadsense.rllib.training.algorithm_config`), Tune trials and SageMaker jobs build their
config here; the experiment file ``rllib_configs/ppo_convoy.py`` calls it with its settings.
`CONVOY_MODEL` is the Deep Sets configuration ConvoyEnv trains with.
"""

from __future__ import annotations

import secrets
from typing import Any

from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from roadsense.rllib.callbacks import RoadSenseCallbacks
from roadsense.rllib.connectors import env_to_module_pieces, learner_pieces
from roadsense.rllib.env_runner import (
    REWARD_SCHEDULE,
    RoadSenseEnvRunner,
    check_reward_schedule,
)
from roadsense.rllib.lean_runner import LeanEnvRunner
from roadsense.rllib.learner import ImitationPPOTorchLearner
from roadsense.rllib.module import DeepSetsRLModule
from roadsense.rllib.vector_env import register_vector_env

DEFAULT_MODEL: dict[str, Any] = {
    "phi_hidden": (64, 64),
    "pooling": "mean_max",
    "rho_hidden": (64, 64),
    "activation": "tanh",
    "shared_encoder": False,
}

CONVOY_MODEL: dict[str, Any] = {
    **DEFAULT_MODEL,
    # ConvoyEnv: start near "driver only" with some exploration braking, instead of braking
    # half the time at random (see roadsense.rllib.module).
    "init_action_mean": -1.5,
    "init_log_std": -0.5,
    "free_log_std": True,
}


def build_config(
    *,
    env_id: str = "roadsense/Convoy-v0",
    env_kwargs: dict | None = None,
    env_module: str | None = None,
    seed: int = 0,
    num_env_runners: int = 1,
    num_envs_per_env_runner: int = 1,
    train_batch_size: int = 4000,
    minibatch_size: int = 256,
    num_epochs: int = 10,
    lr: float | list[list[float]] = 3e-4,
    entropy_coeff: float = 0.0,
    gamma: float = 0.99,
    lambda_: float = 0.95,
    model: dict | None = None,
    evaluation_num_env_runners: int = 0,
    evaluation_interval: int | None = None,
    evaluation_duration: int = 10,
    identity_kwarg: str | None = None,
    lean_sampling: bool = False,
    reward_schedule: dict[str, list[list[float]]] | None = None,
) -> PPOConfig:
    """One PPOConfig chain: ragged vector env, our connectors, Deep Sets module, callbacks.

    `env_kwargs` go to the gym constructor of `env_id` (e.g. ``{"scenarios": ..., "config":
    EnvConfig(...)}`` for ConvoyEnv); `env_module` is imported first if the id is not one of
    ours. `model` overrides `DEFAULT_MODEL` (keys of `roadsense.models.DeepSetsConfig`).
    `lr`: a constant or RLlib's schedule ``[[env steps, lr], ...]`` (linear in between).
    `identity_kwarg`: the constructor keyword that receives each sub-env's identity
    (``{worker_index, vector_index, purpose}``; ConvoyEnv's is ``identity``).
    `lean_sampling`: env runners sample with `LeanEnvRunner` (RLlib's bookkeeping without its
    connector pipelines, several times faster per step) instead of RLlib's own loop.
    `reward_schedule`: reward weight name -> ``[[env steps, weight], ...]`` (linear in
    between), applied to the training sub-envs by the env runners (ConvoyEnv's weights).
    """
    env_config = {
        "env_id": env_id,
        "env_kwargs": dict(env_kwargs or {}),
        "env_module": env_module,
        "seed": int(seed),
        "identity_kwarg": identity_kwarg,
        # runners of this config count their restarts under this key (fresh seeds after one)
        "run_key": secrets.token_hex(8),
    }
    if reward_schedule:
        env_config[REWARD_SCHEDULE] = check_reward_schedule(reward_schedule)
    config = (
        PPOConfig()
        .environment(env=register_vector_env(), env_config=env_config)
        .env_runners(
            env_runner_cls=LeanEnvRunner if lean_sampling else RoadSenseEnvRunner,
            num_env_runners=num_env_runners,
            num_envs_per_env_runner=num_envs_per_env_runner,
            num_cpus_per_env_runner=1,
            # Our vector env keeps ragged peers apart (gymnasium's would mix them across envs).
            gym_env_vectorize_mode="vector_entry_point",
            # Episodes hold ragged observations that cannot be stacked into arrays.
            episodes_to_numpy=False,
            env_to_module_connector=env_to_module_pieces,
            rollout_fragment_length="auto",
        )
        # PPO's learner plus an imitation term, off until `set_imitation` gives it a weight
        .learners(learner_connector=learner_pieces, learner_class=ImitationPPOTorchLearner)
        .rl_module(
            rl_module_spec=RLModuleSpec(
                module_class=DeepSetsRLModule, model_config={**DEFAULT_MODEL, **(model or {})}
            )
        )
        .training(
            train_batch_size_per_learner=train_batch_size,
            minibatch_size=minibatch_size,
            num_epochs=num_epochs,
            lr=lr,
            gamma=gamma,
            lambda_=lambda_,
            entropy_coeff=entropy_coeff,
            grad_clip=0.5,  # lr 1e-3 without clipping collapsed once in the prototype (KL 14.6)
            grad_clip_by="global_norm",
            # Returns reach ~10-20: the default clip (10) would starve those rows of gradient.
            vf_clip_param=1000.0,
            vf_loss_coeff=0.5,
        )
        # A SumoCrashedError is handled inside the vector env (episode cut, env rebuilt); a
        # runner process that dies outright (e.g. libsumo takes it down) is restarted by RLlib.
        # Any other env exception is a bug and must surface.
        .fault_tolerance(restart_failed_env_runners=True, restart_failed_sub_environments=False)
        .callbacks(RoadSenseCallbacks)
        # Torch init and RLlib's own RNGs; the envs are seeded by RaggedVectorEnv instead.
        .debugging(seed=int(seed))
    )
    if evaluation_interval:
        config = config.evaluation(
            evaluation_interval=evaluation_interval,
            evaluation_num_env_runners=evaluation_num_env_runners,
            evaluation_duration=evaluation_duration,
            evaluation_duration_unit="episodes",
        )
    return config
