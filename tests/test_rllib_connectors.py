"""Ragged peers through RLlib: module layouts, padding invariance, real pipeline integrity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ray.rllib.connectors.learner import AddOneTsToEpisodesAndTruncate
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.minibatch_utils import MiniBatchCyclicIterator

from roadsense.errors import ConfigError
from roadsense.rllib import (
    DeepSetsRLModule,
    RoadSenseEnvRunner,
    pack_observations,
    pad_observations,
)
from roadsense.rllib.connectors import EGO, PEER_COUNT, PEER_PAD, PEER_X
from roadsense.rllib.ppo import build_config
from roadsense.rllib.toy_env import TOY_ENV_ID, ToyRaggedEnv

SMALL_MODEL = {"phi_hidden": (16, 16), "rho_hidden": (16,)}


def _module(seed: int = 0) -> DeepSetsRLModule:
    env = ToyRaggedEnv()
    torch.manual_seed(seed)
    return DeepSetsRLModule(
        observation_space=env.observation_space,
        action_space=env.action_space,
        inference_only=False,
        model_config=SMALL_MODEL,
    )


def _observations(counts: list[int], seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {"ego": rng.normal(size=3).astype(np.float32),
         "peers": rng.normal(size=(k, 4)).astype(np.float32)}
        for k in counts
    ]


def _tensors(d: dict) -> dict:
    return {k: torch.as_tensor(v) for k, v in d.items()}


def test_pack_and_pad_layouts() -> None:
    obs = _observations([0, 3, 1])
    obs[0]["peers"] = np.zeros((0,), np.float32)  # an empty set without its feature dim
    packed = pack_observations(obs, 4)
    assert packed[PEER_X].shape == (4, 4) and packed[PEER_COUNT].tolist() == [0, 3, 1]
    padded = pad_observations(obs, 4, kmax=5)
    assert padded[PEER_PAD].shape == (3, 5, 4)
    np.testing.assert_array_equal(padded[PEER_PAD][1, :3], obs[1]["peers"])
    assert not padded[PEER_PAD][1, 3:].any()
    with pytest.raises(ValueError, match="kmax"):
        pad_observations(obs, 4, kmax=2)


def test_one_observation_packs_as_in_a_batch_into_new_arrays() -> None:
    """One observation (an env runner with one env) takes a shorter path: the same arrays,
    dtypes and shapes as packing it among others, and copies, never views of the episode's
    observation."""
    obs = _observations([3, 0, 2])
    obs[1]["peers"] = np.zeros((0,), np.float32)  # an empty set without its feature dim
    obs[2] = {k: v.astype(np.float64) for k, v in obs[2].items()}  # converted to float32
    for i, o in enumerate(obs):
        alone = pack_observations([o], 4)
        together = pack_observations(obs, 4)
        start = sum(len(np.reshape(x["peers"], (-1, 4))) for x in obs[:i])
        want = {EGO: together[EGO][i:i + 1], PEER_COUNT: together[PEER_COUNT][i:i + 1],
                PEER_X: together[PEER_X][start:start + len(alone[PEER_X])]}
        assert alone.keys() == want.keys()
        for key, array in alone.items():
            assert array.dtype == want[key].dtype and array.shape == want[key].shape
            np.testing.assert_array_equal(array, want[key])
        for key, name in ((EGO, "ego"), (PEER_X, "peers")):
            assert not np.shares_memory(alone[key], o[name])


def test_padded_learner_batch_gives_same_outputs_and_gradients_as_packed() -> None:
    counts = [0, 40, 3, 0, 7, 1]
    obs = _observations(counts, seed=1)
    packed = {Columns.OBS: _tensors(pack_observations(obs, 4))}
    padded_np = pad_observations(obs, 4, kmax=45)
    for i, k in enumerate(counts):  # garbage in every padded slot
        padded_np[PEER_PAD][i, k:] = 123.0
    padded = {Columns.OBS: _tensors(padded_np)}

    results = []
    for batch in (packed, padded):
        module = _module(seed=3)
        out = module.forward_train(batch)
        values = module.compute_values(batch, embeddings=out[Columns.EMBEDDINGS])
        values_direct = module.compute_values(batch)
        torch.testing.assert_close(values, values_direct, rtol=0, atol=0)
        loss = out[Columns.ACTION_DIST_INPUTS].pow(2).sum() + values.pow(2).sum()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in module.named_parameters()}
        results.append((out[Columns.ACTION_DIST_INPUTS].detach(), values.detach(), grads))
    (pi_a, v_a, g_a), (pi_b, v_b, g_b) = results
    torch.testing.assert_close(pi_a, pi_b, rtol=0, atol=0)
    torch.testing.assert_close(v_a, v_b, rtol=0, atol=0)
    assert g_a.keys() == g_b.keys()
    for name in g_a:
        torch.testing.assert_close(g_a[name], g_b[name], rtol=0, atol=0, msg=name)
    phi_grads = [g for name, g in g_a.items() if name.startswith("net.pi_encoder.phi")]
    assert phi_grads and all(g.abs().sum() > 0 for g in phi_grads)


def test_inference_output_of_a_sample_alone_equals_in_batch() -> None:
    module = _module()
    obs = _observations([0, 40, 5, 0, 13], seed=2)

    def forward(samples: list[dict]) -> torch.Tensor:
        out = module.forward_inference({Columns.OBS: _tensors(pack_observations(samples, 4))})
        return out[Columns.ACTION_DIST_INPUTS]

    batch = forward(obs)
    # the outputs (~1e-3 at init) differ between samples far beyond the tolerance below, so a
    # sample pooled with another's peers (or none of its own) could not pass
    gaps = (batch[:, None, :] - batch[None, :, :]).abs().amax(-1)
    assert gaps[~torch.eye(len(obs), dtype=torch.bool)].min() > 1e-5, batch
    assert (forward([{**obs[1], "peers": obs[1]["peers"][:0]}])[0] - batch[1]).abs().max() > 1e-4
    for i, o in enumerate(obs):  # float summation order only: ~1e-10 apart
        torch.testing.assert_close(forward([o])[0], batch[i], rtol=1e-6, atol=1e-9)


def test_module_rejects_unknown_model_keys_and_wrong_spaces() -> None:
    env = ToyRaggedEnv()
    with pytest.raises(ConfigError, match="poolin"):
        DeepSetsRLModule(observation_space=env.observation_space, action_space=env.action_space,
                         model_config={"poolin": "max"})
    with pytest.raises(ConfigError, match="Sequence"):
        DeepSetsRLModule(observation_space=env.action_space, action_space=env.action_space,
                         model_config={})


@pytest.mark.slow
def test_pipeline_keeps_every_sample_with_its_own_peers(ray_local: None) -> None:
    """Real env runner -> PPO's learner connector -> shuffled minibatches: peers stay home."""
    config = build_config(
        env_id=TOY_ENV_ID,
        env_kwargs={"tag_observations": True, "max_peers": 25, "episode_len": 30},
        num_env_runners=0,
        num_envs_per_env_runner=3,
        model=SMALL_MODEL,
    )
    runner = RoadSenseEnvRunner(config=config)
    try:
        episodes = runner.sample(num_timesteps=500, random_actions=False)
        # Every observation of every chunk, its final one included (the bootstrap step).
        all_obs = [o for ep in episodes for o in ep.get_observations(slice(0, len(ep) + 1))]
        ep_tags = [(float(o["ego"][2]), len(o["peers"])) for o in all_obs]
        assert all(np.all(o["peers"][:, 3] == o["ego"][2]) for o in all_obs)
        obs_space = runner.env.single_observation_space
        act_space = runner.env.single_action_space
        spec = MultiRLModuleSpec(rl_module_specs={DEFAULT_MODULE_ID: RLModuleSpec(
            module_class=DeepSetsRLModule, observation_space=obs_space,
            action_space=act_space, model_config=SMALL_MODEL)})
        multi_module = spec.build()
        pipeline = config.build_learner_connector(obs_space, act_space)
        pipeline.prepend(AddOneTsToEpisodesAndTruncate())  # as PPOLearner does
        batch = pipeline(rl_module=multi_module, batch={}, episodes=episodes, shared_data={})
        data = batch[DEFAULT_MODULE_ID]
        n = len(data[Columns.OBS]["ego"])
        assert n == len(ep_tags)
        assert data[Columns.OBS][PEER_PAD].shape[1] == max(k for _, k in ep_tags)

        ma_batch = MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(data)}, env_steps=n)
        seen: set[tuple[float, int]] = set()
        for minibatch in MiniBatchCyclicIterator(
            ma_batch, minibatch_size=64, num_epochs=2, shuffle_batch_per_epoch=True
        ):
            mb = minibatch.policy_batches[DEFAULT_MODULE_ID]
            obs = mb[Columns.OBS]
            ego, count, pad = (np.asarray(obs[k]) for k in ("ego", PEER_COUNT, PEER_PAD))
            assert len(ego) == len(count) == len(pad) == len(mb[Columns.ACTIONS])
            for i in range(len(ego)):
                k = int(count[i])
                assert np.all(pad[i, :k, 3] == ego[i, 2]), "peers of another sample"
                seen.add((float(ego[i, 2]), k))
            # The module consumes the sliced minibatch as is.
            out = multi_module[DEFAULT_MODULE_ID].forward_train(
                {Columns.OBS: {k: torch.as_tensor(np.asarray(v)) for k, v in obs.items()}}
            )
            assert out[Columns.ACTION_DIST_INPUTS].shape == (len(ego), 2)
        assert seen == set(ep_tags)
    finally:
        runner.stop()
