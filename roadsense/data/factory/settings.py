"""Generator settings: everything that decides a dataset's content, recorded in its manifest.

Two runs with equal settings (and the same generator version and SUMO) write byte-identical
files, so the settings stored in a manifest are enough to regenerate the dataset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from roadsense.errors import ConfigError

GENERATOR_VERSION = "1.0.0"
"""Bump when a change to the generator changes what it writes for the same settings."""

MAX_PEERS = 12

FAMILY_NAMES = ("highway", "rural", "curved")
"""The road families `families.FAMILIES` defines, in its order."""


@dataclass(frozen=True)
class Ranges:
    """Ranges each scenario's parameters are drawn from (uniform, inclusive)."""

    peer_count: tuple[int, int] = (0, MAX_PEERS)
    """Radio-equipped cars ahead of the ego in its convoy."""
    tau_s: tuple[float, float] = (0.6, 2.0)
    """Krauss tau: the driver's time headway."""
    extra_gap_m: tuple[float, float] = (0.05, 12.0)
    """Spacing added to the equilibrium gap (minGap + tau*v); > 0, SUMO refuses exactly 0."""
    sigma: tuple[float, float] = (0.0, 0.2)
    """Krauss driver imperfection."""
    action_step_s: tuple[float, float] = (0.5, 1.5)
    """Driver update (reaction) interval, rounded to the 0.1 s step."""
    accel_mps2: tuple[float, float] = (2.0, 3.5)
    decel_mps2: tuple[float, float] = (4.5, 4.5)
    """Kept at the contract's 4.5 m/s^2 by default; the env calibrates the ego's emergencyDecel."""
    emergency_decel_mps2: tuple[float, float] = (9.0, 9.0)
    length_m: tuple[float, float] = (4.0, 5.5)
    min_gap_m: tuple[float, float] = (2.0, 3.0)
    speed_factor: tuple[float, float] = (1.0, 1.1)
    """Each follower's maxSpeed as a multiple of the convoy speed (the head keeps 1.0)."""
    background_count: tuple[int, int] = (1, 4)
    """Background cars on the other lanes, when a scenario has any."""
    background_prob: float = 0.5
    """Probability that a multi-lane scenario has background cars on its other lanes."""
    obstacle_ahead_prob: float = 0.25
    """Probability of a background car (no radio) ahead of the convoy head on the ego's lane."""
    obstacle_ahead_prob_alone: float = 0.5
    """The same probability when the ego has no peers (then it is the ego's direct leader)."""
    obstacle_extra_gap_m: tuple[float, float] = (20.0, 150.0)


@dataclass(frozen=True)
class GeneratorSettings:
    """One dataset's recipe."""

    dataset_id: str
    """Folder name and manifest id, e.g. ``default-v1``."""
    seed: int
    """Base seed; scenario i draws from ``SeedSequence(seed, spawn_key=(i,))``."""
    count: int
    """Number of scenarios."""
    split: str = "train"
    """``train`` or ``eval``: ScenarioManager refuses to train on an eval dataset."""
    families: tuple[str, ...] = ("highway", "rural", "curved")
    peer_counts: str = "stratified"
    """``stratified``: scenario i has i mod 13 peers (every count equally often); ``uniform``."""
    ranges: Ranges = field(default_factory=Ranges)

    def __post_init__(self) -> None:
        if not self.dataset_id or "/" in self.dataset_id or self.dataset_id.startswith("."):
            raise ConfigError(f"dataset_id {self.dataset_id!r} must be a plain folder name")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if self.count < 1:
            raise ConfigError(f"count must be >= 1, got {self.count}")
        if self.split not in ("train", "eval"):
            raise ConfigError(f"split must be 'train' or 'eval', got {self.split!r}")
        unknown = [f for f in self.families if f not in FAMILY_NAMES]
        if unknown or not self.families:
            raise ConfigError(
                f"unknown scenario families {unknown}", fix=f"use some of {sorted(FAMILY_NAMES)}"
            )
        if self.peer_counts not in ("stratified", "uniform"):
            raise ConfigError(
                f"peer_counts must be 'stratified' or 'uniform', got {self.peer_counts!r}"
            )
        lo, hi = self.ranges.peer_count
        if not 0 <= lo <= hi <= MAX_PEERS:
            raise ConfigError(
                f"ranges.peer_count {self.ranges.peer_count} must lie in 0..{MAX_PEERS}"
            )
        if self.ranges.extra_gap_m[0] <= 0.01:
            raise ConfigError("ranges.extra_gap_m must start above 0.01 m (SUMO refuses a 0 gap)")

    def to_dict(self) -> dict:
        """JSON form (tuples become lists), as stored in the manifest."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GeneratorSettings:
        """Inverse of `to_dict`; ConfigError naming an unknown field."""
        data = dict(data)
        range_data = data.pop("ranges", {}) or {}
        known = {f.name for f in fields(Ranges)}
        bad = sorted(set(range_data) - known)
        if bad:
            raise ConfigError(f"unknown ranges fields {bad}")
        ranges = Ranges(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in range_data.items()}
        )
        known = {f.name for f in fields(cls)}
        bad = sorted(set(data) - known)
        if bad:
            raise ConfigError(f"unknown generator settings {bad}")
        if "families" in data:
            data["families"] = tuple(data["families"])
        return cls(**data, ranges=ranges)
