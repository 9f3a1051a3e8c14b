"""The gating probe: `v2v_rule` brakes only for a hard brake ahead in its lane; a policy that
brakes for every hard brake, or never, fails."""

from __future__ import annotations

import numpy as np

from roadsense.envs.baselines import make_baseline
from roadsense.envs.observation import PEER_INDEX, PEER_SCALE
from roadsense.eval.gating import CASES, gating_probe, markdown, observation


def test_probe_observations_put_the_hard_brake_where_the_case_says() -> None:
    obs = observation(-15.0, 3.0, 25.0)
    peers = obs["peers"].astype(float) * PEER_SCALE
    assert peers.shape[0] == 2
    hard = peers[peers[:, PEER_INDEX["accel"]] < 0][0]
    np.testing.assert_allclose(hard[[PEER_INDEX["long_offset"], PEER_INDEX["lat_offset"],
                                     PEER_INDEX["accel"]]], [-15.0, 3.0, -7.5], rtol=1e-6)
    assert len(observation(float("nan"), float("nan"), 10.0)["peers"]) == 1


def test_the_rule_passes_and_indiscriminate_policies_fail() -> None:
    rule = gating_probe(make_baseline("v2v_rule"))
    assert rule["passed"] and rule["ahead_braked"] == 1.0 and rule["elsewhere_braked"] == 0.0
    never = gating_probe(make_baseline("no_assist"))
    assert not never["passed"] and never["ahead_braked"] == 0.0

    def any_hard_brake(obs):  # brakes for a hard brake anywhere
        acc = obs["peers"][:, PEER_INDEX["accel"]] * PEER_SCALE[PEER_INDEX["accel"]]
        return np.array([1.0 if (acc < -3).any() else 0.0], np.float32)

    loose = gating_probe(any_hard_brake)
    assert not loose["passed"] and loose["ahead_braked"] == 1.0
    assert loose["elsewhere_braked"] == sum(
        1 for c in CASES if c[3] is False and c[1] == c[1]) / sum(1 for c in CASES if c[3] is False)
    # the cases inside the GPS spread of the ego's lane are reported, not judged
    assert [c["should_brake"] for c in loose["cases"]].count(None) == 2
    assert all(c["braked"] for c in loose["cases"] if c["should_brake"] is None)
    table = markdown({"rule": rule, "loose": loose})
    assert table.count("\n") == len(CASES) + 3 and "| **passed** | | yes | no |" in table
