"""The ESP-NOW V2V radio emulator and its versioned, hashed parameter files (pure numpy).

>>> from roadsense.comms import EspNowEmulator, load_params
>>> emu = EspNowEmulator(load_params())
"""

from roadsense.comms.emulator import EspNowEmulator
from roadsense.comms.messages import ReceivedMessages
from roadsense.comms.params import (
    DistanceBin,
    EmulatorParams,
    check_params_file,
    default_params_path,
    load_params,
    params_version,
    validate_params,
)

__all__ = [
    "DistanceBin",
    "EmulatorParams",
    "EspNowEmulator",
    "ReceivedMessages",
    "check_params_file",
    "default_params_path",
    "load_params",
    "params_version",
    "validate_params",
]
