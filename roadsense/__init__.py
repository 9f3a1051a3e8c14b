"""RoadSense: train a V2V driver-assist policy in SUMO convoys with an emulated ESP-NOW radio.

See ARCHITECTURE (shared/ARCHITECTURE.md) for the layout. Importing this package registers the
gymnasium id `roadsense/Convoy-v0` (a string entry point, as highway-env does) and does no
other work: no SUMO, Ray or torch import happens here; `gym.make` imports the env on demand.
"""

import gymnasium as _gym

__version__ = "0.1.0"

EGO_ID = "V001"
"""Vehicle id of the ego car in every scenario (the contract in ARCHITECTURE.md)."""

STEP_LENGTH_S = 0.1
"""Simulation step length in seconds, preserved across every reload."""

ENV_ID = "roadsense/Convoy-v0"
"""The gymnasium id of `roadsense.envs.ConvoyEnv`, registered on `import roadsense`."""

if ENV_ID not in _gym.registry:
    _gym.register(ENV_ID, entry_point="roadsense.envs.convoy_env:ConvoyEnv")
