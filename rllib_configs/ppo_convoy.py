"""Experiment: PPO with the Deep Sets module on ConvoyEnv (the library's `build_config`).

How to run it by hand (``roadsense train`` runs the full pipeline: imitation warm start,
validation, checkpoint selection; this file is the bare RLlib experiment)::

    import ray
    from rllib_configs.ppo_convoy import STOP, experiment
    ray.init(num_cpus=2)
    algo = experiment(num_env_runners=2).build_algo()
    while (r := algo.train())["training_iteration"] < STOP["training_iteration"]:
        print(r["env_runners"]["episode_return_mean"])

What to expect: on ConvoyEnv (here its built-in base convoy), `convoy/collision_rate` should
fall below the baseline driver's while `convoy/false_brake_rate` stays low; watch `radio/pdr`
to know which radio level was trained. From scratch (this config alone) that depends on the
seed, which is why `roadsense train` first imitates `v2v_rule` (`roadsense.rllib.warm_start`).
On the toy env (``build_config(env_id="roadsense/ToyRagged-v0")``; reward 0.5/step at random,
1.0 optimal, 20 steps) the mean return passes ~17 of 20 within 10-20 iterations of 4,000 steps.
"""

from __future__ import annotations

from ray.rllib.algorithms.ppo import PPOConfig

from roadsense.rllib.ppo import CONVOY_MODEL, DEFAULT_MODEL, build_config

__all__ = ["CONVOY_MODEL", "DEFAULT_MODEL", "STOP", "build_config", "experiment"]

STOP = {"training_iteration": 200}
"""Stop criteria of a full run."""


def experiment(*, seed: int = 0, num_env_runners: int = 1) -> PPOConfig:
    """The experiment's config: ConvoyEnv on the built-in dataset, `CONVOY_MODEL`, one env
    per runner (libsumo), lean sampling; each env gets its identity (worker, vector index,
    purpose)."""
    return build_config(seed=seed, num_env_runners=num_env_runners, num_envs_per_env_runner=1,
                        model=CONVOY_MODEL, identity_kwarg="identity", lean_sampling=True)
