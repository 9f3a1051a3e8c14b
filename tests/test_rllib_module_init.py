"""The policy's starting point and its state-independent std (ConvoyEnv's model options)."""

import numpy as np
import torch
from ray.rllib.core.columns import Columns

from rllib_configs.ppo_convoy import CONVOY_MODEL
from roadsense.envs import ConvoyEnv
from roadsense.rllib import DeepSetsRLModule, pack_observations


def test_convoy_model_starts_near_driver_only_with_one_std() -> None:
    env = ConvoyEnv()  # declares spaces only; no SUMO is started
    module = DeepSetsRLModule(observation_space=env.observation_space,
                              action_space=env.action_space, inference_only=False,
                              model_config=CONVOY_MODEL)
    rng = np.random.default_rng(0)
    ego_dim = env.observation_space["ego"].shape[0]
    obs = [{"ego": rng.normal(size=ego_dim).astype(np.float32),
            "peers": rng.normal(size=(k, 7)).astype(np.float32)} for k in (0, 3, 12)]
    batch = {Columns.OBS: {k: torch.as_tensor(v) for k, v in pack_observations(obs, 7).items()}}
    with torch.no_grad():
        out = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS]
    assert out.shape == (3, 2)
    mean, log_std = out[:, 0], out[:, 1]
    assert torch.allclose(log_std, torch.full((3,), -0.5))  # one std for every state
    assert (mean < -1.0).all()  # RLlib maps [-1, 1] to the brake: starts below the threshold
    assert any(p is module.log_std for p in module.parameters())  # learned
