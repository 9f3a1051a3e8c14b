"""Ray Tune search spaces over `roadsense.rllib.ppo.build_config` arguments.

Each space maps `build_config` keyword arguments to Tune domains; ``model`` maps to the Deep
Sets keys (`roadsense.models.DeepSetsConfig`). Use with a trainable that calls
``build_config(**sampled)``; `PPO_CONVOY` is the first sweep (phase 1 gated), `SMOKE` a
two-trial check that the sweep machinery works.
"""

from __future__ import annotations

from typing import Any

from ray import tune

PPO_CONVOY: dict[str, Any] = {
    "lr": tune.loguniform(1e-4, 1e-3),
    "entropy_coeff": tune.choice([0.0, 0.001, 0.01]),
    "minibatch_size": tune.choice([128, 256, 512]),
    "num_epochs": tune.choice([5, 10]),
    "lambda_": tune.uniform(0.9, 0.98),
    "model": {
        "pooling": tune.choice(["mean_max", "sum_max", "mean", "max"]),
        "phi_hidden": tune.choice([(32, 32), (64, 64), (128, 128)]),
        "rho_hidden": tune.choice([(64, 64), (128, 128)]),
        "shared_encoder": tune.choice([False, True]),
    },
}
"""The first PPO sweep: optimiser, PPO and Deep Sets architecture knobs."""

SMOKE: dict[str, Any] = {
    "lr": tune.grid_search([3e-4, 1e-3]),
    "model": {"pooling": "mean_max"},
}
"""Two trials; for checking a cluster and the Tune plumbing, not for results."""

SEARCH_SPACES = {"ppo_convoy": PPO_CONVOY, "smoke": SMOKE}
