"""`LeanEnvRunner` (the fast sampling loop) against RLlib's own loop, on real Ray and real envs.

With its policy in torch (`TorchLeanEnvRunner`) the lean loop draws its actions from the same
distribution with the same torch RNG as RLlib's loop, so under one seed both must produce the
very same episodes. Its default numpy policy path draws from its own seeded generator: the
tests check that it takes RLlib's actions when not exploring, samples the module's Gaussian
with the module's logp, and what PPO relies on (observation/action alignment, metrics,
learning, crashes).
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess

import numpy as np
import pytest
import torch
from conftest import _descendants
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns

from roadsense.rllib import LeanEnvRunner, RaggedObsToModule, RoadSenseEnvRunner, pack_observations
from roadsense.rllib.lean_runner import ListSteps, PackedObservations
from roadsense.rllib.ppo import build_config
from roadsense.rllib.toy_env import PEER_DIM, TOY_ENV_ID
from roadsense.rllib.vector_env import RaggedVectorEnv

SMALL_MODEL = {"phi_hidden": (32, 32), "rho_hidden": (32,)}
TOY = dict(env_id=TOY_ENV_ID, num_env_runners=0, model=SMALL_MODEL, seed=3)
EXTRA_COLUMNS = {Columns.ACTION_DIST_INPUTS, Columns.ACTION_LOGP, "weights_seq_no"}


class TorchLeanEnvRunner(LeanEnvRunner):
    """The lean loop with its policy in torch: RLlib's random stream, so RLlib's episodes."""

    numpy_policy = False


def _sample_rounds(runner_cls: type, rounds: list[dict], **config) -> list[list]:
    """Episodes of each `sample(**kwargs)` call in `rounds`, from a fresh algo."""
    lean = runner_cls is not RoadSenseEnvRunner
    algo = build_config(lean_sampling=lean, **config).env_runners(
        env_runner_cls=runner_cls).build_algo()
    try:
        runner = algo.env_runner
        assert type(runner) is runner_cls
        assert (getattr(runner, "_action_rng", None) is not None) == (runner_cls is LeanEnvRunner)
        return [runner.sample(**kwargs) for kwargs in rounds]
    finally:
        algo.stop()


def _assert_same_episode(ours, theirs) -> None:
    assert (len(ours), ours.t_started, ours.is_terminated, ours.is_truncated) == (
        len(theirs), theirs.t_started, theirs.is_terminated, theirs.is_truncated)
    assert set(ours.extra_model_outputs) == set(theirs.extra_model_outputs) == EXTRA_COLUMNS
    whole = slice(0, len(ours))
    for a, b in zip(ours.get_observations(slice(0, len(ours) + 1)),
                    theirs.get_observations(slice(0, len(theirs) + 1)), strict=True):
        np.testing.assert_array_equal(a["ego"], b["ego"])
        np.testing.assert_array_equal(a["peers"], b["peers"])
    # The lean loop ships actions and model outputs as arrays (RLlib: lists of per-step
    # values) and rewards as floats (RLlib: numpy scalars): same values, same dtypes.
    for a, b in zip(ours.get_actions(whole), theirs.get_actions(whole), strict=True):
        assert np.asarray(a).dtype == np.asarray(b).dtype
        np.testing.assert_array_equal(a, b)
    assert list(ours.get_rewards(whole)) == list(theirs.get_rewards(whole))
    assert ours.get_infos(slice(0, len(ours) + 1)) == theirs.get_infos(slice(0, len(theirs) + 1))
    for key in EXTRA_COLUMNS:
        for a, b in zip(ours.get_extra_model_outputs(key, whole),
                        theirs.get_extra_model_outputs(key, whole), strict=True):
            assert np.asarray(a).dtype == np.asarray(b).dtype
            np.testing.assert_array_equal(a, b)


def _assert_same_rounds(ours: list[list], theirs: list[list]) -> None:
    for our_eps, their_eps in zip(ours, theirs, strict=True):
        assert len(our_eps) == len(their_eps)
        for a, b in zip(our_eps, their_eps, strict=True):
            _assert_same_episode(a, b)


@pytest.mark.timeout(300)
def test_lean_loop_samples_the_episodes_rllib_samples(ray_local: None) -> None:
    # 20-step episodes, 2 sub-envs: chunks cut mid-episode and continued, episodes done mid-call
    # (next-step autoreset), then whole episodes without exploration.
    rounds = [dict(num_timesteps=30), dict(num_timesteps=45), dict(num_timesteps=7),
              dict(num_episodes=3, explore=False), dict(num_timesteps=25)]
    config = dict(TOY, num_envs_per_env_runner=2)
    _assert_same_rounds(_sample_rounds(TorchLeanEnvRunner, rounds, **config),
                        _sample_rounds(RoadSenseEnvRunner, rounds, **config))


@pytest.mark.timeout(300)
def test_lean_loop_steps_without_batching_and_ships_compact_chunks(ray_local: None) -> None:
    algo = build_config(lean_sampling=True, **dict(TOY, num_envs_per_env_runner=2)).build_algo()
    try:
        runner = algo.env_runner
        assert isinstance(runner.env, ListSteps)
        assert isinstance(runner.env.unwrapped, RaggedVectorEnv)
        episodes = runner.sample(num_timesteps=50)
        assert sum(len(e) for e in episodes) == 50
        for e in episodes:  # one array per column, not one object per step
            assert e.actions.finalized
            assert all(b.finalized for b in e.extra_model_outputs.values())
            assert not e.is_numpy and not e.observations.finalized  # ragged: lists
            assert all(type(r) is float for r in e.get_rewards())
            e.validate()
            # observations ship as a few arrays and come back as the same list of dicts
            assert type(e.observations.data) is PackedObservations
            shipped = pickle.loads(pickle.dumps(e, protocol=5))
            assert type(shipped.observations.data) is list
            _assert_same_observations(shipped.observations.data, list(e.observations.data))
            assert len(pickle.dumps(e.observations.data)) < len(
                pickle.dumps(list(e.observations.data)))
        # The learner connectors take them: one PPO update on a fresh batch.
        result = algo.train()
        assert result["learners"]["default_policy"]["num_module_steps_trained"] > 0
    finally:
        algo.stop()


def _assert_same_observations(ours: list, theirs: list) -> None:
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs, strict=True):
        assert list(a) == list(b)
        for key in a:
            assert (a[key].dtype, a[key].shape) == (b[key].dtype, b[key].shape)
            np.testing.assert_array_equal(a[key], b[key])


def test_packed_observations_round_trip_every_layout() -> None:
    """Ragged rows (empty ones included), fixed shapes and lists it cannot pack all come back
    from a pickle as the same plain list."""
    rng = np.random.default_rng(0)
    ragged = [{"ego": rng.random(2).astype(np.float32),
               "peers": rng.random((k, 8)).astype(np.float32)} for k in (0, 3, 0, 7, 1)]
    fixed = [{"ego": rng.random(2), "peers": rng.random((4, 8))} for _ in range(3)]
    mixed_keys = [{"ego": rng.random(2)}, {"peers": rng.random((1, 8))}]
    mixed_dtype = [{"ego": rng.random(2)}, {"ego": rng.random(2).astype(np.float32)}]
    not_dicts = [rng.random(3), rng.random(3)]
    for observations in (ragged, fixed, mixed_keys, mixed_dtype, [], [{}] * 3):
        back = pickle.loads(pickle.dumps(PackedObservations(observations), protocol=5))
        assert type(back) is list
        _assert_same_observations(back, observations)
    back = pickle.loads(pickle.dumps(PackedObservations(not_dicts)))
    assert type(back) is list and len(back) == len(not_dicts)
    assert all(np.array_equal(a, b) for a, b in zip(back, not_dicts, strict=True))


@pytest.mark.timeout(300)
def test_lean_loop_matches_rllib_on_convoy_env(ray_local: None) -> None:
    # Real SUMO: sub-env 0 on libsumo, sub-env 1 on traci; 5 s episodes of 0.1 s steps.
    rounds = [dict(num_timesteps=60), dict(num_timesteps=80)]
    config = dict(env_kwargs={"config": {"episode_s": 5.0}}, identity_kwarg="identity",
                  num_env_runners=0, num_envs_per_env_runner=2, seed=4)
    ours = _sample_rounds(TorchLeanEnvRunner, rounds, **config)
    _assert_same_rounds(ours, _sample_rounds(RoadSenseEnvRunner, rounds, **config))
    assert any(e.is_done for e in ours[1]), "an episode should end within the sample"


@pytest.mark.timeout(300)
def test_numpy_policy_takes_rllibs_actions_when_not_exploring(ray_local: None) -> None:
    # Whole episodes of the mean action (the toy env's observations do not depend on actions):
    # the numpy path's actions, dist inputs and rewards are RLlib's to float precision.
    rounds = [dict(num_episodes=4, explore=False)]
    config = dict(TOY, num_envs_per_env_runner=2)
    ours = _sample_rounds(LeanEnvRunner, rounds, **config)[0]
    theirs = _sample_rounds(RoadSenseEnvRunner, rounds, **config)[0]
    assert len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs, strict=True):
        whole = slice(0, len(a))
        assert len(a) == len(b)
        for oa, ob in zip(a.get_observations(whole), b.get_observations(whole), strict=True):
            np.testing.assert_array_equal(oa["peers"], ob["peers"])
        np.testing.assert_allclose(np.stack(a.get_actions(whole)),
                                   np.stack(b.get_actions(whole)), atol=1e-6)
        np.testing.assert_allclose(
            np.stack(a.get_extra_model_outputs(Columns.ACTION_DIST_INPUTS, whole)),
            np.stack(b.get_extra_model_outputs(Columns.ACTION_DIST_INPUTS, whole)), atol=1e-6)
        np.testing.assert_allclose(a.get_rewards(whole), b.get_rewards(whole), atol=1e-6)


@pytest.mark.timeout(300)
def test_numpy_policy_samples_are_seeded_and_recorded(ray_local: None) -> None:
    def actions(seed: int) -> tuple[np.ndarray, list[dict]]:
        algo = build_config(lean_sampling=True, **{**TOY, "seed": seed}).build_algo()
        try:
            runner = algo.env_runner
            eps = runner.sample(num_timesteps=40)
            return np.concatenate([np.stack(e.get_actions(slice(0, len(e)))) for e in eps]), \
                runner.seed_records()
        finally:
            algo.stop()

    first, records = actions(3)
    again, _ = actions(3)
    other, _ = actions(4)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    sampler = [r for r in records if r.get("stream") == "actions"]
    assert len(sampler) == 1 and sampler[0]["purpose"] == "train"
    assert sampler[0]["seed"] not in [r["seed"] for r in records if r is not sampler[0]]


@pytest.mark.timeout(300)
def test_stored_logp_and_dist_inputs_are_the_modules_for_the_stored_obs(ray_local: None) -> None:
    algo = build_config(lean_sampling=True, num_envs_per_env_runner=3, **TOY).build_algo()
    try:
        runner = algo.env_runner
        assert runner._action_rng is not None, "the default lean loop runs the policy in numpy"
        module, space = runner.module, runner.env.single_action_space
        # The initial policy head (gain 0.01) barely looks at the observation; with random
        # weights a forward pass on the wrong observation shows.
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.randn_like(p) * 0.5)
        episodes = runner.sample(num_timesteps=90)
        z: list[float] = []
        for episode in episodes:
            n = len(episode)
            obs = episode.get_observations(slice(0, n))
            actions = np.stack(episode.get_actions(slice(0, n)))
            batch = {k: torch.from_numpy(v) for k, v in pack_observations(obs, PEER_DIM).items()}
            with torch.no_grad():
                inputs = module.forward_exploration({Columns.OBS: batch})[
                    Columns.ACTION_DIST_INPUTS]
                dist = module.get_exploration_action_dist_cls().from_logits(inputs)
                logp = dist.logp(torch.from_numpy(actions)).numpy()
            stored_inputs = np.stack(
                episode.get_extra_model_outputs(Columns.ACTION_DIST_INPUTS, slice(0, n)))
            stored_logp = np.array(
                episode.get_extra_model_outputs(Columns.ACTION_LOGP, slice(0, n)))
            np.testing.assert_allclose(stored_inputs, inputs.numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(stored_logp, logp, rtol=1e-5, atol=1e-5)
            mean, log_std = np.split(stored_inputs, 2, axis=1)
            z.extend(((actions - mean) / np.exp(log_std)).ravel())
            # obs t -> action t -> reward t: the toy reward is 1 - |env action - target(obs t)|,
            # the env action being the sampled one unsquashed from [-1, 1] and clipped.
            target = np.array([float((o["peers"][:, 0] > 0.8).any()) for o in obs])
            env_action = np.clip(space.low + (actions[:, 0] + 1) * (space.high - space.low) / 2,
                                 space.low, space.high)
            expected = 1.0 - np.abs(env_action - target)
            np.testing.assert_allclose(episode.get_rewards(slice(0, n)), expected, atol=1e-6)
            # obs t+1 is a new env observation, not a repeat of obs t (ego[1] is fresh noise)
            noise = [o["ego"][1] for o in episode.get_observations(slice(0, n + 1))]
            assert len(set(noise)) == n + 1
        # the actions are draws from that Gaussian: standardised, they look standard normal
        assert len(z) >= 90 and abs(np.mean(z)) < 0.4 and 0.75 < np.std(z) < 1.25
    finally:
        algo.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ppo_learns_the_toy_env_with_the_lean_loop(ray_local: None) -> None:
    config = build_config(env_id=TOY_ENV_ID, num_env_runners=1, num_envs_per_env_runner=2,
                          train_batch_size=2000, minibatch_size=256, num_epochs=10, lr=3e-3,
                          model=SMALL_MODEL, seed=1, lean_sampling=True)
    algo = config.build_algo()
    try:
        returns = []
        for _ in range(12):
            result = algo.train()
            returns.append(result["env_runners"]["episode_return_mean"])
        runners = result["env_runners"]
    finally:
        algo.stop()
    # 20-step episodes: random actions earn ~10, the optimum 20. (Seeds 1 and 2 reached
    # 16.1 / 16.1 at iteration 12 with the numpy policy path, 16.4 / 15.7 with torch's.)
    assert returns[0] < 14 and returns[-1] > 15.5, returns
    assert runners["episode_len_mean"] == 20
    assert runners["num_env_steps_sampled"] >= 2000
    assert runners["num_env_steps_sampled_lifetime"] >= 20000
    assert runners["num_episodes"] > 0
    assert runners["convoy/peer_count_mean"] == pytest.approx(10, abs=1.5)
    assert np.isfinite(result["learners"]["default_policy"]["total_loss"])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_crashing_sub_envs_are_cut_and_rebuilt_under_the_lean_loop(ray_local: None) -> None:
    config = build_config(env_id=TOY_ENV_ID, env_kwargs={"crash_at_step": 150},
                          num_env_runners=1, num_envs_per_env_runner=2, train_batch_size=1000,
                          minibatch_size=250, num_epochs=2, model=SMALL_MODEL, seed=5,
                          lean_sampling=True)
    algo = config.build_algo()
    try:
        for _ in range(3):
            result = algo.train()
    finally:
        algo.stop()
    assert result["training_iteration"] == 3
    assert result["env_runners"]["sumo/crashes"] >= 4
    assert np.isfinite(result["learners"]["default_policy"]["total_loss"])


@pytest.mark.timeout(300)
def test_a_killed_sumo_cuts_its_episode_and_sampling_goes_on(ray_local: None) -> None:
    config = build_config(env_kwargs={"config": {"episode_s": 5.0, "sumo_backend": "traci"}},
                          identity_kwarg="identity", num_env_runners=0,
                          num_envs_per_env_runner=2, seed=6, lean_sampling=True)
    algo = config.build_algo()
    try:
        runner = algo.env_runner
        runner.sample(num_timesteps=20)
        out = subprocess.run(["pgrep", "-x", "sumo"], capture_output=True, text=True).stdout
        ours = sorted(int(p) for p in out.split() if int(p) in _descendants(os.getpid()))
        assert len(ours) == 2, "one traci SUMO per sub-env"
        os.kill(ours[0], signal.SIGKILL)
        episodes = runner.sample(num_timesteps=120)
        assert runner.crash_count() == 1
        cut = [e for e in episodes if e.is_truncated and e.get_infos(-1).get("sumo_crashed")]
        assert len(cut) == 1
        assert sum(len(e) for e in episodes) >= 120
        assert all(e.is_done or len(e) > 0 for e in episodes)
    finally:
        algo.stop()


class _Passthrough(ConnectorV2):
    """A custom env-to-module piece: the lean loop would skip it, so it must refuse it."""

    def __call__(self, *, batch: dict, **kwargs) -> dict:
        return batch


@pytest.mark.timeout(120)
def test_lean_runner_refuses_a_pipeline_it_would_bypass(ray_local: None) -> None:
    config = build_config(lean_sampling=True, **TOY).env_runners(
        env_to_module_connector=lambda env=None, spaces=None, device=None: [
            RaggedObsToModule(), _Passthrough()])
    with pytest.raises(Exception, match="LeanEnvRunner only reproduces"):
        config.build_algo()


@pytest.mark.timeout(300)
def test_lean_loop_calls_on_episode_step_only_when_defined_and_then_as_rllib_does(
        ray_local: None) -> None:
    rounds = [dict(num_timesteps=30), dict(num_timesteps=25)]
    calls: dict[type, list] = {}
    for runner_cls in (TorchLeanEnvRunner, RoadSenseEnvRunner):
        got: list = []
        calls[runner_cls] = got
        config = build_config(lean_sampling=runner_cls is not RoadSenseEnvRunner,
                              **dict(TOY, num_envs_per_env_runner=2)).env_runners(
            env_runner_cls=runner_cls).callbacks(
            on_episode_step=lambda *, episode, env_index, _got=got, **kw: _got.append(
                (env_index, episode.t)))
        algo = config.build_algo()
        try:
            if runner_cls is TorchLeanEnvRunner:
                assert algo.env_runner._step_callbacks
            for kwargs in rounds:
                algo.env_runner.sample(**kwargs)
        finally:
            algo.stop()
    assert calls[TorchLeanEnvRunner] == calls[RoadSenseEnvRunner]
    assert len(calls[RoadSenseEnvRunner]) > 40  # one per env step, episode starts aside
    plain = build_config(lean_sampling=True, **TOY).build_algo()
    try:  # no callback defines it (RLlib's own does nothing): not called per step
        assert not plain.env_runner._step_callbacks
    finally:
        plain.stop()
