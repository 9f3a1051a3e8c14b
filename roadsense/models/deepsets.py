"""Deep Sets policy/value network over a ragged set of peers (plain torch, no Ray).

A sample is an ego feature vector plus a set of 0..K peer rows. Peers travel *packed*: all
peer rows of a batch in one `(total_peers, F)` tensor, plus each row's sample index. Every peer
row goes through `phi` (a per-peer MLP); rows are pooled per sample with `index_add_` (sum/mean)
and `scatter_reduce_` (max), so the result does not depend on peer order nor on which other
samples share the batch. `rho` mixes the pooled vector with the ego features and two set-size
features (an empty-set flag and `log1p(K)`), so an empty set has a well-defined embedding
(pooled vector exactly zero, flag 1) that the heads can tell apart from "peers that cancel out".

>>> import torch
>>> net = DeepSets(ego_dim=3, peer_dim=4, action_dim=2)
>>> ego, peers = torch.zeros(2, 3), torch.zeros(5, 4)
>>> index = torch.tensor([0, 0, 0, 1, 1])
>>> logits, value = net(ego, peers, index)
>>> tuple(logits.shape), tuple(value.shape)
((2, 2), (2,))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from roadsense.errors import ConfigError

POOLINGS = ("mean", "sum", "max", "mean_max", "sum_max")
"""Pooling choices: one reduction, or two concatenated (mean_max: the prototype's best)."""

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "silu": nn.SiLU}


@dataclass(frozen=True)
class DeepSetsConfig:
    """Sizes and choices of the network; `model` dict keys of the RLlib module."""

    phi_hidden: tuple[int, ...] = (64, 64)
    """Per-peer MLP hidden sizes; the last one is the per-peer embedding size."""
    pooling: str = "mean_max"
    """One of POOLINGS."""
    rho_hidden: tuple[int, ...] = (64, 64)
    """MLP over [ego, pooled peers, empty flag, log1p(K)]; the last size is the embedding."""
    activation: str = "tanh"
    """Hidden activation: tanh, relu or silu."""
    shared_encoder: bool = False
    """True: policy and value share phi/rho. False: each head has its own encoder."""

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ConfigError(f"model pooling={self.pooling!r} is unknown", fix=f"use {POOLINGS}")
        if self.activation not in _ACTIVATIONS:
            raise ConfigError(
                f"model activation={self.activation!r} is unknown", fix=f"use {list(_ACTIVATIONS)}"
            )
        for name in ("phi_hidden", "rho_hidden"):
            sizes = getattr(self, name)
            if not sizes or any(int(s) <= 0 for s in sizes):
                raise ConfigError(
                    f"model {name}={sizes!r} is invalid", fix="give a non-empty list of sizes > 0"
                )

    @classmethod
    def from_dict(cls, d: dict | None) -> DeepSetsConfig:
        """Build from a plain dict (e.g. RLlib's `model_config`); unknown keys are an error."""
        d = dict(d or {})
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ConfigError(
                f"unknown Deep Sets model keys {sorted(unknown)}",
                fix=f"use only {sorted(known)}",
            )
        for name in ("phi_hidden", "rho_hidden"):
            if name in d:
                d[name] = tuple(int(s) for s in d[name])
        return cls(**d)

    def as_dict(self) -> dict:
        return asdict(self)


def _mlp(sizes: Sequence[int], activation: str, *, last_activation: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def pool_packed(
    h: torch.Tensor, index: torch.Tensor, batch_size: int, pooling: str
) -> torch.Tensor:
    """Pool packed per-peer rows `h` (N, H) into (batch_size, H or 2H) by sample `index` (N,).

    A sample without rows gets zeros for every reduction.
    """
    width = h.shape[1]
    parts: list[torch.Tensor] = []
    if pooling in ("sum", "mean", "sum_max", "mean_max"):
        total = h.new_zeros(batch_size, width).index_add_(0, index, h)
        if pooling.startswith("mean"):
            count = torch.bincount(index, minlength=batch_size).clamp_(min=1)
            total = total / count.unsqueeze(1).to(h.dtype)
        parts.append(total)
    if pooling.endswith("max"):
        # include_self=False: rows with no peer keep the zero they start with.
        top = h.new_zeros(batch_size, width).scatter_reduce_(
            0, index.unsqueeze(1).expand(-1, width), h, reduce="amax", include_self=False
        )
        parts.append(top)
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def packed_from_padded(
    peer_pad: torch.Tensor, peer_count: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, Kmax, F) padded peers + (B,) counts -> packed (sum K, F) rows and their sample index.

    Slots at or beyond a sample's count are ignored, whatever they hold.
    """
    count = peer_count.long()
    batch, kmax = peer_pad.shape[0], peer_pad.shape[1]
    mask = torch.arange(kmax, device=peer_pad.device).unsqueeze(0) < count.unsqueeze(1)
    index = torch.repeat_interleave(torch.arange(batch, device=peer_pad.device), count)
    return peer_pad[mask], index


class DeepSetsEncoder(nn.Module):
    """phi -> pooling -> rho: (ego (B,E), packed peers (N,F), index (N,)) -> (B, embed_dim)."""

    def __init__(self, ego_dim: int, peer_dim: int, config: DeepSetsConfig):
        super().__init__()
        self.pooling = config.pooling
        self.phi = _mlp([peer_dim, *config.phi_hidden], config.activation)
        pooled = config.phi_hidden[-1] * (2 if "_" in config.pooling else 1)
        self.rho = _mlp([ego_dim + pooled + 2, *config.rho_hidden], config.activation)
        self.embed_dim = config.rho_hidden[-1]

    def forward(self, ego: torch.Tensor, peers: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        batch = ego.shape[0]
        pooled = pool_packed(self.phi(peers), index, batch, self.pooling)
        count = torch.bincount(index, minlength=batch).to(ego.dtype).unsqueeze(1)
        set_size = torch.cat([(count == 0).to(ego.dtype), torch.log1p(count)], dim=1)
        return self.rho(torch.cat([ego, pooled, set_size], dim=1))


class DeepSets(nn.Module):
    """Actor-critic Deep Sets network: policy logits (B, action_dim) and value (B,).

    Args:
        ego_dim: Size E of the ego feature vector.
        peer_dim: Size F of one peer row.
        action_dim: Size of the policy output (e.g. 2 for a 1-D Gaussian's mean and log-std).
        config: Hidden sizes, pooling, activation; defaults to `DeepSetsConfig()`.
    """

    def __init__(
        self, ego_dim: int, peer_dim: int, action_dim: int, config: DeepSetsConfig | None = None
    ):
        super().__init__()
        dims = {"ego_dim": ego_dim, "peer_dim": peer_dim, "action_dim": action_dim}
        for name, value in dims.items():
            if int(value) <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self.config = config or DeepSetsConfig()
        self.ego_dim, self.peer_dim, self.action_dim = int(ego_dim), int(peer_dim), int(action_dim)
        self.pi_encoder = DeepSetsEncoder(self.ego_dim, self.peer_dim, self.config)
        self.vf_encoder = (
            self.pi_encoder
            if self.config.shared_encoder
            else DeepSetsEncoder(self.ego_dim, self.peer_dim, self.config)
        )
        self.pi_head = nn.Linear(self.pi_encoder.embed_dim, self.action_dim)
        self.vf_head = nn.Linear(self.vf_encoder.embed_dim, 1)
        # Small initial policy output: PPO starts near the prior, not at a saturated action.
        nn.init.orthogonal_(self.pi_head.weight, gain=0.01)
        nn.init.zeros_(self.pi_head.bias)

    def policy(self, ego: torch.Tensor, peers: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Policy output (B, action_dim) from packed peers."""
        return self.pi_head(self.pi_encoder(ego, peers, index))

    def value(self, ego: torch.Tensor, peers: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Value estimate (B,) from packed peers."""
        return self.vf_head(self.vf_encoder(ego, peers, index)).squeeze(1)

    def forward(
        self, ego: torch.Tensor, peers: torch.Tensor, index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy output (B, action_dim), value (B,)) from packed peers."""
        return self.policy(ego, peers, index), self.value(ego, peers, index)
