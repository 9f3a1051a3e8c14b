"""The built-in datasets, generated on first use from their recorded settings.

``default-v1`` (training, 156 scenarios: every peer count 0..12 twelve times across the three
families) and ``eval-v1`` (evaluation, 39 scenarios: each family x peer count once, with a
radio-less obstacle ahead of every peer-less ego so hazards exist at peer count 0), and
``val-v1`` (checkpoint selection, 39 scenarios drawn like ``eval-v1`` from another seed: neither
trained on nor tested on). Generation is deterministic, so a fresh clone regenerates each
dataset with exactly the manifest hash that the eval suites record.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from roadsense.data.check import verify_hashes
from roadsense.data.manifest import MANIFEST_NAME
from roadsense.errors import DatasetError

log = logging.getLogger(__name__)

DEFAULT_TRAIN_DATASET = "default-v1"
DEFAULT_EVAL_DATASET = "eval-v1"
DEFAULT_VALIDATION_DATASET = "val-v1"


def builtin_settings() -> dict:
    """name -> GeneratorSettings of every built-in dataset."""
    from roadsense.data.factory.settings import GeneratorSettings, Ranges

    return {
        DEFAULT_TRAIN_DATASET: GeneratorSettings(
            dataset_id=DEFAULT_TRAIN_DATASET, seed=20261125, count=156, split="train"
        ),
        DEFAULT_EVAL_DATASET: GeneratorSettings(
            dataset_id=DEFAULT_EVAL_DATASET, seed=91, count=39, split="eval",
            ranges=Ranges(obstacle_ahead_prob_alone=1.0),
        ),
        # Split "eval": training (split "train") refuses it, as it refuses the test scenarios.
        DEFAULT_VALIDATION_DATASET: GeneratorSettings(
            dataset_id=DEFAULT_VALIDATION_DATASET, seed=7207, count=39, split="eval",
            ranges=Ranges(obstacle_ahead_prob_alone=1.0),
        ),
    }


def ensure_dataset(
    name: str = DEFAULT_TRAIN_DATASET, root: Path = Path("datasets"), *, workers: int | None = None
) -> Path:
    """Path of built-in dataset `name` under `root`, generating (or repairing) it when needed.

    An existing folder is used as it is when its hashes verify; otherwise the generator
    rewrites whatever differs. A lock file makes concurrent first uses (several env runners)
    generate once. Any other name must already exist under `root`.
    """
    root = Path(root)
    target = root / name
    settings = builtin_settings().get(name)
    if settings is None:
        if (target / MANIFEST_NAME).is_file():
            return target
        raise DatasetError(
            f"no dataset {name!r} under {root} and it is not a built-in one",
            path=target, fix=f"generate it, or use one of {sorted(builtin_settings())}",
        )
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if (target / MANIFEST_NAME).is_file():
            manifest, problems = verify_hashes(target)
            if not problems and manifest.get("settings") == _as_json(settings.to_dict()):
                return target
            log.warning("dataset %s needs repair (%d problems): regenerating what differs",
                        target, len(problems))
        from roadsense.data.factory.generator import generate_dataset

        log.info("generating built-in dataset %s into %s", name, target)
        generate_dataset(settings, target, workers=workers or min(4, os.cpu_count() or 1),
                         force=True)
    return target


def _as_json(obj: dict) -> dict:
    import json

    return json.loads(json.dumps(obj))
