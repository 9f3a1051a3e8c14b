"""Episode metrics from info dicts: ConvoyEnv's keys, missing keys, crashed episodes."""

from __future__ import annotations

import math

import pytest

from roadsense.rllib.callbacks import episode_metrics


def _convoy_infos() -> list[dict]:
    base = {"peer_count": 5, "radio_loss_rate": 0.2, "hazard": {"rank": 2}}
    return [
        {**base, "reward_terms": {"collision": 0.0, "jerk": 0.0}},  # reset info
        {**base, "collision": False, "false_brake": False, "min_gap_m": 12.0,
         "min_ttc_s": math.inf, "hazard_msg_rx_s": None, "first_brake_s": None,
         "peers_held": 3, "reward_terms": {"collision": 0.0, "jerk": -0.5}},
        {**base, "collision": True, "false_brake": False, "min_gap_m": 0.0,
         "min_ttc_s": 0.4, "hazard_msg_rx_s": 2.5, "first_brake_s": 3.0,
         "peers_held": 5, "reward_terms": {"collision": -10.0, "jerk": -0.7}},
    ]


def test_convoy_episode_metrics() -> None:
    m = episode_metrics(_convoy_infos())
    assert m["convoy/collision_rate"] == 1.0
    assert m["convoy/false_brake_rate"] == 0.0
    assert m["convoy/min_gap_m"] == 0.0
    assert m["convoy/min_ttc_s"] == 0.4  # inf is skipped
    assert m["convoy/brake_after_msg_s"] == pytest.approx(0.5)
    assert m["convoy/peer_count_mean"] == 4.0  # peers_held wins over the static peer_count
    assert m["radio/pdr"] == pytest.approx(0.8)
    assert m["reward/collision"] == -10.0 and m["reward/jerk"] == -0.7  # last totals


def test_missing_keys_are_not_logged() -> None:
    m = episode_metrics([{}, {"peer_count": 2}, {"false_brake": True}])
    assert m == {"convoy/false_brake_rate": 1.0, "convoy/peer_count_mean": 2.0}
    assert episode_metrics([{}, {}]) == {}


def test_crashed_episode_counts_only_as_a_crash() -> None:
    infos = _convoy_infos()[:2] + [{"sumo_crashed": True}]
    assert episode_metrics(infos) == {"sumo/crashes": 1.0}
