"""Reward terms of `ConvoyEnv`; each is reported separately so training can log it.

| term          | per          | value                                                          |
|---------------|--------------|----------------------------------------------------------------|
| collision     | terminal     | -collision when the ego is in a collision                      |
| unsafe_ttc    | second       | -unsafe_ttc * (1 - ttc / ttc_safe) while ttc < ttc_safe        |
| comfort       | second       | -comfort * (agent deceleration / max deceleration)^2           |
| jerk          | step         | -jerk * abs(change of the brake command)                       |
| false_brake   | second       | -false_brake * brake while there is no reason to brake: no      |
|               |              | hazard braking or just resolved (5 s), and ttc >= ttc_safe     |
| false_brake_onset | onset    | -false_brake_onset each time braking starts while no hazard is |
|               |              | under way or just resolved (5 s), whatever the ttc: the eval's  |
|               |              | false-braking rate counts episodes, not brake-seconds           |
| hazard_response | second     | +hazard_response * min(brake, hazard_response_max_brake)       |
|               |              | while the hazard is braking or just resolved (2 s) and the     |
|               |              | ego's view holds a warning: a peer ahead reporting hard        |
|               |              | braking, now or within the last second                         |
| over_cap      | second       | -over_cap * ((brake - cap) / (1 - cap))^2 while the brake is   |
|               |              | above cap = hazard_response_max_brake (the rule's level)       |
"""

from __future__ import annotations

from roadsense import STEP_LENGTH_S
from roadsense.envs.config import RewardWeights

TERMS = ("collision", "unsafe_ttc", "comfort", "jerk", "false_brake", "false_brake_onset",
         "hazard_response", "over_cap")


class RewardTracker:
    """Computes one step's reward and accumulates every term over the episode."""

    def __init__(self, weights: RewardWeights, max_brake_mps2: float) -> None:
        self.w = weights
        self.max_brake = max_brake_mps2
        self.terms = dict.fromkeys(TERMS, 0.0)
        self._prev_brake = 0.0

    def step(self, *, brake: float, ttc_s: float, collision: bool, justified: bool,
             warned: bool = False) -> float:
        """`brake` in [0, 1] (0 when the driver drives); `justified`: a hazard is under way;
        `warned`: the hazard is on and a hard-braking message has reached the ego."""
        w, dt = self.w, STEP_LENGTH_S
        unsafe = ttc_s < w.ttc_safe_s
        r_collision = -w.collision if collision else 0.0
        r_ttc = -w.unsafe_ttc * (1.0 - ttc_s / w.ttc_safe_s) * dt if unsafe else 0.0
        r_comfort = -w.comfort * brake * brake * dt
        r_jerk = -w.jerk * abs(brake - self._prev_brake)
        r_false = -w.false_brake * brake * dt if brake and not (justified or unsafe) else 0.0
        r_onset = -w.false_brake_onset if brake and not self._prev_brake and not justified \
            else 0.0
        cap = w.hazard_response_max_brake
        r_resp = w.hazard_response * min(brake, cap) * dt if warned else 0.0
        r_over = -w.over_cap * ((brake - cap) / (1.0 - cap)) ** 2 * dt if brake > cap else 0.0
        self._prev_brake = brake
        t = self.terms
        t["collision"] += r_collision
        t["unsafe_ttc"] += r_ttc
        t["comfort"] += r_comfort
        t["jerk"] += r_jerk
        t["false_brake"] += r_false
        t["false_brake_onset"] += r_onset
        t["hazard_response"] += r_resp
        t["over_cap"] += r_over
        return r_collision + r_ttc + r_comfort + r_jerk + r_false + r_onset + r_resp + r_over
