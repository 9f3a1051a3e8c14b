"""The policy's starting point and its state-independent std (ConvoyEnv's model options)."""

import numpy as np
import torch
from ray.rllib.core.columns import Columns

from roadsense.envs import ConvoyEnv
from roadsense.rllib import DeepSetsRLModule, pack_observations
from roadsense.rllib.ppo import CONVOY_MODEL


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
    assert torch.allclose(log_std, torch.full((3,), CONVOY_MODEL["init_log_std"]))
    # RLlib maps [-1, 1] to the brake: the mean starts near -1.5, below the brake threshold
    # (brake 0.05 is -0.9 normalised), and with std e^-0.5 over 80% of samples stay below it
    assert torch.allclose(mean, torch.full((3,), -1.5), atol=0.2)
    below = torch.distributions.Normal(mean, log_std.exp()).cdf(torch.tensor(-0.9))
    assert (below > 0.8).all()

    # One std for every state, learned: a PPO-like step that moves both heads leaves the
    # std equal across states (and moved), while the mean now differs between them.
    optimizer = torch.optim.SGD(module.parameters(), lr=0.5)
    out = module.forward_train(batch)[Columns.ACTION_DIST_INPUTS]
    target = torch.tensor([[1.0, 0.5], [-1.0, -1.0], [0.0, 0.0]])
    ((out - target) ** 2).sum().backward()
    optimizer.step()
    with torch.no_grad():
        after = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS]
    assert torch.equal(after[:, 1], after[:1, 1].expand(3))
    assert not torch.allclose(after[:, 1], log_std)
    assert after[:, 0].max() - after[:, 0].min() > 1e-3
