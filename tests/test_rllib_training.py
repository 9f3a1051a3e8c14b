"""PPO through the whole ragged pipeline on the toy env: it learns, survives crashes, cleans up."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from roadsense.rllib import collect_seed_records
from roadsense.rllib.ppo import build_config
from roadsense.rllib.toy_env import TOY_ENV_ID
from roadsense.seeding import worker_seed

SMALL_MODEL = {"phi_hidden": (32, 32), "rho_hidden": (32,)}


def _greedy_reward_per_step(algo, episodes: int = 10) -> float:
    eps = algo.env_runner.sample(num_episodes=episodes, explore=False)
    return float(sum(sum(e.get_rewards()) for e in eps) / sum(len(e) for e in eps))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ppo_learns_the_toy_env(ray_local: None) -> None:
    config = build_config(
        env_id=TOY_ENV_ID,
        num_env_runners=0,
        num_envs_per_env_runner=2,
        train_batch_size=2000,
        minibatch_size=256,
        num_epochs=10,
        lr=3e-3,
        model=SMALL_MODEL,
        seed=1,
    )
    algo = config.build_algo()
    try:
        before = _greedy_reward_per_step(algo)
        for _ in range(10):
            result = algo.train()
        after = _greedy_reward_per_step(algo)
    finally:
        algo.stop()
    # Random actions earn ~0.5 per step, the optimum 1.0; an untrained policy sits near 0.5.
    assert before < 0.7
    assert after > 0.8, f"greedy reward per step {after:.3f} after 10 iterations"
    assert np.isfinite(result["learners"]["default_policy"]["total_loss"])
    assert result["env_runners"]["convoy/peer_count_mean"] == pytest.approx(10, abs=1.5)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_crash_in_an_env_drops_the_episode_and_training_goes_on(ray_local: None) -> None:
    config = build_config(
        env_id=TOY_ENV_ID,
        env_kwargs={"crash_at_step": 150},  # every sub-env dies 150 steps after each (re)build
        num_env_runners=1,
        num_envs_per_env_runner=2,
        train_batch_size=1000,
        minibatch_size=250,
        num_epochs=2,
        model=SMALL_MODEL,
        seed=5,
        evaluation_interval=1,
        evaluation_num_env_runners=0,
        evaluation_duration=2,
    )
    algo = config.build_algo()
    try:
        for _ in range(3):
            result = algo.train()
        seeds = collect_seed_records(algo)
    finally:
        algo.stop()
    assert result["training_iteration"] == 3
    assert result["env_runners"]["sumo/crashes"] >= 4
    assert np.isfinite(result["learners"]["default_policy"]["total_loss"])
    train = [s for s in seeds if s["purpose"] == "train"]
    evals = [s for s in seeds if s["purpose"] == "eval"]
    # The remote runner is worker 1; its first seeds are the identity seeds, rebuilds follow.
    firsts = {(s["worker_index"], s["vector_index"]): s["seed"] for s in train if not s["rebuild"]}
    assert firsts == {(1, v): worker_seed(5, 1, v, "train") for v in (0, 1)}
    assert any(s["rebuild"] >= 1 for s in train)
    assert evals and all(s["seed"] not in {t["seed"] for t in train} for s in evals)
    assert {s["seed"] for s in evals if not s["rebuild"]} <= {
        worker_seed(5, 0, v, "eval") for v in (0, 1)
    }


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_restarted_runner_draws_fresh_seeds_and_records_them(ray_local: None) -> None:
    """An env runner process dies (SIGKILL) and RLlib restarts it with the same worker index:
    its sub-envs start from fresh seeds, not the first runner's again, and both are kept."""
    import os
    import signal

    from roadsense.rllib.env_runner import merge_seed_records
    from roadsense.rllib.vector_env import incarnation_seed

    config = build_config(env_id=TOY_ENV_ID, num_env_runners=1, num_envs_per_env_runner=2,
                          train_batch_size=200, minibatch_size=100, num_epochs=1,
                          model=SMALL_MODEL, seed=9)
    algo = config.fault_tolerance(restart_failed_env_runners=True).build_algo()
    try:
        algo.train()
        first = collect_seed_records(algo)
        (pid,) = algo.env_runner_group.foreach_env_runner(lambda r: os.getpid(),
                                                          local_env_runner=False)
        os.kill(pid, signal.SIGKILL)
        records = first
        # RLlib notices the death in a sample call and restarts the actor in the background;
        # on a loaded machine that took more than 6 iterations, so wait by the clock.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            algo.train()
            records = merge_seed_records(records, collect_seed_records(algo))
            if any(r["incarnation"] for r in records):
                break
    finally:
        algo.stop()
    firsts = {v: worker_seed(9, 1, v, "train") for v in (0, 1)}
    assert {(r["incarnation"], r["vector_index"]): r["seed"] for r in first} == {
        (0, v): s for v, s in firsts.items()}
    restarted = {r["vector_index"]: r["seed"] for r in records if r["incarnation"] == 1}
    assert restarted == {v: incarnation_seed(s, 1) for v, s in firsts.items()}
    assert not set(restarted.values()) & set(firsts.values()), "no replay of the first seeds"
    assert all(r in records for r in first), "the dead runner's seeds stay recorded"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ppo_iteration_on_the_convoy_env_logs_convoy_metrics(ray_local: None) -> None:
    """The real env (one libsumo SUMO in the remote runner) through the same pipeline."""
    config = build_config(
        env_id="roadsense/Convoy-v0",
        num_env_runners=1,
        train_batch_size=600,
        minibatch_size=200,
        num_epochs=1,
        model=SMALL_MODEL,
        seed=3,
    )
    algo = config.build_algo()
    try:
        result = algo.train()
        seeds = collect_seed_records(algo)
    finally:
        algo.stop()
    runners = result["env_runners"]
    assert runners["num_env_steps_sampled"] >= 600
    for key in ("convoy/collision_rate", "convoy/false_brake_rate", "radio/pdr", "sumo/step_ms"):
        assert key in runners, f"{key} missing from {sorted(runners)}"
    assert any(k.startswith("reward/") for k in runners)
    assert seeds[0]["seed"] == worker_seed(3, 1, 0, "train")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_checkpoint_round_trip_restores_the_module(ray_local: None, tmp_path) -> None:
    """The module's outputs come back bit for bit, and the learner's fused Adam its moments."""
    from ray.rllib.algorithms.algorithm import Algorithm
    from ray.rllib.core.columns import Columns

    from roadsense.rllib import pack_observations
    from roadsense.rllib.toy_env import ToyRaggedEnv

    config = build_config(env_id=TOY_ENV_ID, num_env_runners=0, train_batch_size=400,
                          minibatch_size=200, num_epochs=1, model=SMALL_MODEL, seed=2)
    env = ToyRaggedEnv()
    obs = [env.reset(seed=s)[0] for s in range(6)]
    batch = {Columns.OBS: {k: torch.as_tensor(v) for k, v in pack_observations(obs, 4).items()}}

    def adam(learner) -> tuple[bool, list[torch.Tensor]]:
        opt = learner.get_optimizer()
        return opt.defaults["fused"], [st["exp_avg_sq"].clone() for st in opt.state.values()]

    algo = config.build_algo()
    try:
        algo.train()
        before = algo.get_module().forward_inference(batch)[Columns.ACTION_DIST_INPUTS]
        fused, moments = next(iter(algo.learner_group.foreach_learner(adam))).get()
        path = algo.save_to_path(str(tmp_path / "ckpt"))
    finally:
        algo.stop()
    restored = Algorithm.from_checkpoint(path)
    try:
        after = restored.get_module().forward_inference(batch)[Columns.ACTION_DIST_INPUTS]
        fused_after, moments_after = next(iter(restored.learner_group.foreach_learner(adam))).get()
    finally:
        restored.stop()
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert fused and fused_after
    assert len(moments) == len(moments_after) > 0
    for a, b in zip(moments, moments_after, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_reward_schedule_follows_the_runs_env_steps_in_every_sub_env(ray_local: None) -> None:
    from roadsense.errors import ConfigError
    from roadsense.rllib.env_runner import scheduled_weights

    schedule = {"false_brake": [[0, 1.0], [400, 1.0], [1600, 3.0]]}
    with pytest.raises(ConfigError, match="reward schedule of 'false_brake'"):
        build_config(reward_schedule={"false_brake": [[800, 1.0], [400, 3.0]]})
    config = build_config(env_id="roadsense/Convoy-v0", num_env_runners=1,
                          num_envs_per_env_runner=2, train_batch_size=400, minibatch_size=200,
                          num_epochs=1, model=SMALL_MODEL, seed=4, lean_sampling=True,
                          identity_kwarg="identity",  # sub-env 1 on traci (libsumo: one a process)
                          reward_schedule=schedule)
    algo = config.build_algo()

    def weights() -> list[tuple[int, list[float]]]:
        return algo.env_runner_group.foreach_env_runner(
            lambda r: (r.num_env_steps_sampled_lifetime,
                       [e.unwrapped.config.reward.false_brake for e in r.env.unwrapped.envs]),
            local_env_runner=False)

    try:
        seen = [weights()[0]]
        for _ in range(4):
            algo.train()
            seen.append(weights()[0])
    finally:
        algo.stop()
    assert seen[0] == (0, [1.0, 1.0])
    steps = [s for s, _ in seen]
    assert steps == sorted(steps) and steps[-1] >= 1600
    for step, per_env in seen:
        want = scheduled_weights(schedule, step)["false_brake"]
        assert per_env == [pytest.approx(want)] * 2, (step, per_env)
    assert any(1.0 < w[0] < 3.0 for _, w in seen) and seen[-1][1] == [3.0, 3.0]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_imitation_term_pulls_the_policy_to_the_demonstrations(ray_local: None) -> None:
    """Demonstrations that brake exactly where the toy reward says not to: with the imitation
    term on, PPO's updates bring the policy's mean to them, the more the higher its weight
    (1.0 is `roadsense train`'s default); at weight 0 they do not."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    from roadsense.rllib import pack_observations
    from roadsense.rllib.learner import IMITATION_LOSS
    from roadsense.rllib.toy_env import ToyRaggedEnv, optimal_action
    from roadsense.rllib.warm_start import Demonstrations, imitation_targets, sample_inputs

    env = ToyRaggedEnv()
    obs = [env.reset(seed=s)[0] for s in range(600)]
    packed = pack_observations(obs, 4)
    wrong = np.array([1.0 - optimal_action(o) for o in obs], np.float32)
    demo = Demonstrations(ego=packed["ego"], peers=packed["peer_x"], counts=packed["peer_count"],
                          brake=wrong, returns=np.zeros(len(obs), np.float32),
                          calm=np.zeros(len(obs), bool), warned=wrong > 0.05,
                          episodes=1)  # a warning in view exactly where the demonstrator brakes
    target, weight = imitation_targets(demo, no_brake_mean=-1.5, brake_threshold=0.05)
    data = demo.imitation_data(target, weight)

    def error(learner) -> float:  # the weighted squared error of the learner's policy mean
        net = learner.module[DEFAULT_MODULE_ID].net
        with torch.no_grad():
            mean = net.policy(*sample_inputs(demo.ego, demo.peers, demo.counts,
                                             np.arange(len(obs))))[:, 0].numpy()
        return float(np.average((mean - target) ** 2, weights=weight))

    errors, logged = {}, {}
    for w in (0.0, 1.0, 20.0):
        config = build_config(env_id=TOY_ENV_ID, num_env_runners=0, train_batch_size=500,
                              minibatch_size=250, num_epochs=5, lr=1e-2, model=SMALL_MODEL,
                              seed=1)
        algo = config.build_algo()
        try:
            algo.learner_group.foreach_learner(
                lambda learner, w=w: learner.set_imitation(weight=w, data=data, seed=0))
            before = next(iter(algo.learner_group.foreach_learner(error))).get()
            for _ in range(4):
                result = algo.train()
            errors[w] = (before, next(iter(algo.learner_group.foreach_learner(error))).get())
            logged[w] = result["learners"][DEFAULT_MODULE_ID].get(IMITATION_LOSS)
        finally:
            algo.stop()
    assert errors[20.0][1] < 0.3 * errors[20.0][0], errors
    assert errors[0.0][1] > 0.7 * errors[0.0][0], errors
    # the default weight pulls too, less than 20 (same seed: the same start and samples)
    assert errors[0.0][0] == errors[1.0][0] == errors[20.0][0]
    assert errors[20.0][1] < errors[1.0][1] < 0.9 * errors[0.0][1], errors
    # the logged term is the error on the last update's draw: near the learner's own
    assert logged[0.0] is None
    for w in (1.0, 20.0):
        assert logged[w] == pytest.approx(errors[w][1], rel=0.5), (w, logged, errors)
