"""Baseline policies, usable wherever a trained policy is (evaluation compares against them).

A policy is any callable `obs -> action` (action: float32 array of shape (1,)); a policy may
also have `reset()`, called at the start of every episode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from roadsense.envs.observation import PEER_INDEX, PEER_SCALE, urgency_brake, warning_urgency

Policy = Callable[[dict[str, np.ndarray]], np.ndarray]

_LONG, _LAT, _ACC = PEER_INDEX["long_offset"], PEER_INDEX["lat_offset"], PEER_INDEX["accel"]


def no_assist(obs: dict[str, np.ndarray]) -> np.ndarray:
    """The human driver alone: never brakes on its own."""
    return np.zeros(1, dtype=np.float32)


class V2VRule:
    """Brakes while a received peer ahead, in the ego's lane (within GPS error: +-6 m) and
    within `range_m`, reports deceleration of at least `decel_mps2`; then keeps braking for
    `hold_s` (messages come at 10 Hz and get lost: one missing message must not release it)."""

    def __init__(self, decel_mps2: float = 3.0, range_m: float = 200.0,
                 lane_half_width_m: float = 6.0, brake: float = 0.8, hold_s: float = 1.0,
                 step_s: float = 0.1) -> None:
        if not (0.0 < brake <= 1.0 and hold_s >= 0.0 and range_m > 0.0):
            raise ValueError(f"need 0 < brake <= 1, hold_s >= 0 and range_m > 0, got brake "
                             f"{brake}, hold_s {hold_s}, range_m {range_m}")
        self.decel, self.range_m, self.half_width = decel_mps2, range_m, lane_half_width_m
        self.brake, self.hold_steps = brake, round(hold_s / step_s)
        self._left = 0

    def reset(self) -> None:
        self._left = 0

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        p = obs["peers"]
        if len(p):
            long_m = p[:, _LONG] * PEER_SCALE[_LONG]
            lat_m = p[:, _LAT] * PEER_SCALE[_LAT]
            acc = p[:, _ACC] * PEER_SCALE[_ACC]
            hazard = (long_m > 0) & (long_m < self.range_m) & (np.abs(lat_m) < self.half_width) & (
                acc <= -self.decel)
            if hazard.any():
                self._left = self.hold_steps
        if self._left > 0:
            self._left -= 1
            return np.array([self.brake], dtype=np.float32)
        return np.zeros(1, dtype=np.float32)


class UrgencyBrake:
    """Brakes for a received peer ahead in the ego's lane (within `lane_half_width_m`) that
    reports `decel_mps2` or harder, as hard as the warning asks: `gain` x `warning_urgency`
    (the deceleration the ego needs to stop 5 m behind it) over the full brake's
    `max_brake_mps2`, between `floor` and `cap`, once that urgency reaches `urgent_mps2`;
    then holds the last level for `hold_s`.

    The scripted form of what the warm start imitates (`roadsense.rllib.warm_start`), with its
    knobs exposed, so that the braking trade-off (how early, how hard, how long against the
    time-to-collision kept) can be measured with `roadsense eval` on any suite."""

    def __init__(self, gain: float = 2.0, cap: float = 0.8, floor: float = 0.0,
                 urgent_mps2: float = 2.5, hold_s: float = 0.0, decel_mps2: float = 3.0,
                 lane_half_width_m: float = 6.0, max_brake_mps2: float = 8.0,
                 step_s: float = 0.1) -> None:
        if not (0.0 <= floor <= cap <= 1.0 and gain > 0.0 and hold_s >= 0.0):
            raise ValueError(f"need 0 <= floor <= cap <= 1, gain > 0 and hold_s >= 0, got "
                             f"floor {floor}, cap {cap}, gain {gain}, hold_s {hold_s}")
        self.gain, self.cap, self.floor, self.urgent = gain, cap, floor, urgent_mps2
        self.decel, self.half_width = decel_mps2, lane_half_width_m
        self.max_brake = max_brake_mps2
        self.hold_steps = round(hold_s / step_s)
        self._left, self._level = 0, 0.0

    def reset(self) -> None:
        self._left, self._level = 0, 0.0

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        p = obs["peers"]
        level = 0.0
        if len(p):
            in_lane = p[np.abs(p[:, _LAT] * PEER_SCALE[_LAT]) < self.half_width]
            urgency = warning_urgency(obs["ego"], in_lane, self.decel)
            if urgency > 0 and urgency >= self.urgent:
                level = float(urgency_brake(urgency, self.gain, self.max_brake, self.cap,
                                            self.floor))
        if level > 0:
            self._left, self._level = self.hold_steps, level
        elif self._left > 0:
            self._left -= 1
            level = self._level
        return np.array([level], dtype=np.float32)


BASELINES: dict[str, Callable[..., Any]] = {
    "no_assist": lambda: no_assist,
    "v2v_rule": V2VRule,
    "urgency_brake": UrgencyBrake,
}


def make_baseline(name: str, **params: float) -> Policy:
    """A fresh baseline policy by name (`no_assist`, `v2v_rule`, `urgency_brake`), with
    `params` passed to its constructor (`V2VRule(brake=0.6)`)."""
    if name not in BASELINES:
        raise KeyError(f"unknown baseline {name!r}; one of {sorted(BASELINES)}")
    return BASELINES[name](**params)
