"""Policy networks in plain torch (and a numpy mirror of the policy path); nothing here
imports Ray."""

from roadsense.models.deepsets import (
    POOLINGS,
    DeepSets,
    DeepSetsConfig,
    DeepSetsEncoder,
    packed_from_padded,
    pool_packed,
)
from roadsense.models.numpy_policy import NumpyPolicy

__all__ = [
    "POOLINGS",
    "DeepSets",
    "DeepSetsConfig",
    "DeepSetsEncoder",
    "NumpyPolicy",
    "packed_from_padded",
    "pool_packed",
]
