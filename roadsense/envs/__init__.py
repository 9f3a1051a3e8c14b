"""The gymnasium environment (`roadsense/Convoy-v0`), its hazards, reward and baselines."""

import gymnasium as gym

from roadsense.envs.config import EnvConfig, HazardConfig, RewardWeights
from roadsense.envs.convoy_env import ConvoyEnv, make_env

ENV_ID = "roadsense/Convoy-v0"

if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point="roadsense.envs.convoy_env:ConvoyEnv")

__all__ = ["ENV_ID", "ConvoyEnv", "EnvConfig", "HazardConfig", "RewardWeights", "make_env"]
