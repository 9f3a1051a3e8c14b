"""Policy networks in plain torch; nothing here imports Ray."""

from roadsense.models.deepsets import (
    POOLINGS,
    DeepSets,
    DeepSetsConfig,
    DeepSetsEncoder,
    packed_from_padded,
    pool_packed,
)

__all__ = [
    "POOLINGS",
    "DeepSets",
    "DeepSetsConfig",
    "DeepSetsEncoder",
    "packed_from_padded",
    "pool_packed",
]
