"""The SUMO process layer: the only code that talks to SUMO.

`SumoProcess` owns one simulation for its whole life (start, reload per episode, step with
subscription reads, control commands, close). Everything else uses it.
"""

from roadsense.sim.binary import check_installation, sumo_binary, sumo_version
from roadsense.sim.process import Collision, SumoProcess, VehicleStates
from roadsense.sim.scenario import (
    base_scenario,
    build_network,
    validate_scenario,
    validate_scenarios,
)

__all__ = [
    "Collision",
    "SumoProcess",
    "VehicleStates",
    "base_scenario",
    "build_network",
    "check_installation",
    "sumo_binary",
    "sumo_version",
    "validate_scenario",
    "validate_scenarios",
]
