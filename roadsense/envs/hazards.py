"""Hazards: a car ahead of the ego brakes hard, maybe to a stop, then drives on.

A plan is a plain dict (the shared contract, also used by eval suites):
``{"rank": 1.., "onset_s", "decel_mps2", "duration_s", "to_stop"}`` or None. Rank 1 is the ego's
direct leader, counting every vehicle ahead on the ego's lane.

Braking beyond a car's own `decel` needs SUMO's speed mode 27 (31 without bit 2); with that bit
cleared `setSpeed` jumps at once, so the controller ramps the speed itself every step
(shared/reference/sumo_collisions.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from roadsense import STEP_LENGTH_S
from roadsense.envs.config import HazardConfig
from roadsense.errors import ConfigError
from roadsense.sim import SumoProcess

SPEED_MODE_DEFAULT = 31
SPEED_MODE_NO_DECEL_CAP = 27

PLAN_KEYS = ("rank", "onset_s", "decel_mps2", "duration_s", "to_stop")


def draw_plan(rng: np.random.Generator, n_ahead: int, cfg: HazardConfig) -> dict[str, Any] | None:
    """A random hazard plan for an ego with `n_ahead` cars ahead on its lane (or None)."""
    if n_ahead == 0 or rng.random() >= cfg.probability:
        return None
    decel_range = cfg.hard_decel_mps2 if rng.random() < cfg.hard_share else cfg.mild_decel_mps2
    return {
        "rank": int(rng.integers(1, n_ahead + 1)),
        "onset_s": round(float(rng.uniform(*cfg.onset_s)), 3),
        "decel_mps2": round(float(rng.uniform(*decel_range)), 3),
        "duration_s": round(float(rng.uniform(*cfg.duration_s)), 3),
        "to_stop": bool(rng.random() < cfg.to_stop_probability),
        "hold_s": round(float(rng.uniform(*cfg.stop_hold_s)), 3),
    }


def validate_plan(plan: dict[str, Any]) -> dict[str, Any]:
    """Check a plan given from outside (eval suite, reset options); one message per problem."""
    problems = [f"missing key {k!r}" for k in PLAN_KEYS if k not in plan]
    if not problems:
        if int(plan["rank"]) < 1:
            problems.append(f"rank must be >= 1, got {plan['rank']}")
        if not 0 < float(plan["decel_mps2"]) <= 9.5:
            problems.append(f"decel_mps2 must be in (0, 9.5], got {plan['decel_mps2']}")
        if float(plan["onset_s"]) < 0 or float(plan["duration_s"]) < 0:
            problems.append("onset_s and duration_s must be >= 0")
    if problems:
        raise ConfigError(f"bad hazard plan {plan}: {'; '.join(problems)}",
                          fix=f"give the keys {PLAN_KEYS} with valid values")
    return {"hold_s": 3.0, **plan}


class HazardController:
    """Carries out one plan in one episode. States: pending -> braking -> holding -> resolved."""

    def __init__(self, plan: dict[str, Any] | None, vehicle_id: str | None) -> None:
        self.plan = plan
        self.vehicle_id = vehicle_id
        self.phase = "none" if plan is None or vehicle_id is None else "pending"
        self._speed = 0.0
        self._phase_start = 0.0
        self.resolved_at_s: float | None = None

    @property
    def active(self) -> bool:
        return self.phase in ("braking", "holding")

    def update(self, sim: SumoProcess, t_s: float, speed_now: float | None) -> None:
        """Act for the coming step; `t_s` is episode time, `speed_now` the car's speed."""
        if self.phase in ("none", "resolved"):
            return
        plan, vid = self.plan, self.vehicle_id
        assert plan is not None and vid is not None
        if speed_now is None:  # the car left the simulation
            self.phase, self.resolved_at_s = "resolved", t_s
            return
        if self.phase == "pending":
            if t_s + 1e-9 < plan["onset_s"]:
                return
            self.phase, self._phase_start, self._speed = "braking", t_s, speed_now
            sim.set_speed_mode(vid, SPEED_MODE_NO_DECEL_CAP)
        if self.phase == "braking":
            self._speed = max(0.0, self._speed - plan["decel_mps2"] * STEP_LENGTH_S)
            sim.set_speed(vid, self._speed)
            over = t_s - self._phase_start >= plan["duration_s"] and not plan["to_stop"]
            if self._speed <= 0.0 and plan["to_stop"]:
                self.phase, self._phase_start = "holding", t_s
            elif over:
                self._release(sim, t_s)
        elif self.phase == "holding":
            if t_s - self._phase_start >= plan["hold_s"]:
                self._release(sim, t_s)
            else:
                sim.set_speed(vid, 0.0)

    def _release(self, sim: SumoProcess, t_s: float) -> None:
        assert self.vehicle_id is not None
        sim.set_speed(self.vehicle_id, -1)
        sim.set_speed_mode(self.vehicle_id, SPEED_MODE_DEFAULT)
        self.phase, self.resolved_at_s = "resolved", t_s
