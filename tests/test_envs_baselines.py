"""Baselines: `urgency_brake` brakes as hard as an in-lane warning asks, within its cap, and
holds; baseline settings on the command line reach the constructor or fail with one clear
error; on a real SUMO episode the braking metrics follow the settings."""

from __future__ import annotations

import numpy as np
import pytest

from roadsense.envs.baselines import UrgencyBrake, V2VRule
from roadsense.envs.observation import warning_urgency
from roadsense.errors import ConfigError
from roadsense.eval import load_policy, run_suite, summarize
from roadsense.eval.gating import observation


def _brake(policy, obs) -> float:
    return float(policy(obs)[0])


def test_urgency_brake_follows_the_urgency_within_its_cap() -> None:
    near, far = observation(20.0, 0.0, 25.0), observation(150.0, 0.0, 25.0)
    u_near = warning_urgency(near["ego"], near["peers"], 3.0)
    u_far = warning_urgency(far["ego"], far["peers"], 3.0)
    # a near hard brake asks more than the cap allows, a far one less than urgent
    assert 2.0 * u_near / 8.0 > 0.8 and 2.5 > u_far > 0

    policy = UrgencyBrake(gain=2.0, cap=0.8, urgent_mps2=2.5)
    assert _brake(policy, near) == pytest.approx(0.8)  # capped
    assert _brake(policy, far) == 0.0  # not urgent
    uncapped = UrgencyBrake(gain=2.0, cap=1.0, urgent_mps2=0.0)
    assert _brake(uncapped, far) == pytest.approx(2.0 * u_far / 8.0, rel=1e-5)
    floored = UrgencyBrake(gain=2.0, cap=1.0, floor=0.5, urgent_mps2=0.0)
    assert _brake(floored, far) == pytest.approx(0.5)
    # beside (outside the lane band) or behind: no brake, however hard
    assert _brake(policy, observation(20.0, 25.0, 25.0)) == 0.0
    assert _brake(policy, observation(-20.0, 0.0, 25.0)) == 0.0


def test_urgency_brake_holds_its_last_level_then_releases() -> None:
    near, calm = observation(20.0, 0.0, 25.0), observation(float("nan"), float("nan"), 25.0)
    policy = UrgencyBrake(cap=0.7, hold_s=0.3)
    assert _brake(policy, near) == pytest.approx(0.7)
    assert [_brake(policy, calm) for _ in range(4)] == pytest.approx([0.7, 0.7, 0.7, 0.0])
    assert _brake(policy, near) == pytest.approx(0.7)
    policy.reset()
    assert _brake(policy, calm) == 0.0


def test_baseline_settings_reach_the_constructor() -> None:
    name, rule = load_policy("v2v_rule:brake=0.6, hold_s=2")
    assert name == "v2v_rule:brake=0.6, hold_s=2" and isinstance(rule, V2VRule)
    assert rule.brake == 0.6 and rule.hold_steps == 20
    _, default = load_policy("v2v_rule")
    assert default.brake == 0.8 and default.hold_steps == 10
    _, urgency = load_policy("urgency_brake:gain=3,cap=1,hold_s=0.5")
    assert (urgency.gain, urgency.cap, urgency.hold_steps) == (3.0, 1.0, 5)


@pytest.mark.parametrize(("spec", "message"), [
    ("v2v_rule:brak=0.6", "v2v_rule has no setting 'brak'"),
    ("v2v_rule:brake", "setting 'brake' has no value"),
    ("v2v_rule:brake=lots", "brake='lots' is not a number"),
    ("v2v_rule:brake=1.5", "need 0 < brake <= 1"),
    ("urgency_brake:floor=0.9", "need 0 <= floor <= cap <= 1"),
    ("no_assist:brake=1", "no_assist has no setting 'brake'"),
])
def test_bad_baseline_settings_fail_with_one_clear_error(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_policy(spec)
    assert spec in str(err.value) and "fix:" in str(err.value)


def test_braking_metrics_follow_the_rules_settings_on_real_episodes() -> None:
    """The smoke suite on a real SUMO: a softer rule takes less speed off than the default one,
    its peak deceleration is its own level, and the speed braked off adds up the steps."""
    rows = []
    for spec in ("v2v_rule", "v2v_rule:brake=0.4"):
        name, policy = load_policy(spec)
        rows += run_suite(policy, "smoke", policy_name=name)
    s = summarize(rows)
    hard, soft = s["v2v_rule"], s["v2v_rule:brake=0.4"]
    assert hard["brake_steps_per_hazard_episode"] > 0 and soft["brake_steps_per_hazard_episode"] > 0
    for r in rows:
        level = 0.4 if r["policy"].endswith("0.4") else 0.8
        assert r["peak_decel_mps2"] in (0.0, pytest.approx(level * 8.0))
        assert r["brake_dv_mps"] == pytest.approx(r["brake_steps"] * level * 8.0 * 0.1)
    assert soft["brake_dv_mps_mean"] < hard["brake_dv_mps_mean"]
    assert np.isfinite(hard["min_ttc_s_median"])
