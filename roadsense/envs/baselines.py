"""Baseline policies, usable wherever a trained policy is (evaluation compares against them).

A policy is any callable `obs -> action` (action: float32 array of shape (1,)); a policy may
also have `reset()`, called at the start of every episode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from roadsense.envs.observation import PEER_INDEX, PEER_SCALE

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


def v2v_rule() -> V2VRule:
    return V2VRule()


BASELINES: dict[str, Callable[[], Any]] = {
    "no_assist": lambda: no_assist,
    "v2v_rule": v2v_rule,
}


def make_baseline(name: str) -> Policy:
    """A fresh baseline policy by name (`no_assist`, `v2v_rule`)."""
    if name not in BASELINES:
        raise KeyError(f"unknown baseline {name!r}; one of {sorted(BASELINES)}")
    return BASELINES[name]()
