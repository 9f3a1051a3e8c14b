"""`DeepSetsRLModule`: a thin RLlib adapter over `roadsense.models.DeepSets`.

It reads the observation column in either layout the connectors write (packed on the env
runner, padded with counts on the learner; see `roadsense.rllib.connectors`) and turns it into
packed rows for the model. The action distribution is RLlib's default for the action space
(a diagonal Gaussian for our ``Box(0, 1, (1,))`` brake; RLlib unsquashes and clips it).

Model options come from ``model_config`` (the keys of `DeepSetsConfig`); RLlib's own model keys
(``fcnet_hiddens``, ``vf_share_layers``, ...) are ignored, anything else is an error.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule

from roadsense.errors import ConfigError
from roadsense.models import DeepSets, DeepSetsConfig, packed_from_padded
from roadsense.rllib.connectors import EGO, PEER_COUNT, PEER_INDEX, PEER_PAD, PEER_X, PEERS

INIT_KEYS = {"init_action_mean": None, "init_log_std": None, "free_log_std": False}
"""Module-level model keys: the Gaussian's starting point in RLlib's normalised action space
([-1, 1] maps to the Box). ConvoyEnv starts near "driver only" (mean -1.5 -> brake 0, std
~0.6), so early rollouts explore a little braking instead of braking half the time.
`free_log_std`: one learned std per action dimension instead of one per state. With a
state-dependent std, PPO on ConvoyEnv raised the std in hazard states (std 1.75 when a peer
reports -7 m/s^2) instead of the mean, so the deterministic policy never braked (measured)."""


def _rllib_model_keys() -> set[str]:
    return ({f.name for f in dataclasses.fields(DefaultModelConfig)} | {"vf_share_layers"}
            | set(INIT_KEYS))


def deepsets_config_from(model_config: dict | None) -> DeepSetsConfig:
    """Our `DeepSetsConfig` from RLlib's merged model_config dict (RLlib keys dropped)."""
    ours = set(DeepSetsConfig.__dataclass_fields__)
    model_config = dict(model_config or {})
    unknown = set(model_config) - ours - _rllib_model_keys()
    if unknown:
        raise ConfigError(
            f"model config has unknown keys {sorted(unknown)}", fix=f"use only {sorted(ours)}"
        )
    return DeepSetsConfig.from_dict({k: v for k, v in model_config.items() if k in ours})


def unpack_obs(obs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Observation column (packed or padded layout) -> (ego, packed peers, sample index)."""
    ego, count = obs[EGO], obs[PEER_COUNT].long()
    if PEER_PAD in obs:
        peers, index = packed_from_padded(obs[PEER_PAD], count)
    else:
        peers = obs[PEER_X]
        index = obs.get(PEER_INDEX)
        if index is None:
            index = torch.repeat_interleave(torch.arange(ego.shape[0], device=ego.device), count)
    return ego, peers, index


class DeepSetsRLModule(TorchRLModule, ValueFunctionAPI):
    """PPO actor-critic over ragged peer sets (see module docstring)."""

    def setup(self) -> None:
        space = self.observation_space
        if not (
            isinstance(space, gym.spaces.Dict)
            and EGO in space.spaces
            and isinstance(space.spaces.get(PEERS), gym.spaces.Sequence)
        ):
            raise ConfigError(
                f"DeepSetsRLModule needs Dict(ego=Box, peers=Sequence(Box)), got {space}",
                fix="use an env with the ConvoyEnv observation structure",
            )
        if not isinstance(self.action_space, gym.spaces.Box):
            raise ConfigError(
                f"DeepSetsRLModule needs a Box action space, got {self.action_space}"
            )
        ego_dim = int(space[EGO].shape[0])
        peer_dim = int(space[PEERS].feature_space.shape[0])
        n = int(self.action_space.shape[0])
        mc = self.model_config or {}
        self.free_log_std = bool(mc.get("free_log_std", False))
        # Gaussian: n means, and n log-stds from the net or (free_log_std) one parameter each
        out_dim = n if self.free_log_std else 2 * n
        self.net = DeepSets(ego_dim, peer_dim, out_dim, deepsets_config_from(self.model_config))
        init_std = float(mc["init_log_std"]) if mc.get("init_log_std") is not None else 0.0
        self.log_std = (torch.nn.Parameter(torch.full((n,), init_std))
                        if self.free_log_std else None)
        with torch.no_grad():  # the policy head's bias is [means..., log-stds...]
            if mc.get("init_action_mean") is not None:
                self.net.pi_head.bias[:n] = float(mc["init_action_mean"])
            if not self.free_log_std and mc.get("init_log_std") is not None:
                self.net.pi_head.bias[n:] = init_std

    def _dist_inputs(self, ego: torch.Tensor, peers: torch.Tensor,
                     index: torch.Tensor) -> torch.Tensor:
        out = self.net.policy(ego, peers, index)
        if self.log_std is None:
            return out
        return torch.cat([out, self.log_std.expand(out.shape[0], -1)], dim=1)

    # The net has no dropout or batch norm, so train/eval mode changes nothing; RLlib's
    # wrappers would switch it twice per env step (a recursive walk over every submodule,
    # ~40% of the module's time per step). Skip the switch.
    def forward_inference(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self._forward_inference(batch, **kwargs)

    def forward_exploration(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self._forward_exploration(batch, **kwargs)

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        ego, peers, index = unpack_obs(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: self._dist_inputs(ego, peers, index)}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        ego, peers, index = unpack_obs(batch[Columns.OBS])
        return {
            Columns.ACTION_DIST_INPUTS: self._dist_inputs(ego, peers, index),
            # The value embedding, so PPO's loss does not unpack the batch a second time.
            Columns.EMBEDDINGS: self.net.vf_encoder(ego, peers, index),
        }

    def compute_values(
        self, batch: dict[str, Any], embeddings: torch.Tensor | None = None
    ) -> torch.Tensor:
        if embeddings is None:
            embeddings = self.net.vf_encoder(*unpack_obs(batch[Columns.OBS]))
        return self.net.vf_head(embeddings).squeeze(-1)
