"""Every random choice derives from one base seed through `numpy.random.SeedSequence`.

The identity of the consumer (worker index, vector index, episode number) is part of the
entropy, so two env runners never share a stream, and evaluation runners use a separate
`purpose` so they never collide with training runners.

>>> s = episode_seeds(7, worker_index=1, vector_index=0, episode=3)
>>> s == episode_seeds(7, worker_index=1, vector_index=0, episode=3)
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

_PURPOSES = {"train": 0, "eval": 1, "warm_start": 2}
_MAX_SUMO_SEED = 2**31 - 1  # SUMO parses --seed as a signed 32-bit int


@dataclass(frozen=True)
class EpisodeSeeds:
    """Seeds of one episode, one per random component."""

    scenario: int
    """Which scenario the ScenarioManager picks (training only)."""
    sumo: int
    """SUMO's own `--seed`."""
    radio: int
    """The ESP-NOW emulator's generator."""
    hazards: int
    """Hazard plan and driver-model randomisation."""
    domain: int
    """Per-episode domain randomisation of the radio parameters."""

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _sequence(base_seed: int, *key: int) -> np.random.SeedSequence:
    if base_seed < 0:
        raise ValueError(f"seed must be >= 0, got {base_seed}")
    return np.random.SeedSequence(entropy=int(base_seed), spawn_key=tuple(int(k) for k in key))


def worker_seed(
    base_seed: int, worker_index: int = 0, vector_index: int = 0, purpose: str = "train"
) -> int:
    """The seed an env instance is reset with on its first episode."""
    seq = _sequence(base_seed, _PURPOSES[purpose], worker_index, vector_index)
    return int(seq.generate_state(1, dtype=np.uint32)[0] & _MAX_SUMO_SEED)


def action_seed(base_seed: int, worker_index: int = 0, purpose: str = "train") -> int:
    """The seed of an env runner's own action sampler (`LeanEnvRunner`'s numpy policy path)."""
    seq = _sequence(base_seed, _PURPOSES[purpose], worker_index)  # a key of its own length
    return int(seq.generate_state(1, dtype=np.uint32)[0] & _MAX_SUMO_SEED)


def episode_seeds(
    base_seed: int,
    worker_index: int = 0,
    vector_index: int = 0,
    episode: int = 0,
    purpose: str = "train",
) -> EpisodeSeeds:
    """All seeds of one episode, derived from the base seed and the consumer's identity."""
    seq = _sequence(base_seed, _PURPOSES[purpose], worker_index, vector_index, episode)
    return seeds_from_sequence(seq)


def seeds_from_sequence(seq: np.random.SeedSequence) -> EpisodeSeeds:
    state = seq.generate_state(5, dtype=np.uint32) & _MAX_SUMO_SEED
    return EpisodeSeeds(*(int(v) for v in state))


def seeds_from_rng(rng: np.random.Generator) -> EpisodeSeeds:
    """Episode seeds drawn from an env's `np_random` (gymnasium's way of seeding an episode)."""
    entropy = int(rng.integers(0, 2**63 - 1))
    return seeds_from_sequence(np.random.SeedSequence(entropy))
