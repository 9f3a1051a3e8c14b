"""Exception types for every known failure.

Each error carries a message that names the file or field at fault and says how to fix it.
The CLI turns any `RoadSenseError` into one line on stderr and exit code 1
(set ``ROADSENSE_DEBUG=1`` to see the traceback).
"""

from __future__ import annotations

from pathlib import Path


class RoadSenseError(Exception):
    """Base class of all errors that come from bad input or a broken environment."""

    def __init__(self, message: str, *, fix: str | None = None, path: str | Path | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.fix = fix
        text = message
        if path is not None and str(path) not in message:
            text = f"{path}: {text}"
        if fix:
            text = f"{text} (fix: {fix})"
        super().__init__(text)


class ConfigError(RoadSenseError):
    """A configuration value is out of range or inconsistent."""


class ScenarioError(RoadSenseError):
    """A scenario is unusable: missing sumocfg, malformed XML, no ego `V001` at t=0."""


class SumoNotFoundError(RoadSenseError):
    """The SUMO binary (or libsumo) cannot be found or is not the real one."""


class SumoStartError(RoadSenseError):
    """SUMO refused to start or to load a scenario (its own error text is included)."""


class SumoCrashedError(RoadSenseError):
    """A running SUMO died or its connection broke; the simulation is gone."""


class EmulatorParamsError(RoadSenseError):
    """The radio emulator parameter file is invalid."""


class DatasetError(RoadSenseError):
    """A dataset or its manifest is missing, incomplete or tampered with."""


class StorageError(RoadSenseError):
    """A local or S3 storage operation failed."""


class EvalSuiteError(RoadSenseError):
    """An evaluation suite file is invalid or does not match its dataset."""
