"""Scenario generation: randomized SUMO convoy scenarios written as governed datasets.

`generate_dataset(GeneratorSettings(...), out)` draws every scenario from its own seed stream,
builds its network with netconvert (through `roadsense.sim`) and writes ``manifest.json`` +
``index.parquet``. `regenerate` rebuilds a dataset from its manifest's settings. CLI:
``roadsense scenarios generate``; the built-in datasets (`roadsense.data.ensure_dataset`) are
generated here too.
"""

from roadsense.data.factory.generator import GenerateReport, generate_dataset, scenario_id
from roadsense.data.factory.settings import GENERATOR_VERSION, GeneratorSettings, Ranges

__all__ = [
    "GENERATOR_VERSION",
    "GenerateReport",
    "GeneratorSettings",
    "Ranges",
    "generate_dataset",
    "scenario_id",
]
