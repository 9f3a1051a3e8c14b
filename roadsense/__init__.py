"""RoadSense: train a V2V driver-assist policy in SUMO convoys with an emulated ESP-NOW radio.

See ARCHITECTURE (shared/ARCHITECTURE.md) for the layout. Importing this package does no work:
no SUMO, Ray or torch import happens here.
"""

__version__ = "0.1.0"

EGO_ID = "V001"
"""Vehicle id of the ego car in every scenario (the contract in ARCHITECTURE.md)."""

STEP_LENGTH_S = 0.1
"""Simulation step length in seconds, preserved across every reload."""
