"""ConvoyEnv against the real SUMO and the real radio emulator."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from roadsense.comms import ReceivedMessages
from roadsense.envs import ENV_ID, ConvoyEnv
from roadsense.envs.baselines import make_baseline
from roadsense.envs.observation import (
    EGO_DIM,
    EGO_SCALE,
    PEER_DIM,
    PEER_SCALE,
    AccelBaseline,
    peer_rows,
    warning_urgencies,
    warning_urgency,
)
from roadsense.errors import ConfigError
from roadsense.sim.scenario import write_convoy

HARD = {"hazard": {"probability": 1.0, "hard_share": 1.0, "to_stop_probability": 0.5}}


def _rollout(env: gym.Env, seed: int, policy=None, options=None) -> dict:
    obs, info = env.reset(seed=seed, options=options)
    if hasattr(policy, "reset"):
        policy.reset()
    trace = {"ego": [obs["ego"]], "peers": [obs["peers"]], "rewards": [], "infos": [info]}
    done = False
    while not done:
        action = policy(obs) if policy else np.zeros(1, np.float32)
        obs, reward, term, trunc, info = env.step(action)
        trace["ego"].append(obs["ego"])
        trace["peers"].append(obs["peers"])
        trace["rewards"].append(reward)
        trace["infos"].append(info)
        done = term or trunc
    return trace


def _same(a: dict, b: dict) -> bool:
    return (len(a["ego"]) == len(b["ego"])
            and all(np.array_equal(x, y) for x, y in zip(a["ego"], b["ego"], strict=True))
            and all(np.array_equal(x, y) for x, y in zip(a["peers"], b["peers"], strict=True))
            and a["rewards"] == b["rewards"]
            and a["infos"][-1] == b["infos"][-1])


@pytest.fixture
def env():
    e = ConvoyEnv(config=HARD)
    yield e
    e.close()


def test_gymnasium_check_env(env: ConvoyEnv) -> None:
    check_env(env, skip_render_check=True)


def test_registered_id_builds_the_env() -> None:
    e = gym.make(ENV_ID, config={"episode_s": 2.0})
    try:
        obs, _ = e.reset(seed=0)
        assert obs["ego"].shape == (EGO_DIM,) and obs["peers"].shape[1] == PEER_DIM
    finally:
        e.close()


def test_same_seed_same_episode_bit_for_bit(env: ConvoyEnv) -> None:
    rule = make_baseline("v2v_rule")
    a = _rollout(env, 21, rule)
    b = _rollout(env, 21, rule)
    c = _rollout(env, 22, rule)
    assert _same(a, b)
    assert not _same(a, c)
    assert a["infos"][0]["seeds"] == b["infos"][0]["seeds"] != c["infos"][0]["seeds"]


def test_fresh_env_same_seed_same_episode() -> None:
    traces = []
    for _ in range(2):
        e = ConvoyEnv(config=HARD)
        traces.append(_rollout(e, 5))
        e.close()
    assert _same(*traces)


def test_peer_rows_only_reorder_when_messages_are_shuffled() -> None:
    rng = np.random.default_rng(0)
    k = 9
    base = ReceivedMessages(sender=np.array([f"V{i:03d}" for i in range(2, k + 2)]),
                            content=rng.normal(size=(6, k)) * 50,
                            send_time_s=rng.normal(size=k) * 50, hops=np.ones(k, dtype=np.int64),
                            arrival_s=np.zeros(k), now_s=100.0)
    perm = rng.permutation(k)
    shuffled = base.take(perm)
    a = peer_rows(1.0, 2.0, 0.3, 20.0, base, 100.0)
    b = peer_rows(1.0, 2.0, 0.3, 20.0, shuffled, 100.0)
    assert np.array_equal(a[perm], b)


def test_accel_baseline_one_reading_at_a_time_matches_the_batch() -> None:
    # The ego's IMU goes through `relative_one`, peers through `relative`: the same means.
    rng = np.random.default_rng(1)
    sources = ["V002", "V003", "ego"]
    batch, single = AccelBaseline(), AccelBaseline()
    for step in range(40):
        t = np.array([step * 0.1 - 0.05 * (step % 3 == 0)] * 3)  # some readings seen again
        a = rng.normal(size=3) * 3.0 + np.array([5.0, -6.0, 0.5])  # offsets beyond the limit
        got = batch.relative(sources, t, a)
        one = [single.relative_one(s, float(ti), float(ai))
               for s, ti, ai in zip(sources, t, a, strict=True)]
        assert got.dtype == np.float64 and got.tolist() == one

@pytest.mark.parametrize("n_peers", [0, 20])
def test_zero_and_twenty_peers(tmp_path: Path, n_peers: int) -> None:
    cfg = write_convoy(tmp_path, n_peers, spacing_m=20.0, speed_mps=10.0)
    e = ConvoyEnv(str(cfg), config={"domain_randomization": False, "episode_s": 5.0})
    try:
        counts = [len(p) for p in _rollout(e, 1)["peers"]]
        obs, info = e.reset(seed=1)
        assert info["peer_count"] == n_peers
        if n_peers == 0:
            assert max(counts) == 0 and info["hazard"] is None
        else:  # close peers are heard, far ones partly (loss grows with distance)
            assert 5 <= max(counts) <= n_peers
        assert e.observation_space.contains(obs)
    finally:
        e.close()


def test_explicit_plan_and_radio_level_are_applied(env: ConvoyEnv) -> None:
    plan = {"rank": 3, "onset_s": 2.0, "decel_mps2": 8.0, "duration_s": 2.0, "to_stop": True}
    trace = _rollout(env, 3, options={"hazard": plan, "radio": {"loss_rate": 0.3}})
    info = trace["infos"][-1]
    assert info["hazard_vehicle"] == "V004"
    assert info["hazard"]["decel_mps2"] == 8.0
    assert info["radio_loss_rate"] == pytest.approx(0.3)
    phases = [i["hazard_phase"] for i in trace["infos"]]
    assert phases[0] == "pending" and "braking" in phases
    # V004 is ~120 m ahead (loss 0.99 there): its own messages are lost, the warning comes
    # from the cars braking behind it, after the onset
    assert info["hazard_msg_rx_s"] is None and info["warning_rx_s"] > 2.0
    # without loss, the direct leader's hard-braking message arrives within a few 10 Hz rounds
    # of its brake
    lead = _rollout(env, 3, options={"hazard": {**plan, "rank": 1},
                                     "radio": {"loss_rate": 0.0}})["infos"]
    braking_from = next(i["time_s"] for i in lead if i["hazard_phase"] == "braking")
    assert lead[-1]["hazard_vehicle"] == "V002"
    assert braking_from <= lead[-1]["hazard_msg_rx_s"] <= braking_from + 0.5
    assert lead[-1]["warning_rx_s"] == lead[-1]["hazard_msg_rx_s"]


def test_braking_on_any_hard_braking_message_during_a_hazard_earns_the_shaping(
        env: ConvoyEnv) -> None:
    """The hazard car five ahead is out of the ego's radio reach at 50% loss, the cars braking
    behind it are not: their messages are the warning (the policy cannot tell senders apart),
    so `hazard_response` pays for braking on them."""
    plan = {"rank": 5, "onset_s": 2.0, "decel_mps2": 8.0, "duration_s": 2.0, "to_stop": True}
    options = {"hazard": plan, "radio": {"loss_rate": 0.5}}
    calm = _rollout(env, 0, options=options)["infos"][-1]
    assert calm["hazard_msg_rx_s"] is None and calm["warning_rx_s"] >= 2.0
    assert calm["reward_terms"]["hazard_response"] == 0.0  # it never braked
    braked = _rollout(env, 0, options=options, policy=lambda obs: np.array(
        [0.6 if (obs["peers"][:, 3] * 5 <= -2.5).any() else 0.0], np.float32))["infos"][-1]
    assert braked["first_brake_s"] >= calm["warning_rx_s"]
    assert braked["reward_terms"]["hazard_response"] > 0.0
    assert braked["reward_terms"]["false_brake"] == 0.0


def test_braking_during_a_hazard_without_a_warning_in_view_earns_no_shaping(
        env: ConvoyEnv) -> None:
    """`hazard_response` pays only while the ego's view holds a warning (or held one within
    WARNING_HOLD_S): braking on anything else the hazard episode shows earns nothing, however
    many warnings came earlier (they once did, and policies learned to brake on cues that
    carried no warning)."""
    plan = {"rank": 2, "onset_s": 2.0, "decel_mps2": 8.0, "duration_s": 2.0, "to_stop": True}
    options = {"hazard": plan, "radio": {"loss_rate": 0.3}}
    seen = {"steps": 0, "since_warning": 10**6}

    def blind(obs: dict) -> np.ndarray:
        """Brakes after the onset, but only while no warning was in view for over 1 s."""
        in_view = ((obs["peers"][:, 0] > 0) & (obs["peers"][:, 3] * 5 <= -2.5)).any()
        seen["since_warning"] = 0 if in_view else seen["since_warning"] + 1
        seen["steps"] += 1
        brake = seen["steps"] > 20 and seen["since_warning"] > 12
        return np.array([0.6 if brake else 0.0], np.float32)

    trace = _rollout(env, 0, options=options, policy=blind)
    info = trace["infos"][-1]
    assert info["warning_rx_s"] is not None  # warnings came, and it braked around them
    in_hazard = [i["hazard_phase"] in ("braking", "holding") and i["brake_steps"] > j["brake_steps"]
                 for i, j in zip(trace["infos"][1:], trace["infos"][:-1], strict=True)]
    assert sum(in_hazard) >= 5
    assert info["reward_terms"]["hazard_response"] == 0.0


def test_no_hazard_episode_and_false_braking(env: ConvoyEnv) -> None:
    obs, info = env.reset(seed=0, options={"hazard": None})
    assert info["hazard"] is None and info["hazard_phase"] == "none"
    for _ in range(20):
        obs, reward, term, trunc, info = env.step(np.array([0.9], np.float32))
    assert info["false_brake"] and info["first_brake_s"] == 0.0
    assert info["brake_steps"] == 20
    assert info["peak_decel_mps2"] == pytest.approx(0.9 * env.config.max_brake_mps2, rel=1e-6)
    # the speed the assist's braking takes off: 20 steps of 0.9 x max brake x 0.1 s
    assert info["brake_dv_mps"] == pytest.approx(20 * 0.09 * env.config.max_brake_mps2,
                                                 rel=1e-6)
    assert info["reward_terms"]["false_brake"] < 0


def test_reward_weights_change_from_the_next_episode(env: ConvoyEnv) -> None:
    def false_brake_term() -> float:
        env.reset(seed=0, options={"hazard": None})
        for _ in range(20):
            *_, info = env.step(np.array([0.9], np.float32))
        return info["reward_terms"]["false_brake"]

    full = false_brake_term()
    env.reset(seed=0, options={"hazard": None})
    env.set_reward_weights(false_brake=env.config.reward.false_brake / 3)
    for _ in range(20):  # the episode under way keeps the weights it started with
        *_, info = env.step(np.array([0.9], np.float32))
    assert info["reward_terms"]["false_brake"] == full
    assert false_brake_term() == pytest.approx(full / 3, rel=1e-9)
    with pytest.raises(ConfigError, match="unknown reward weights \\['false_brak'\\]"):
        env.set_reward_weights(false_brak=1.0)


def test_bad_inputs(env: ConvoyEnv) -> None:
    with pytest.raises(ConfigError, match="unknown reset options"):
        env.reset(seed=0, options={"hazzard": None})
    with pytest.raises(ConfigError, match="rank"):
        env.reset(seed=0, options={"hazard": {"rank": 9, "onset_s": 1, "decel_mps2": 5,
                                              "duration_s": 1, "to_stop": False}})
    with pytest.raises(ConfigError, match="unknown env config keys"):
        ConvoyEnv(config={"episode_len": 3})
    with pytest.raises(ConfigError, match="max_brake_mps2"):
        ConvoyEnv(config={"max_brake_mps2": 50})
    with pytest.raises(ConfigError, match="reward.over_cap must be >= 0"):
        ConvoyEnv(config={"reward": {"over_cap": -1.0}})
    env.reset(seed=0)
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan], np.float32))


@pytest.mark.slow
def test_no_assist_collides_and_v2v_rule_collides_less(env: ConvoyEnv) -> None:
    seeds = range(40)
    crashes = {}
    for name in ("no_assist", "v2v_rule"):
        policy = make_baseline(name)
        crashes[name] = sum(_rollout(env, s, policy)["infos"][-1]["collision"] for s in seeds)
    assert crashes["no_assist"] >= 6, crashes  # real collisions: SUMO's safety is not on
    assert crashes["v2v_rule"] <= crashes["no_assist"] // 3, crashes


def _driver_reaction_step(trace: dict, onset_step: int) -> int:
    """First step after the hazard's onset where the ego decelerates harder than 2 m/s^2."""
    accel = np.array([e[1] for e in trace["ego"]]) * EGO_SCALE[1]
    return onset_step + int(np.argmax(accel[onset_step:] < -2.0))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_a_short_brake_leaves_the_drivers_reaction_schedule_alone(env: ConvoyEnv,
                                                                  seed: int) -> None:
    """The driver decides every 0.5-1.5 s (SUMO's action step). An agent brake of one step
    long before the hazard must not move those decisions: with it the driver reacts to the
    car ahead braking at the very step it reacts without it. (Restarting the schedule at the
    hand-back delayed the driver after any brake: exploration then taught PPO that braking
    on a hazard message causes collisions.)"""
    plan = {"rank": 1, "onset_s": 3.0, "decel_mps2": 8.0, "duration_s": 2.0, "to_stop": True}
    options = {"hazard": plan, "radio": {"loss_rate": 0.0}}
    step = iter(range(10_000))
    pulse = _rollout(env, seed, options=options, policy=lambda obs: np.array(
        [0.3 if next(step) == 3 else 0.0], np.float32))
    plain = _rollout(env, seed, options=options)
    assert pulse["infos"][-1]["first_brake_s"] == pytest.approx(0.3)
    assert plain["infos"][-1]["first_brake_s"] is None
    reaction = _driver_reaction_step(plain, 30)
    assert reaction < len(plain["ego"]) - 1, "the driver should brake for the hazard"
    assert _driver_reaction_step(pulse, 30) == reaction


def test_warning_urgency_is_the_deceleration_that_stops_the_ego_behind_the_peer() -> None:
    """A car 135 m ahead slowing at 3.2 m/s^2 asks ~1.1 m/s^2 of an ego at 21 m/s (not urgent);
    one 23 m ahead braking at 7 asks ~4.5; peers behind, and ones not braking hard, ask
    nothing. The packed form gives the same per step."""
    ego = np.array([21.0, 0.0]) / EGO_SCALE
    far, near, behind, calm = (np.array([[d, 0, 0, a, 0, 0, 0]]) / PEER_SCALE for d, a in
                               ((135, -3.2), (23, -7.0), (-15, -7.5), (10, -1.0)))
    assert warning_urgency(ego, far, 2.5) == pytest.approx(441 / (2 * (135 + 441 / 6.4 - 5)))
    assert warning_urgency(ego, np.concatenate([far, near, calm]), 2.5) == pytest.approx(
        441 / (2 * (23 + 441 / 14 - 5)))
    assert warning_urgency(ego, np.concatenate([behind, calm]), 2.5) == 0.0
    assert warning_urgency(ego, np.zeros((0, 7)), 2.5) == 0.0
    views = [far, np.concatenate([far, near]), np.zeros((0, 7)), behind]
    packed = warning_urgencies(np.stack([ego] * 4), np.concatenate(views),
                               np.array([len(v) for v in views]), 2.5)
    np.testing.assert_allclose(packed, [warning_urgency(ego, v, 2.5) for v in views])


def test_a_warning_that_asks_little_earns_no_shaping(env: ConvoyEnv) -> None:
    """With the urgency bar above anything a hazard can ask, braking on its warnings earns no
    `hazard_response`; at the default bar the same braking does."""
    plan = {"rank": 1, "onset_s": 2.0, "decel_mps2": 8.0, "duration_s": 2.0, "to_stop": True}
    options = {"hazard": plan, "radio": {"loss_rate": 0.0}}

    def on_warning(obs: dict) -> np.ndarray:
        return np.array([0.6 if ((obs["peers"][:, 0] > 0)
                                 & (obs["peers"][:, 3] * 5 <= -2.5)).any() else 0.0], np.float32)

    urgent = _rollout(env, 0, options=options, policy=on_warning)["infos"][-1]
    assert urgent["brake_steps"] > 0 and urgent["reward_terms"]["hazard_response"] > 0.0
    relaxed = ConvoyEnv(config={**HARD, "urgent_warning_mps2": 1000.0, "sumo_backend": "traci"})
    try:
        info = _rollout(relaxed, 0, options=options, policy=on_warning)["infos"][-1]
    finally:
        relaxed.close()
    assert info["brake_steps"] == urgent["brake_steps"]
    assert info["reward_terms"]["hazard_response"] == 0.0
