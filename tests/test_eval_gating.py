"""The gating probe: `v2v_rule` brakes only for a hard brake ahead in its lane; a policy that
brakes for every hard brake, or never, fails."""

from __future__ import annotations

import numpy as np
import pytest

from roadsense.envs.baselines import make_baseline
from roadsense.envs.observation import PEER_INDEX, PEER_SCALE
from roadsense.eval.gating import (
    CASES,
    VALIDATION_CASES,
    gating_probe,
    markdown,
    observation,
)


def _any_hard_brake(obs):
    """Brakes for a hard brake anywhere."""
    acc = obs["peers"][:, PEER_INDEX["accel"]] * PEER_SCALE[PEER_INDEX["accel"]]
    return np.array([1.0 if (acc < -3).any() else 0.0], np.float32)


def test_probe_observations_put_the_hard_brake_where_the_case_says() -> None:
    obs = observation(-15.0, 3.0, 25.0)
    peers = obs["peers"].astype(float) * PEER_SCALE
    assert peers.shape[0] == 2
    hard = peers[peers[:, PEER_INDEX["accel"]] < 0][0]
    np.testing.assert_allclose(hard[[PEER_INDEX["long_offset"], PEER_INDEX["lat_offset"],
                                     PEER_INDEX["accel"]]], [-15.0, 3.0, -7.5], rtol=1e-6)
    assert len(observation(float("nan"), float("nan"), 10.0)["peers"]) == 1
    alone = observation(-40.0, 28.0, 25.0, 0.0, True)["peers"].astype(float) * PEER_SCALE
    assert alone.shape[0] == 1  # no calm peer ahead: the one peer is all the view holds
    np.testing.assert_allclose(alone[0, [PEER_INDEX["long_offset"], PEER_INDEX["lat_offset"],
                                         PEER_INDEX["accel"]]], [-40.0, 28.0, 0.0], atol=1e-5)


def _hard_no_brake(cases) -> int:
    """The judged "no brake" cases that hold a hard brake (not the calm peers alone)."""
    return sum(1 for c in cases if c.should_brake is False and c.accel_mps2 < 0
               and c.long_m == c.long_m)


def test_the_rule_passes_and_indiscriminate_policies_fail() -> None:
    rule = gating_probe(make_baseline("v2v_rule"))
    assert rule["passed"] and rule["ahead_braked"] == 1.0 and rule["elsewhere_braked"] == 0.0
    never = gating_probe(make_baseline("no_assist"))
    assert not never["passed"] and never["ahead_braked"] == 0.0

    loose = gating_probe(_any_hard_brake)
    assert not loose["passed"] and loose["ahead_braked"] == 1.0
    assert loose["elsewhere_braked"] == _hard_no_brake(CASES) / sum(
        1 for c in CASES if c.should_brake is False)
    # the cases inside the GPS spread of the ego's lane are reported, not judged
    assert [c["should_brake"] for c in loose["cases"]].count(None) == 2
    assert all(c["braked"] for c in loose["cases"] if c["should_brake"] is None)
    table = markdown({"rule": rule, "loose": loose})
    assert table.count("\n") == len(CASES) + 3 and "| **passed** | | yes | no |" in table


def test_validation_cases_judge_other_places_and_count_failures() -> None:
    # selection asks other places than the report's probe, so the report is not what it tuned
    report = {(c[1], c[2]) for c in CASES}
    assert not report & {(c[1], c[2]) for c in VALIDATION_CASES}
    assert {c[3] for c in VALIDATION_CASES} == {True, False}
    rule = gating_probe(make_baseline("v2v_rule"), cases=VALIDATION_CASES)
    assert rule["passed"] and rule["failed"] == 0 and rule["judged"] == len(VALIDATION_CASES)

    loose = gating_probe(_any_hard_brake, cases=VALIDATION_CASES)  # every hard "no brake"
    assert loose["failed"] == _hard_no_brake(VALIDATION_CASES)
    never = gating_probe(make_baseline("no_assist"), cases=VALIDATION_CASES)
    assert never["failed"] == sum(1 for c in VALIDATION_CASES if c[3] is True)


def test_a_policy_braking_for_calm_cars_behind_or_beside_fails() -> None:
    """The convoys never show a view whose only car is behind or beside the ego; a real drive's
    GPS errors do. A policy that brakes for any car it reads behind it, braking or not, fails
    every "calm peer alone" case behind the ego, in the report and in selection."""
    def brakes_for_a_car_behind(obs):
        long_m = obs["peers"][:, PEER_INDEX["long_offset"]] * PEER_SCALE[PEER_INDEX["long_offset"]]
        return np.array([1.0 if (long_m < 0).any() else 0.0], np.float32)

    for cases in (CASES, VALIDATION_CASES):
        calm = [c for c in cases if c.alone and not c.others]
        calm_behind = [c.name for c in calm if c.long_m < 0]
        assert len(calm_behind) >= 2 and all(c.accel_mps2 == 0.0 for c in calm)
        probe = gating_probe(brakes_for_a_car_behind, cases=cases)
        assert not probe["passed"]
        braked = {c["case"] for c in probe["cases"] if c["braked"]}
        assert set(calm_behind) <= braked
    assert gating_probe(make_baseline("v2v_rule"), cases=CASES)["passed"]


def test_a_policy_that_stops_braking_when_cars_read_behind_fails() -> None:
    """A hard brake ahead in the lane while the other cars read behind and to the side (GPS
    error on a real drive) asks for the same brake: a policy that takes any car behind as a
    reason not to brake fails those cases, in the report and in selection."""
    rule = make_baseline("v2v_rule")

    def rule_unless_a_car_behind(obs):
        rule.reset()
        long_m = obs["peers"][:, PEER_INDEX["long_offset"]] * PEER_SCALE[PEER_INDEX["long_offset"]]
        return np.zeros(1, np.float32) if (long_m < 0).any() else rule(obs)

    for cases in (CASES, VALIDATION_CASES):
        crowded = [c for c in cases if c.others]
        assert crowded and all(c.should_brake and c.alone for c in crowded)
        view = observation(crowded[0].long_m, 0.0, 25.0, alone=True, others=crowded[0].others)
        assert len(view["peers"]) == 1 + len(crowded[0].others)
        probe = gating_probe(rule_unless_a_car_behind, cases=cases)
        failed = {c["case"] for c in probe["cases"] if c["braked"] != c["should_brake"]}
        assert {c.name for c in crowded} <= failed


def test_validation_score_counts_failed_gating_cases() -> None:
    from roadsense.rllib.validation import validation_score

    summary = {"collision_rate": 0.01, "false_brake_rate": 0.02}
    assert validation_score(summary, 0.1) == pytest.approx(0.04 + 0.02 + 0.1)
    assert validation_score(summary, 0.1, 1.0, 1 / 6, 0.1) == pytest.approx(0.16 + 0.1 / 6)
    assert validation_score(summary, None, 1.0, 0.5, 0.0) == pytest.approx(0.06)
    assert validation_score(summary, None, 1.0, 0.5, 0.0, 1.0) == pytest.approx(0.03)


def test_validation_score_weighs_a_collision_above_a_false_brake() -> None:
    """With validation-v3's 156 hazard and 78 calm episodes, 1 collision and 1 false brake
    scores worse than 0 collisions and 2 false brakes."""
    from roadsense.rllib.validation import best_validation, validation_score

    early = {"collision_rate": 1 / 156, "false_brake_rate": 1 / 78}
    late = {"collision_rate": 0.0, "false_brake_rate": 2 / 78}
    assert validation_score(early) > validation_score(late)
    picked = best_validation([{"iteration": 70, "score": validation_score(early)},
                              {"iteration": 657, "score": validation_score(late)}])
    assert picked["iteration"] == 657
    # weighed like a false brake, the early checkpoint wins: the weight decides
    assert validation_score(early, collision_weight=1.0) < validation_score(
        late, collision_weight=1.0)
