"""The policy's starting point, its state-independent std and the bounds that keep it
exploring (ConvoyEnv's model options)."""

import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from rllib_configs.ppo_convoy import CONVOY_MODEL
from roadsense.envs import ConvoyEnv
from roadsense.errors import ConfigError
from roadsense.rllib import DeepSetsRLModule, pack_observations


def _module(model_config: dict) -> DeepSetsRLModule:
    env = ConvoyEnv()  # declares spaces only; no SUMO is started
    return DeepSetsRLModule(observation_space=env.observation_space,
                            action_space=env.action_space, inference_only=False,
                            model_config=model_config)


def _dist_inputs(module: DeepSetsRLModule, n: int = 3) -> torch.Tensor:
    rng = np.random.default_rng(0)
    obs = [{"ego": rng.normal(size=3).astype(np.float32) * 3,
            "peers": rng.normal(size=(k, 7)).astype(np.float32) * 3}
           for k in [0, 3, 12, 1, 40, 5][:n]]
    batch = {Columns.OBS: {k: torch.as_tensor(v) for k, v in pack_observations(obs, 7).items()}}
    with torch.no_grad():
        return module.forward_exploration(batch)[Columns.ACTION_DIST_INPUTS]


def test_convoy_model_starts_near_driver_only_with_one_std() -> None:
    module = _module(CONVOY_MODEL)
    out = _dist_inputs(module)
    assert out.shape == (3, 2)
    mean, log_std = out[:, 0], out[:, 1]
    assert torch.allclose(log_std, torch.full((3,), -0.5))  # one std for every state
    assert torch.allclose(mean, torch.full((3,), -1.5), atol=0.01)
    assert (mean < -1.0).all()  # RLlib maps [-1, 1] to the brake: starts below the threshold
    assert any(p is module.log_std for p in module.parameters())  # learned


BOUNDED = {**CONVOY_MODEL, "init_action_mean": -1.45, "policy_range": (-1.6, 1.2),
           "min_log_std": -1.2}
"""Exploration that cannot die: the brake mean stays above -1.6 (brake 0; the threshold is
-0.9) and the std above e^-1.2 = 0.30."""


def test_bounded_model_keeps_exploring_however_far_training_pushes_it_down() -> None:
    module = _module(BOUNDED)
    with torch.no_grad():  # what PPO does to a policy that learns "never brake"
        module.log_std.fill_(-50.0)
        module.net.pi_head.bias.fill_(-50.0)
    mean, log_std = _dist_inputs(module, 6).unbind(1)
    lo, _ = BOUNDED["policy_range"]
    assert torch.allclose(log_std, torch.full((6,), BOUNDED["min_log_std"]))
    assert (mean >= lo).all() and (mean < -1.5).all()
    # the floor still brakes now and then: P(sample > threshold -0.9) ~ 1% per step
    p = 0.5 * torch.erfc((-0.9 - mean) / (torch.exp(log_std) * 2 ** 0.5))
    assert ((p > 0.005) & (p < 0.02)).all()
    with torch.no_grad():  # and the top of the range is full braking
        module.net.pi_head.bias.fill_(50.0)
    assert (_dist_inputs(module)[:, 0] > 1.0).all()


@pytest.mark.parametrize("change, field", [
    ({"free_log_std": False}, "policy_range"),
    ({"free_log_std": False, "policy_range": None}, "min_log_std"),
    ({"init_action_mean": -1.7}, "init_action_mean"),
    ({"init_log_std": -1.3}, "init_log_std"),
])
def test_inconsistent_gaussian_options_are_config_errors(change: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        _module({**BOUNDED, **change})
