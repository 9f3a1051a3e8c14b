"""RaggedVectorEnv: ragged peers kept per sub-env, identity seeds, infos intact, crash recovery."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.wrappers.vector import DictInfoToList
from ray.rllib.utils.spaces.space_utils import unbatch

from roadsense.errors import ConfigError, SumoCrashedError
from roadsense.rllib.toy_env import TOY_ENV_ID, ToyRaggedEnv, optimal_action
from roadsense.rllib.vector_env import (
    EnvIdentity,
    RaggedVectorEnv,
    make_ragged_vector_env,
    reset_identity,
    set_identity,
)
from roadsense.seeding import worker_seed


def _make(num_envs: int = 3, worker: int = 1, purpose: str = "train", seed: int = 7, **kwargs):
    token = set_identity(EnvIdentity(worker_index=worker, purpose=purpose))
    try:
        env = make_ragged_vector_env(
            {"env_id": TOY_ENV_ID, "env_kwargs": kwargs, "seed": seed, "num_envs": num_envs}
        )
    finally:
        reset_identity(token)
    return DictInfoToList(env)


def test_each_sub_env_gets_its_own_peer_set_through_rllib_unbatch() -> None:
    env = _make(3, tag_observations=True, peer_counts=[0, 5, 40, 2])
    obs, _ = env.reset()
    for _ in range(6):
        per_env = unbatch(obs)
        assert len(per_env) == 3
        for o in per_env:
            peers = o["peers"]
            assert peers.ndim == 2 and peers.shape[1] == 4
            if len(peers):  # every peer row carries its own observation's tag
                assert np.all(peers[:, 3] == o["ego"][2])
        obs, *_ = env.step(np.zeros((3, 1), np.float32))
    env.close()


def test_equal_peer_counts_still_give_an_object_array_per_env() -> None:
    env = _make(2, peer_counts=[4])
    obs, _ = env.reset()
    assert obs["peers"].dtype == object and obs["peers"].shape == (2,)
    assert obs["peers"][0].shape == (4, 4)
    env.close()


def test_seeds_come_from_identity_and_never_collide() -> None:
    seeds = {}
    for purpose in ("train", "eval"):
        for worker in (0, 1, 2):
            env = _make(2, worker=worker, purpose=purpose)
            _, infos = env.reset(seed=123)  # RLlib's seed is ignored
            for v, info in enumerate(infos):
                assert info["env_seed"] == worker_seed(7, worker, v, purpose)
                seeds[(purpose, worker, v)] = info["env_seed"]
            records = env.unwrapped.seed_records
            assert [r["vector_index"] for r in records] == [0, 1]
            assert all(r["purpose"] == purpose and r["worker_index"] == worker for r in records)
            env.close()
    assert len(set(seeds.values())) == len(seeds)


def test_same_seed_same_trajectory() -> None:
    def roll() -> list[np.ndarray]:
        env = _make(2)
        obs, _ = env.reset()
        out = []
        for _ in range(25):  # crosses an episode boundary (episode_len 20)
            out.extend([obs["ego"].copy(), *[p.copy() for p in obs["peers"]]])
            obs, *_ = env.step(np.full((2, 1), 0.3, np.float32))
        env.close()
        return out

    a, b = roll(), roll()
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_infos_survive_dict_info_to_list_unchanged() -> None:
    env = _make(2)
    env.reset()
    _, _, _, _, infos = env.step(np.array([[1.0], [0.0]], np.float32))
    assert isinstance(infos, list) and len(infos) == 2
    for info in infos:
        assert isinstance(info["reward_terms"], dict)
        assert isinstance(info["peer_count"], int)
    # Mixed None / dict values under one key (like a hazard plan) come back as they went in.
    vec = RaggedVectorEnv([ToyRaggedEnv, ToyRaggedEnv], [1, 2])
    batched = vec._batch_infos([{"hazard": None}, {"hazard": {"rank": 2, "to_stop": True}}])
    wrapped = DictInfoToList(vec)
    assert wrapped._convert_info_to_list(batched) == [
        {"hazard": None},
        {"hazard": {"rank": 2, "to_stop": True}},
    ]
    vec.close()


def test_next_step_autoreset_after_truncation() -> None:
    env = _make(1, episode_len=3)
    env.reset()
    truncs = []
    for _ in range(8):
        _, _, _, trunc, infos = env.step(np.zeros((1, 1), np.float32))
        truncs.append(bool(trunc[0]))
    # 3 steps, truncated; one reset step; 3 steps, truncated; ...
    assert truncs == [False, False, True, False, False, False, True, False]
    env.close()


def test_crash_in_step_truncates_rebuilds_and_goes_on() -> None:
    env = _make(2, crash_at_step=4)
    obs, _ = env.reset()
    last_good = [p.copy() for p in obs["peers"]]
    seen_crash = 0
    for t in range(1, 9):  # a rebuilt toy env would crash again 4 steps after its reset
        obs, rew, term, trunc, infos = env.step(np.zeros((2, 1), np.float32))
        for i, info in enumerate(infos):
            if info.get("sumo_crashed"):
                seen_crash += 1
                assert t == 4 and trunc[i] and not term[i] and rew[i] == 0.0
                # The cut episode ends on its last good observation.
                assert np.array_equal(obs["peers"][i], last_good[i])
        if t == 5:  # the step after the crash is the rebuilt env's reset, with a fresh seed
            assert all("env_seed" in info for info in infos)
        last_good = [p.copy() for p in obs["peers"]]
    assert seen_crash == 2
    vec = env.unwrapped
    assert vec.crash_count == 2
    assert [r["rebuild"] for r in vec.seed_records] == [0, 0, 1, 1]
    assert len({r["seed"] for r in vec.seed_records}) == 4
    env.close()


def test_crash_in_reset_is_retried_on_a_rebuilt_env() -> None:
    env = _make(1, crash_at_reset=2, episode_len=2)
    env.reset()
    env.step(np.zeros((1, 1), np.float32))
    _, _, _, trunc, _ = env.step(np.zeros((1, 1), np.float32))
    assert trunc[0]
    # The autoreset crashes (2nd reset); a rebuilt env (1st reset) answers instead.
    obs, _, _, trunc, infos = env.step(np.zeros((1, 1), np.float32))
    assert env.unwrapped.crash_count == 1 and "env_seed" in infos[0] and not trunc[0]
    assert obs["ego"].shape == (1, 3)
    env.close()


def test_env_that_always_crashes_on_reset_raises_after_retries() -> None:
    class AlwaysCrash(ToyRaggedEnv):
        def reset(self, *, seed=None, options=None):
            raise SumoCrashedError("dead")

    vec = RaggedVectorEnv([AlwaysCrash], [1])
    with pytest.raises(SumoCrashedError):
        vec.reset()
    vec.close()


def test_unknown_env_id_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not a registered gym id"):
        make_ragged_vector_env({"env_id": "roadsense/Nope-v0", "num_envs": 1})
    with pytest.raises(ConfigError, match="env_id"):
        make_ragged_vector_env({"num_envs": 1})


def test_toy_env_optimal_policy_beats_random() -> None:
    env = gym.make(TOY_ENV_ID, disable_env_checker=True)
    obs, _ = env.reset(seed=0)
    total_opt, n = 0.0, 200
    for _ in range(n):
        obs, r, term, trunc, _ = env.step(np.array([optimal_action(obs)], np.float32))
        total_opt += r
        if term or trunc:
            obs, _ = env.reset()
    assert total_opt / n == pytest.approx(1.0)


def test_reward_weights_need_envs_that_take_them() -> None:
    env = _make(2)
    try:
        with pytest.raises(ConfigError, match="ToyRaggedEnv has no set_reward_weights"):
            env.unwrapped.set_reward_weights({"false_brake": 1.0})
    finally:
        env.close()
