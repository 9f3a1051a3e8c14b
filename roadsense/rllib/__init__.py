"""Everything that touches Ray/RLlib: the ragged vector env and its env runner, connectors,
the Deep Sets RLModule adapter and the metrics callbacks. The only package importing Ray."""

from roadsense.rllib.callbacks import RoadSenseCallbacks, episode_metrics
from roadsense.rllib.connectors import (
    RaggedObsToLearner,
    RaggedObsToModule,
    env_to_module_pieces,
    learner_pieces,
    pack_observations,
    pad_observations,
)
from roadsense.rllib.env_runner import RoadSenseEnvRunner, collect_seed_records
from roadsense.rllib.lean_runner import LeanEnvRunner
from roadsense.rllib.module import DeepSetsRLModule
from roadsense.rllib.vector_env import (
    VECTOR_ENV_NAME,
    EnvIdentity,
    RaggedVectorEnv,
    make_ragged_vector_env,
    register_vector_env,
)

__all__ = [
    "VECTOR_ENV_NAME",
    "DeepSetsRLModule",
    "EnvIdentity",
    "LeanEnvRunner",
    "RaggedObsToLearner",
    "RaggedObsToModule",
    "RaggedVectorEnv",
    "RoadSenseCallbacks",
    "RoadSenseEnvRunner",
    "collect_seed_records",
    "env_to_module_pieces",
    "episode_metrics",
    "learner_pieces",
    "make_ragged_vector_env",
    "pack_observations",
    "pad_observations",
    "register_vector_env",
]
