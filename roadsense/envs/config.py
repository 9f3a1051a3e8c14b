"""`EnvConfig`: every knob of `ConvoyEnv`, with its unit and why it has its default."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from roadsense import STEP_LENGTH_S
from roadsense.errors import ConfigError


@dataclass(frozen=True)
class HazardConfig:
    """How hazards are drawn when an episode does not bring its own plan."""

    probability: float = 0.8
    """Share of episodes with a hazard; the rest measure false braking."""
    onset_s: tuple[float, float] = (3.0, 10.0)
    """Onset window, seconds after the episode starts."""
    mild_decel_mps2: tuple[float, float] = (2.5, 5.0)
    """Real hard braking was mostly 2.5-5 m/s^2 (field recordings)."""
    hard_decel_mps2: tuple[float, float] = (5.0, 9.0)
    """Emergency braking up to ~9 m/s^2."""
    hard_share: float = 0.5
    """Share of hazards drawn from the hard range."""
    duration_s: tuple[float, float] = (0.5, 3.0)
    """How long the braking lasts when it does not go to a stop."""
    to_stop_probability: float = 0.3
    """Share of hazards that brake to a full stop."""
    stop_hold_s: tuple[float, float] = (1.0, 5.0)
    """How long a stopped hazard car waits before it drives on (the hazard resolves)."""


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the reward terms (each term is reported in info["reward_terms"])."""

    collision: float = 50.0
    """Terminal penalty when the ego is in a collision. It must dominate: at 10, braking on a
    hazard message paid back little more than its comfort cost on standard-v1 (measured), and
    PPO learned only to never brake."""
    unsafe_ttc: float = 1.0
    """Per second, scaled by how far time-to-collision is below `ttc_safe_s`."""
    comfort: float = 0.1
    """Per second, on (agent deceleration / max)^2."""
    jerk: float = 0.01
    """Per step, on |change of the brake command|. Small enough that a one-step exploratory
    brake of b on a hazard warning nets a gain (`hazard_response` x b x 0.1 s = 0.1 b against
    2 x 0.01 b of jerk, on and off): at 0.05 the two cancelled, so exploration carried no
    reward for braking on warnings and PPO learned only that braking costs
    (docs/experiments.md)."""
    false_brake: float = 3.0
    """Per second, on the brake command while there is no reason to brake. At 1.0 braking when
    nothing happens is cheap enough that policies brake lightly on roads they never saw (4-11
    of the 78 `no-hazard-v1` episodes); at 3.0 they stay clear of the threshold
    (docs/experiments.md). `roadsense train --false-brake-start` can start it lower and raise
    it part-way through the learning-rate decay."""
    false_brake_onset: float = 1.0
    """Once per start of braking while no hazard is under way (unsafe ttc is no excuse here),
    matching how evaluation counts false braking (any braking in a no-hazard episode). Without
    it a warm-started policy drifts into light hedging brakes (0.05-0.5 of full) when it holds a
    single calm peer's message; from scratch it slows learning to brake on hazards, which the
    warm start now provides (docs/experiments.md)."""
    hazard_response: float = 1.0
    """Per second, on the brake command while a hazard is under way and the ego's view holds
    a message from a car ahead reporting hard braking (`hazard_msg_decel_mps2`) that is urgent
    (`EnvConfig.urgent_warning_mps2`), or held one
    within `convoy_env.WARNING_HOLD_S`: shaping gated by ground truth, because single-step
    exploration noise alone does not teach a sustained brake. It pays only on what the view
    holds, so that no other cue of a hazard episode is rewarded; at 2.0 policies brake on calm
    roads with one peer in view (docs/experiments.md)."""
    hazard_response_max_brake: float = 0.8
    """`hazard_response` pays on the brake command up to this level (of the full brake) and
    not beyond. Paid on the whole command, the shaping outweighs the comfort cost at every
    level (1 - 0.2 b > 0 per second), so PPO pushes every warned brake to the full brake,
    above the level the imitation asks (`TrainSettings.warm_start_brake_cap`, also 0.8), and
    a policy's mean peak deceleration on validation climbs past the rule's as PPO runs
    (docs/experiments.md). `over_cap` charges for braking above the same level. Paying only up
    to what each warning asks (2 x its urgency / the full brake) instead leaves that mean peak
    where it is: the policies still brake to about this level in most hazard episodes they
    brake in (docs/experiments.md)."""
    over_cap: float = 1.0
    """Per second, on the square of the brake command's excess over `hazard_response_max_brake`
    as a share of the range above it (1.0 at the full brake, 0.25 halfway): the assist brakes at
    most at the rule's level and leaves a harder stop to the driver, unless a collision (50) is
    at stake. Squared, like the comfort cost, so it has no slope at the cap and does not push a
    noisy policy's mean below it. With the shaping capped alone, nothing but the comfort cost
    (0.036 per second more at 1.0 than at 0.8) holds PPO back from buying time-to-collision
    with harder brakes: the trained policies' peak brake went above the cap in 19-71 of the
    ~117 validation hazard episodes they braked in, up to 0.94 of the full brake
    (docs/experiments.md). 0: no such cost."""
    ttc_safe_s: float = 3.0
    """Below this time-to-collision the situation counts as unsafe (and braking as justified)."""


@dataclass(frozen=True)
class EnvConfig:
    """Configuration of `ConvoyEnv`. All fields are plain values so it round-trips via dicts."""

    episode_s: float = 25.0
    """Time limit (truncation), seconds after warm-up."""
    warmup_s: float = 1.5
    """Driven before the first observation; every car gets its own driver phase in it."""
    max_brake_mps2: float = 8.0
    """Deceleration at action 1.0."""
    brake_threshold: float = 0.05
    """Actions at or below it leave the driver model in control."""
    ego_emergency_decel_mps2: float = 4.5
    """The calibration knob: the ego driver's braking reserve (others keep 9)."""
    hazard: HazardConfig = field(default_factory=HazardConfig)
    reward: RewardWeights = field(default_factory=RewardWeights)
    emulator_params: str | None = None
    """Radio parameter file (None: the packaged, calibrated one)."""
    relay_hops: int = 0
    """Multi-hop relay (0 = off, 2-3 hops)."""
    domain_randomization: bool = True
    """Per-episode radio randomisation within the measured ranges (training); off for eval."""
    hazard_msg_decel_mps2: float = 2.5
    """A message counts as "reporting hard braking" at or below minus this acceleration."""
    urgent_warning_mps2: float = 2.5
    """A warning is urgent when it asks the ego to brake at this or harder (`warning_urgency`:
    to stop behind the warning peer if it braked on to a stop). `hazard_response` pays only
    while the view holds an urgent warning, and the warm start imitates brakes only on those:
    calm validation roads show distant cars slowing that ask at most 1.5 m/s^2, while 90% of
    the hazard episodes with a warning ask 1.7 or more, and most over 2.5 (`v2v_rule`'s
    training demonstrations)."""
    sumo_backend: str = "auto"
    """libsumo (in-process, fastest, one per process), traci (TCP), or auto: libsumo for the
    first env of a process (vector index 0), traci for the others, so one RLlib env runner can
    step several envs and share one batched forward pass."""

    @property
    def warmup_steps(self) -> int:
        """Steps of `warmup_s` (at least one)."""
        return max(1, round(self.warmup_s / STEP_LENGTH_S))

    def __post_init__(self) -> None:
        problems = []
        if self.episode_s <= 0:
            problems.append(f"episode_s must be > 0, got {self.episode_s}")
        if not 0 < self.max_brake_mps2 <= 9.0:
            problems.append(f"max_brake_mps2 must be in (0, 9], got {self.max_brake_mps2}")
        if not (math.isfinite(self.urgent_warning_mps2) and self.urgent_warning_mps2 >= 0):
            problems.append(f"urgent_warning_mps2 must be >= 0, got {self.urgent_warning_mps2}")
        if not 0 <= self.brake_threshold < 1:
            problems.append(f"brake_threshold must be in [0, 1), got {self.brake_threshold}")
        if not 0 < self.reward.hazard_response_max_brake <= 1:
            problems.append(f"reward.hazard_response_max_brake must be in (0, 1], got "
                            f"{self.reward.hazard_response_max_brake}")
        if not (math.isfinite(self.reward.over_cap) and self.reward.over_cap >= 0):
            problems.append(f"reward.over_cap must be >= 0, got {self.reward.over_cap}")
        if self.sumo_backend not in ("auto", "libsumo", "traci"):
            problems.append(f"sumo_backend must be auto, libsumo or traci, got "
                            f"{self.sumo_backend!r}")
        if self.relay_hops not in (0, 1, 2, 3):
            problems.append(f"relay_hops must be 0-3, got {self.relay_hops}")
        h = self.hazard
        for name in ("onset_s", "mild_decel_mps2", "hard_decel_mps2", "duration_s",
                     "stop_hold_s"):
            lo, hi = getattr(h, name)
            if lo > hi or lo < 0:
                problems.append(f"hazard.{name} must be a range 0 <= min <= max, got {(lo, hi)}")
        for name in ("probability", "hard_share", "to_stop_probability"):
            if not 0 <= getattr(h, name) <= 1:
                problems.append(f"hazard.{name} must be in [0, 1], got {getattr(h, name)}")
        if problems:
            raise ConfigError("; ".join(problems), fix="correct the env config values")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> EnvConfig:
        """Build from a (possibly nested, possibly partial) dict; unknown keys are errors."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown env config keys {unknown}",
                              fix=f"use some of {sorted(known)}")
        if isinstance(data.get("hazard"), dict):
            data["hazard"] = _sub(HazardConfig, data["hazard"], "hazard")
        if isinstance(data.get("reward"), dict):
            data["reward"] = _sub(RewardWeights, data["reward"], "reward")
        return cls(**data)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sub(kind: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {where} keys {unknown}", fix=f"use some of {sorted(known)}")
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
