"""Everything that touches Ray/RLlib: the ragged vector env and its env runner, connectors,
the Deep Sets RLModule adapter and the metrics callbacks. The only package importing Ray.

The names below load on first use (PEP 562), so that `roadsense.rllib.settings` (what
`roadsense train --help` needs) imports without Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RoadSenseCallbacks": "callbacks",
    "episode_metrics": "callbacks",
    "RaggedObsToLearner": "connectors",
    "RaggedObsToModule": "connectors",
    "env_to_module_pieces": "connectors",
    "learner_pieces": "connectors",
    "pack_observations": "connectors",
    "pad_observations": "connectors",
    "RoadSenseEnvRunner": "env_runner",
    "collect_seed_records": "env_runner",
    "LeanEnvRunner": "lean_runner",
    "DeepSetsRLModule": "module",
    "VECTOR_ENV_NAME": "vector_env",
    "EnvIdentity": "vector_env",
    "RaggedVectorEnv": "vector_env",
    "make_ragged_vector_env": "vector_env",
    "register_vector_env": "vector_env",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'roadsense.rllib' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"roadsense.rllib.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
