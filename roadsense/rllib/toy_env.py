"""A tiny ragged-observation env for checking the RLlib pipeline without SUMO.

Gym id ``roadsense/ToyRagged-v0`` (registered when this module is imported).

Description:
    Each step shows the agent a random set of 0..`max_peers` peers. In about half of the steps
    that have at least one peer, one peer is a "hazard": its feature 0 lies above `threshold`
    while every other peer's feature 0 lies below it. The right action is to brake fully
    (1.0) when a hazard peer is present and not at all (0.0) otherwise, so the optimal policy
    must look at the whole set; the peer count alone says little. A pipeline that mixes peers
    across samples is visibly worse than one that keeps them apart.

Observation: ``Dict(ego=Box(3,), peers=Sequence(Box(4,), stack=True))`` (float32)
    | part  | col | meaning                                                   |
    |-------|-----|-----------------------------------------------------------|
    | ego   | 0   | 1.0 (bias)                                                 |
    | ego   | 1   | noise, N(0, 1)                                             |
    | ego   | 2   | the observation's tag (see `tag_observations`), else 0     |
    | peers | 0   | hazard feature in [0, 1)                                   |
    | peers | 1-2 | noise, N(0, 1)                                             |
    | peers | 3   | the observation's tag (see `tag_observations`), else 0     |

Action: ``Box(0, 1, (1,))`` brake fraction.

Reward: ``1 - |action - target|`` per step (target 1 with a hazard, else 0); random ~0.5,
    optimal 1.0 per step.

Episode end: never terminates; truncated after `episode_len` steps.

Arguments (keyword, all optional):
    max_peers (20), threshold (0.8), episode_len (20), tag_observations (False): write a
    random integer tag shared by the ego row and all peer rows of one observation (for
    pipeline-integrity tests), peer_counts (None): a list of peer counts to cycle through
    instead of random counts, crash_at_step (None): raise `SumoCrashedError` on this
    instance's n-th `step()` call (simulates a SUMO that dies mid-episode), crash_at_reset
    (None): the same on the n-th `reset()` call.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from roadsense.errors import SumoCrashedError

TOY_ENV_ID = "roadsense/ToyRagged-v0"
EGO_DIM, PEER_DIM = 3, 4
_TAG_RANGE = 2**24  # exact in float32


class ToyRaggedEnv(gym.Env):
    """Brake iff a peer in the set is a hazard (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        *,
        max_peers: int = 20,
        threshold: float = 0.8,
        episode_len: int = 20,
        tag_observations: bool = False,
        peer_counts: list[int] | None = None,
        crash_at_step: int | None = None,
        crash_at_reset: int | None = None,
    ):
        if max_peers < 0 or episode_len < 1 or not 0.0 < threshold < 1.0:
            raise ValueError(
                f"bad toy env arguments: max_peers={max_peers} (>= 0), "
                f"episode_len={episode_len} (>= 1), threshold={threshold} (in (0, 1))"
            )
        self.max_peers, self.threshold, self.episode_len = max_peers, threshold, episode_len
        self.tag_observations = tag_observations
        self.peer_counts = list(peer_counts) if peer_counts else None
        self.crash_at_step, self.crash_at_reset = crash_at_step, crash_at_reset
        self.observation_space = spaces.Dict(
            {
                "ego": spaces.Box(-np.inf, np.inf, (EGO_DIM,), np.float32),
                "peers": spaces.Sequence(
                    spaces.Box(-np.inf, np.inf, (PEER_DIM,), np.float32), stack=True
                ),
            }
        )
        self.action_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self._t = 0
        self._reward_total = 0.0
        self._hazard = False
        self._steps_total = 0
        self._resets_total = 0
        self._obs_count = 0

    def _observe(self) -> dict[str, np.ndarray]:
        rng = self.np_random
        if self.peer_counts:
            k = self.peer_counts[self._obs_count % len(self.peer_counts)]
        else:
            k = int(rng.integers(0, self.max_peers + 1))
        self._obs_count += 1
        peers = np.zeros((k, PEER_DIM), np.float32)
        peers[:, 0] = rng.uniform(0.0, self.threshold - 0.05, size=k)
        peers[:, 1:3] = rng.normal(size=(k, 2))
        self._hazard = bool(k > 0 and rng.random() < 0.5)
        if self._hazard:
            peers[int(rng.integers(0, k)), 0] = rng.uniform(self.threshold + 0.05, 1.0)
        ego = np.array([1.0, rng.normal(), 0.0], np.float32)
        if self.tag_observations:
            tag = float(rng.integers(1, _TAG_RANGE))
            ego[2] = tag
            peers[:, 3] = tag
        return {"ego": ego, "peers": peers}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._resets_total += 1
        if self.crash_at_reset is not None and self._resets_total == self.crash_at_reset:
            raise SumoCrashedError(f"toy env: simulated crash at reset #{self._resets_total}")
        self._t = 0
        self._reward_total = 0.0
        obs = self._observe()
        return obs, {"peer_count": len(obs["peers"]), "hazard_now": self._hazard}

    def step(self, action):
        self._steps_total += 1
        if self.crash_at_step is not None and self._steps_total == self.crash_at_step:
            raise SumoCrashedError(f"toy env: simulated crash at step #{self._steps_total}")
        brake = float(np.clip(np.asarray(action, np.float64).reshape(-1)[0], 0.0, 1.0))
        target = 1.0 if self._hazard else 0.0
        reward = 1.0 - abs(brake - target)
        self._reward_total += reward
        false_brake = (not self._hazard) and brake > 0.5
        self._t += 1
        obs = self._observe()
        info = {
            "peer_count": len(obs["peers"]),
            "hazard_now": self._hazard,
            "collision": False,
            "false_brake": false_brake,
            "reward_terms": {"match": self._reward_total},  # episode totals, like ConvoyEnv
        }
        return obs, reward, False, self._t >= self.episode_len, info


def optimal_action(obs: dict[str, np.ndarray], threshold: float = 0.8) -> float:
    """The action with the highest reward: 1.0 iff some peer's feature 0 exceeds `threshold`."""
    peers = obs["peers"]
    return float(len(peers) > 0 and peers[:, 0].max() > threshold)


if TOY_ENV_ID not in gym.registry:
    gym.register(TOY_ENV_ID, entry_point=ToyRaggedEnv, disable_env_checker=True)
