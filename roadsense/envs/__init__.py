"""The gymnasium environment (`roadsense/Convoy-v0`), its hazards, reward and baselines.

The id itself is registered by `import roadsense` (a string entry point), so
`gym.make(ENV_ID)` works without importing this package first.
"""

from roadsense import ENV_ID
from roadsense.envs.config import EnvConfig, HazardConfig, RewardWeights
from roadsense.envs.convoy_env import ConvoyEnv, make_env

__all__ = ["ENV_ID", "ConvoyEnv", "EnvConfig", "HazardConfig", "RewardWeights", "make_env"]
