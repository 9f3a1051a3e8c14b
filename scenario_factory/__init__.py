"""Scenario factory scripts, built on `roadsense.data.factory` (the generator lives there).

`make_suites.py` draws the eval suites (``python -m scenario_factory.make_suites``). The names
below re-export the library's generator for scripts and notebooks:
`generate_dataset(GeneratorSettings(...), out)`.
"""

from roadsense.data.factory import (
    GENERATOR_VERSION,
    GenerateReport,
    GeneratorSettings,
    Ranges,
    generate_dataset,
    scenario_id,
)

__all__ = [
    "GENERATOR_VERSION",
    "GenerateReport",
    "GeneratorSettings",
    "Ranges",
    "generate_dataset",
    "scenario_id",
]
