"""Scenario factory: randomized SUMO convoy scenarios written as governed datasets.

`generate_dataset(GeneratorSettings(...), out)` draws every scenario from its own seed stream,
builds its network with netconvert and writes ``manifest.json`` + ``index.parquet`` through
`roadsense.data`. CLI: ``roadsense scenarios generate``.
"""

from scenario_factory.generator import GenerateReport, generate_dataset, scenario_id
from scenario_factory.settings import GENERATOR_VERSION, GeneratorSettings, Ranges

__all__ = [
    "GENERATOR_VERSION",
    "GenerateReport",
    "GeneratorSettings",
    "Ranges",
    "generate_dataset",
    "scenario_id",
]
