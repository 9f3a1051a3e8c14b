"""Datasets: manifests, the scenario index, ScenarioManager, eval suites and S3 storage.

`ScenarioManager` is the only way the env gets scenarios (random picks for training, a fixed
list by id for evaluation); manifests are verified once on load. `roadsense.data.storage` is
the only module that imports boto3 (lazily).
"""

from roadsense.data.default import (
    DEFAULT_EVAL_DATASET,
    DEFAULT_TRAIN_DATASET,
    DEFAULT_VALIDATION_DATASET,
    ensure_dataset,
)
from roadsense.data.manager import Scenario, ScenarioManager
from roadsense.data.suites import EvalEpisode, EvalSuite, load_suite

__all__ = [
    "DEFAULT_EVAL_DATASET",
    "DEFAULT_TRAIN_DATASET",
    "DEFAULT_VALIDATION_DATASET",
    "EvalEpisode",
    "EvalSuite",
    "Scenario",
    "ScenarioManager",
    "ensure_dataset",
    "load_suite",
]
