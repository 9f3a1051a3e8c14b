"""Connector pieces that carry ragged peer sets from the env to the module and the learner.

RLlib's default pieces stack observations and so cannot hold sets of different sizes. Our
pieces run first and write the observation column themselves, as one pre-batched chunk per
episode (`add_n_batch_items`); the default `AddObservationsFromEpisodesToBatch` then skips the
column and `BatchIndividualItems` concatenates the chunks instead of stacking them.

Layouts of the observation column the module receives (see `DeepSetsRLModule`):

* env runner (`RaggedObsToModule`), fully packed, no padding at all::

      {"ego": (B, E) float32, "peer_count": (B,) int64, "peer_x": (sum K, F) float32}

* learner (`RaggedObsToLearner`): the learner slices and shuffles minibatches row by row,
  which would hand a packed ``(sum K, F)`` leaf's rows to the wrong samples, so here each
  sample is padded to the largest set *in this train batch* and carries its count::

      {"ego": (B, E) float32, "peer_count": (B,) int64, "peer_pad": (B, Kmax, F) float32}

  The module reads only the first ``peer_count`` slots of each row; padding changes no
  output and no gradient (tests/test_rllib_connectors.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core.columns import Columns

EGO, PEERS = "ego", "peers"
"""Keys of the env observation."""
PEER_COUNT, PEER_X, PEER_PAD = "peer_count", "peer_x", "peer_pad"
"""Keys of the observation column the module receives."""
PEER_INDEX = "peer_index"
"""Optional key of the packed layout: each peer row's sample index (`LeanEnvRunner` adds it,
made in numpy: ~1 us against ~10 us for torch's `arange` + `repeat_interleave` at batch 4, and
far more when torch's thread pool is contended; measured)."""


def peer_dim_of(space: gym.Space) -> int:
    """F, the width of one peer row, from the env's single observation space."""
    return int(space[PEERS].feature_space.shape[0])


def _peer_dim(space: gym.Space | None, sa_episodes: Sequence[Any]) -> int:
    # The learner pipeline may be built without spaces; episodes always carry theirs.
    for candidate in (space, *(getattr(e, "observation_space", None) for e in sa_episodes)):
        if isinstance(candidate, gym.spaces.Dict) and PEERS in candidate.spaces:
            return peer_dim_of(candidate)
    raise ValueError("cannot tell the peer row width: no observation space with a 'peers' key")


def _peers(obs: dict, peer_dim: int) -> np.ndarray:
    # An empty set may arrive as shape (0,) instead of (0, F).
    return np.asarray(obs[PEERS], np.float32).reshape(-1, peer_dim)


def pack_observations(observations: Sequence[dict], peer_dim: int) -> dict[str, np.ndarray]:
    """Env observations -> packed layout (ego, peer_count, peer_x); no padding anywhere.
    Always new arrays, never views of the observations."""
    if len(observations) == 1:  # an env runner with one env, every step: no stacking
        obs = observations[0]
        peers = np.array(obs[PEERS], np.float32).reshape(-1, peer_dim)
        return {EGO: np.array(obs[EGO], np.float32, ndmin=2),
                PEER_COUNT: np.array([len(peers)], np.int64), PEER_X: peers}
    peers = [_peers(o, peer_dim) for o in observations]
    return {
        EGO: np.stack([np.asarray(o[EGO], np.float32) for o in observations]),
        PEER_COUNT: np.array([len(p) for p in peers], np.int64),
        PEER_X: np.concatenate(peers) if peers else np.zeros((0, peer_dim), np.float32),
    }


def pad_observations(
    observations: Sequence[dict], peer_dim: int, kmax: int | None = None
) -> dict[str, np.ndarray]:
    """Env observations -> padded layout (ego, peer_count, peer_pad (B, kmax, F)), zeros beyond
    each count. `kmax` defaults to the largest set among `observations`."""
    peers = [_peers(o, peer_dim) for o in observations]
    counts = np.array([len(p) for p in peers], np.int64)
    width = int(counts.max(initial=0)) if kmax is None else int(kmax)
    if width < counts.max(initial=0):
        raise ValueError(f"kmax={width} is smaller than the largest peer set ({counts.max()})")
    pad = np.zeros((len(peers), width, peer_dim), np.float32)
    for i, p in enumerate(peers):
        pad[i, : len(p)] = p
    return {
        EGO: np.stack([np.asarray(o[EGO], np.float32) for o in observations]),
        PEER_COUNT: counts,
        PEER_PAD: pad,
    }


class RaggedObsToModule(ConnectorV2):
    """Env-to-module piece: each episode's latest observation -> one packed chunk."""

    def __call__(
        self,
        *,
        rl_module: Any,
        batch: dict[str, Any],
        episodes: list[Any],
        explore: bool | None = None,
        shared_data: dict | None = None,
        **kwargs: Any,
    ) -> Any:
        if Columns.OBS in batch:
            return batch
        stepped = list(
            self.single_agent_episode_iterator(episodes, agents_that_stepped_only=True)
        )
        peer_dim = _peer_dim(self.input_observation_space, stepped)
        for sa_episode in stepped:
            chunk = pack_observations([sa_episode.get_observations(-1)], peer_dim)
            self.add_n_batch_items(batch, Columns.OBS, chunk, 1, sa_episode)
        return batch


class RaggedObsToLearner(ConnectorV2):
    """Learner piece: every episode's observations -> padded chunks with one shared Kmax."""

    def __call__(
        self,
        *,
        rl_module: Any,
        batch: dict[str, Any],
        episodes: list[Any],
        explore: bool | None = None,
        shared_data: dict | None = None,
        **kwargs: Any,
    ) -> Any:
        if Columns.OBS in batch:
            return batch
        sa_episodes = list(
            self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False)
        )
        peer_dim = _peer_dim(self.input_observation_space, sa_episodes)
        obs_per_episode = []
        for i, sa_episode in enumerate(sa_episodes):
            # Same unique-id rule as RLlib's AddObservationsFromEpisodesToBatch, so every
            # column lines up per (episode chunk) key.
            if "_" not in sa_episode.id_:
                sa_episode.id_ += "_" + str(i)
            obs_per_episode.append(sa_episode.get_observations(slice(0, len(sa_episode))))
        kmax = max(
            (len(_peers(o, peer_dim)) for obs in obs_per_episode for o in obs), default=0
        )
        for sa_episode, obs in zip(sa_episodes, obs_per_episode, strict=True):
            chunk = pad_observations(obs, peer_dim, kmax)
            self.add_n_batch_items(batch, Columns.OBS, chunk, len(obs), sa_episode)
        return batch


def env_to_module_pieces(env=None, spaces=None, device=None) -> list[ConnectorV2]:
    """For ``config.env_runners(env_to_module_connector=...)``."""
    return [RaggedObsToModule()]


def learner_pieces(input_observation_space=None, input_action_space=None) -> list[ConnectorV2]:
    """For ``config.learners(learner_connector=...)``."""
    return [RaggedObsToLearner()]
