"""Warm start: demonstrations of `v2v_rule` in the real ConvoyEnv, and a Deep Sets policy fitted
to them that brakes where the rule brakes and not elsewhere."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from roadsense.envs import ConvoyEnv
from roadsense.envs.episodes import EpisodeRunner
from roadsense.envs.observation import PEER_DIM
from roadsense.models import NumpyPolicy
from roadsense.rllib import DeepSetsRLModule
from roadsense.rllib.ppo import CONVOY_MODEL
from roadsense.rllib.warm_start import demonstrations, fit, imitation_targets

HARD = {"hazard": {"probability": 1.0, "hard_share": 1.0}, "episode_s": 15.0}


@pytest.fixture(scope="module")
def demo():
    with EpisodeRunner(lambda: ConvoyEnv(config=HARD), "test") as runner:
        first = demonstrations(runner, "v2v_rule", 3000, seed=11)
        again = demonstrations(runner, "v2v_rule", 3000, seed=11)
    for name in ("ego", "peers", "counts", "brake", "returns", "warned"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    return first


def test_demonstrations_are_whole_episodes_of_the_rule(demo) -> None:
    n = len(demo)
    assert n >= 3000 and demo.episodes >= 2
    assert len(demo.ego) == len(demo.counts) == len(demo.returns) == n
    assert demo.counts.sum() == len(demo.peers) and demo.peers.shape[1] == PEER_DIM
    # the rule brakes at 0.8 or not at all, and it did brake on these hazards
    np.testing.assert_array_equal(np.unique(demo.brake), np.float32([0.0, 0.8]))
    assert 0.01 < (demo.brake > 0).mean() < 0.5
    assert np.isfinite(demo.returns).all()


def _module() -> DeepSetsRLModule:
    env = ConvoyEnv()  # spaces only
    return DeepSetsRLModule(observation_space=env.observation_space,
                            action_space=env.action_space, inference_only=False,
                            model_config=CONVOY_MODEL)


def test_fitted_policy_brakes_on_every_warning_of_a_hazard(demo) -> None:
    torch.manual_seed(0)
    module = _module()
    report = fit(module.net, demo, no_brake_mean=CONVOY_MODEL["init_action_mean"],
                 brake_threshold=0.05, seed=0)
    assert report.steps == len(demo) and report.braking_share > 0
    assert report.agree_brake >= 0.9 and report.agree_calm >= 0.95
    # the deterministic policy (the Gaussian's mean, unsquashed, as evaluation runs it)
    # against the rule's decisions with a warning in view, on every demonstrated step
    mean = NumpyPolicy(module.net)(demo.ego, demo.peers, demo.counts)[:, 0]
    brakes, warned = (mean + 1) / 2 > 0.05, demo.warned & ~demo.calm
    assert brakes[warned].mean() >= 0.9 and (~brakes[~warned]).mean() >= 0.95


def test_imitation_targets_brake_fully_on_hazards_and_never_in_calm_episodes(demo) -> None:
    rule = demo.brake > 0
    calm = np.zeros(len(demo), bool)
    calm[: len(demo) // 2] = True  # as if the first half were calm episodes
    demo = dataclasses.replace(demo, calm=calm)
    assert rule[calm].any() and rule[~calm].any()
    target, weight = imitation_targets(demo, no_brake_mean=-1.5, brake_threshold=0.05,
                                       brake=1.0)
    braking = ~calm & demo.warned  # every warning in view, also those the rule skipped
    held = rule & ~calm & ~demo.warned  # the rule's 1 s hold after the warning left the view
    skipped = ~rule & ~calm & demo.warned  # e.g. a peer that GPS puts > 6 m aside
    assert held.any() and braking.any() and skipped.any()
    np.testing.assert_array_equal(target[braking], 1.0)  # full brake, normalised
    np.testing.assert_array_equal(target[~braking], -1.5)  # incl. calm and held brakes
    assert weight[braking].sum() == pytest.approx(weight[~braking].sum())
    own, _ = imitation_targets(demo, no_brake_mean=-1.5, brake_threshold=0.05)
    np.testing.assert_allclose(own[braking], 2 * 0.8 - 1)  # the rule's own level


def test_imitated_brakes_follow_the_warnings_urgency(demo) -> None:
    """Only urgent warnings draw an imitated brake, as hard as `brake_gain` times the urgency
    asks, capped at `brake_cap` (a full brake unless given); a hazard episode's warnings that
    ask less are "no brake"."""
    u = demo.urgency
    assert u is not None and (u[demo.warned] > 0).all() and (u[~demo.warned] == 0).all()
    hazard_w = demo.warned & ~demo.calm
    assert (hazard_w & (u < 2.5)).any() and (hazard_w & (u >= 2.5)).any()
    target, _ = imitation_targets(demo, no_brake_mean=-1.5, brake_threshold=0.05,
                                  urgent_mps2=2.5, brake_gain=2.0, max_brake_mps2=8.0)
    urgent = hazard_w & (u >= 2.5)
    np.testing.assert_array_equal(target[~urgent], -1.5)
    level = (target[urgent] + 1) / 2
    np.testing.assert_allclose(level, np.minimum(2.0 * u[urgent] / 8.0, 1.0), rtol=1e-6)
    assert level.min() < 0.7 and level.max() == 1.0  # partial and full brakes both occur
    capped, _ = imitation_targets(demo, no_brake_mean=-1.5, brake_threshold=0.05,
                                  urgent_mps2=2.5, brake_gain=2.0, max_brake_mps2=8.0,
                                  brake_cap=0.8)
    np.testing.assert_array_equal(capped[~urgent], -1.5)
    capped_level = (capped[urgent] + 1) / 2
    np.testing.assert_allclose(capped_level, np.minimum(level, 0.8), rtol=1e-6)
    assert capped_level.max() == pytest.approx(0.8) and capped_level.min() == level.min()


def test_demonstrations_mark_calm_episodes() -> None:
    config = {"hazard": {"probability": 0.5}, "episode_s": 8.0}
    with EpisodeRunner(lambda: ConvoyEnv(config=config), "test") as runner:
        demo = demonstrations(runner, "v2v_rule", 800, seed=5)
    # one value per episode (episodes are 80 steps), both kinds present
    per_episode = demo.calm.reshape(demo.episodes, -1)
    assert (per_episode == per_episode[:, :1]).all()
    assert 0 < per_episode[:, 0].sum() < demo.episodes


def test_gating_counterexamples_move_every_warning_behind_or_beside(demo) -> None:
    from roadsense.envs.observation import PEER_INDEX, PEER_SCALE
    from roadsense.rllib.warm_start import (
        BEHIND_M,
        BESIDE_M,
        COUNTER_WEIGHT,
        with_gating_counterexamples,
    )

    more = with_gating_counterexamples(demo, decel_mps2=2.5, seed=0)
    n, m = len(demo), int(demo.warned.sum())
    c = n + m + min(m, int((~demo.warned & (demo.counts > 0)).sum()))  # end of the calm copies
    assert m > 0 and more.counter[n:c].all() and not more.counter[:n].any()
    assert not more.counter[c:].any()  # the kept copies are imitated like their originals
    np.testing.assert_array_equal(more.ego[:n], demo.ego)
    np.testing.assert_array_equal(more.peers[: len(demo.peers)], demo.peers)
    starts = np.cumsum(more.counts) - more.counts
    moved = {"behind": 0, "beside": 0}
    for i in range(n, n + m):
        p = more.peers[starts[i]: starts[i] + more.counts[i]].astype(float) * PEER_SCALE
        hard = p[:, PEER_INDEX["accel"]] <= -2.5
        long_m, lat_m = p[hard, PEER_INDEX["long_offset"]], p[hard, PEER_INDEX["lat_offset"]]
        assert hard.any()
        behind = long_m <= -BEHIND_M[0] + 1e-3
        beside = np.abs(lat_m) >= BESIDE_M[0] - 1e-3
        assert (behind | beside).all()  # no hard-braking peer left ahead in the lane
        moved["behind"] += behind.all()
        moved["beside"] += beside.all() and not behind.any()
    assert min(moved.values()) >= m // 3
    # the calm copies: no warning in view, and every view has a car behind or well beside
    calm = {"behind": 0, "beside": 0}
    for i in range(n + m, c):
        p = more.peers[starts[i]: starts[i] + more.counts[i]].astype(float) * PEER_SCALE
        long_m, lat_m = p[:, PEER_INDEX["long_offset"]], p[:, PEER_INDEX["lat_offset"]]
        hard = p[:, PEER_INDEX["accel"]] <= -2.5
        assert not (hard & (long_m > 0) & (np.abs(lat_m) < BESIDE_M[0])).any()
        calm["behind"] += bool((long_m <= 0).any())
        calm["beside"] += bool(((long_m > 0) & (np.abs(lat_m) >= BESIDE_M[0] - 1e-3)).any())
        assert ((long_m <= 0) | (np.abs(lat_m) >= BESIDE_M[0] - 1e-3)).any()
    assert min(calm.values()) >= (c - n - m) // 5
    # the kept copies: one per warning step of a hazard episode, its warning peers in place and
    # some other peer moved out of the lane; the same targets as the originals
    originals = np.flatnonzero(demo.warned & ~demo.calm)
    assert 0 < len(more) - c <= len(originals)
    for name in ("warned", "calm", "urgency", "brake"):
        assert set(getattr(more, name)[c:].tolist()) <= set(getattr(demo, name)[originals].tolist())
    for i in range(c, len(more)):
        p = more.peers[starts[i]: starts[i] + more.counts[i]].astype(float) * PEER_SCALE
        long_m, lat_m = p[:, PEER_INDEX["long_offset"]], p[:, PEER_INDEX["lat_offset"]]
        assert ((p[:, PEER_INDEX["accel"]] <= -2.5) & (long_m > 0)).any()  # the warning stays
        assert ((long_m <= 0) | (np.abs(lat_m) >= BESIDE_M[0] - 1e-3)).any()
    target, weight = imitation_targets(more, no_brake_mean=-1.5, brake_threshold=0.05, brake=1.0)
    np.testing.assert_array_equal(target[n:c], -1.5)
    assert weight[n:c].sum() / weight.sum() == pytest.approx(COUNTER_WEIGHT)
    assert (target[:n] == 1.0).any() and (target[c:] == 1.0).all()


def test_beside_copies_start_beyond_where_gps_puts_a_car_of_the_ego_lane(demo) -> None:
    """The hard-braking peers of convoy demonstrations drive in the ego's lane; GPS and heading
    errors spread their lateral offsets. Copies moved "beside" must start beyond that spread,
    or they teach "no brake" on real warnings."""
    from roadsense.envs.observation import PEER_INDEX, PEER_SCALE
    from roadsense.rllib.warm_start import BESIDE_M

    starts = np.cumsum(demo.counts) - demo.counts
    lat = []
    for i in np.flatnonzero(demo.warned):
        p = demo.peers[starts[i]: starts[i] + demo.counts[i]].astype(float) * PEER_SCALE
        hard = (p[:, PEER_INDEX["accel"]] <= -2.5) & (p[:, PEER_INDEX["long_offset"]] > 0)
        lat.append(np.abs(p[hard, PEER_INDEX["lat_offset"]]))
    lat = np.concatenate(lat)
    assert len(lat) > 100
    assert np.quantile(lat, 0.5) > 2.0  # the errors are there: offsets spread well past a lane
    assert np.quantile(lat, 0.95) < BESIDE_M[0]


def test_policy_fitted_with_counterexamples_gates_like_a_driver(demo) -> None:
    from roadsense.eval.gating import gating_probe, observation
    from roadsense.rllib.warm_start import with_gating_counterexamples

    class Mean:  # the deterministic policy, brake in [0, 1]
        def __init__(self, net) -> None:
            self.policy = NumpyPolicy(net)

        def __call__(self, obs):
            mean = self.policy(obs["ego"][None], obs["peers"], np.array([len(obs["peers"])]))
            return np.clip((mean[:, 0] + 1) / 2, 0, 1)

    probes = {}
    for name, d in (("plain", demo),
                    ("counter", with_gating_counterexamples(demo, decel_mps2=2.5, seed=0))):
        torch.manual_seed(0)
        module = _module()
        fit(module.net, d, no_brake_mean=CONVOY_MODEL["init_action_mean"], brake_threshold=0.05,
            brake=1.0, updates=1500, seed=0)
        probes[name] = gating_probe(Mean(module.net))
        # a hard brake 30 m ahead in the lane while two calm cars read behind and to the side,
        # where GPS error puts the cars of a real drive
        view = observation(30.0, 0.0, 25.0)
        view["peers"] = np.concatenate([view["peers"][1:], observation(-8.0, 16.0, 25.0, 0.0, True)[
            "peers"], observation(-7.0, 13.0, 25.0, 0.0, True)["peers"]])
        probes[name]["crowded"] = float(Mean(module.net)(view)[0])
    # without counterexamples the net brakes for hard brakes behind or beside; with them not,
    # and it still brakes for the car ahead when other cars read behind or beside
    assert probes["plain"]["elsewhere_braked"] > 0.3
    assert probes["counter"]["elsewhere_braked"] == 0.0
    assert probes["counter"]["ahead_braked"] == 1.0
    assert probes["counter"]["crowded"] > 0.5


def test_imitation_rows_are_drawn_as_choice_draws_them_from_a_cdf_built_once() -> None:
    """The learner builds the demonstrations' draw distribution once (`draw_cdf`) instead of on
    every minibatch: for the same generator state it draws the very rows
    `Generator.choice(p=...)` draws, braking steps as often as before."""
    from roadsense.rllib.warm_start import draw_cdf, draw_rows

    weight = np.random.default_rng(3).choice([1.0, 25.0, 0.0], size=5_000, p=[0.9, 0.05, 0.05])
    cdf = draw_cdf(weight)
    ours, theirs = np.random.default_rng(7), np.random.default_rng(7)
    for _ in range(20):  # successive minibatches: the generators stay in step
        rows = draw_rows(cdf, ours, 256)
        assert np.array_equal(rows, theirs.choice(len(weight), 256, p=weight / weight.sum()))
        assert (weight[rows] > 0).all()  # a zero-weight row is never drawn
    for bad in (np.zeros(3), np.array([1.0, -1.0, 2.0]), np.ones((2, 2)), np.array([])):
        with pytest.raises(ValueError, match="imitation weights"):
            draw_cdf(bad)
