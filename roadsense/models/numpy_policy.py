"""`NumpyPolicy`: the policy path of a `DeepSets` net (`DeepSets.policy`) in numpy.

For an env runner's forward pass. One vector step is a batch of 1-8 samples with a few dozen
peer rows: the network's ~30 torch calls then cost their dispatch (5-10 us each, more once the
env steps in between have evicted the caches), not their arithmetic, and together they cost
more than the env step they serve. The same arithmetic in numpy takes about a third of that
(~36 vs ~106 us at batch 4 with the default sizes, measured in-process on a loaded 2-core
machine; the training benchmark's lean-loop rows show the effect on sampling).

The parameters are read as numpy views of the net's tensors (no copy), so an in-place update
(`load_state_dict`, an optimizer step) is seen at once; call `refresh()` after parameter
tensors are replaced. Float32 throughout, like the net: outputs agree with torch to ~1e-6
(summation order differs), not bit for bit.

>>> import torch
>>> from roadsense.models import DeepSets
>>> net = DeepSets(ego_dim=3, peer_dim=4, action_dim=2)
>>> ego, peers = np.zeros((2, 3), np.float32), np.ones((5, 4), np.float32)
>>> counts = np.array([3, 2])
>>> out = NumpyPolicy(net)(ego, peers, counts)
>>> index = torch.tensor([0, 0, 0, 1, 1])
>>> ref = net.policy(torch.from_numpy(ego), torch.from_numpy(peers), index).detach().numpy()
>>> bool(np.allclose(out, ref, atol=1e-6))
True
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from torch import nn

from roadsense.models.deepsets import DeepSets


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


_ACTIVATIONS: dict[type[nn.Module], Callable[[np.ndarray], np.ndarray]] = {
    nn.Tanh: np.tanh,
    nn.ReLU: lambda x: np.maximum(x, 0.0),
    nn.SiLU: _silu,
}

Layer = tuple[np.ndarray, np.ndarray, Callable[[np.ndarray], np.ndarray] | None]
"""(weight transposed (in, out), bias (out,), activation or None): one Linear of an MLP."""


def _view(t) -> np.ndarray:
    return t.detach().numpy()


def _layers(mlp: nn.Sequential) -> list[Layer]:
    layers: list[Layer] = []
    for m in mlp:
        if isinstance(m, nn.Linear):
            layers.append((_view(m.weight).T, _view(m.bias), None))
        elif type(m) in _ACTIVATIONS and layers and layers[-1][2] is None:
            w, b, _ = layers[-1]
            layers[-1] = (w, b, _ACTIVATIONS[type(m)])
        else:
            raise TypeError(f"NumpyPolicy cannot mirror {m!r} in {mlp!r}")
    return layers


def _mlp(layers: list[Layer], x: np.ndarray) -> np.ndarray:
    for w, b, act in layers:
        x = x @ w + b
        if act is not None:
            x = act(x)
    return x


class NumpyPolicy:
    """`net.policy(ego, peers, index)` in numpy, with per-sample peer counts for the index.

    Args:
        net: The network to mirror (on the CPU).
    """

    def __init__(self, net: DeepSets) -> None:
        self.net = net
        self.refresh()

    def refresh(self) -> None:
        """Re-read the parameter tensors (needed only when they were replaced, not updated)."""
        enc = self.net.pi_encoder
        self._pooling = enc.pooling
        self._phi = _layers(enc.phi)
        self._rho = _layers(enc.rho)
        self._head = _layers(nn.Sequential(self.net.pi_head))

    def __call__(self, ego: np.ndarray, peers: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Policy output (B, action_dim) for ego (B, E), packed peers (sum counts, F) in sample
        order, and counts (B,)."""
        counts = np.asarray(counts)
        batch = len(counts)
        h = _mlp(self._phi, np.asarray(peers, np.float32))
        filled = counts > 0
        # Rows of the samples that have peers start here; an empty sample owns no rows, so
        # `reduceat` over these starts reduces exactly each filled sample's rows.
        starts = (np.cumsum(counts) - counts)[filled]
        parts = []
        if self._pooling in ("sum", "mean", "sum_max", "mean_max"):
            total = np.zeros((batch, h.shape[1]), np.float32)
            if starts.size:
                total[filled] = np.add.reduceat(h, starts, axis=0)
            if self._pooling.startswith("mean"):
                total /= np.maximum(counts, 1).astype(np.float32)[:, None]
            parts.append(total)
        if self._pooling.endswith("max"):
            top = np.zeros((batch, h.shape[1]), np.float32)
            if starts.size:
                top[filled] = np.maximum.reduceat(h, starts, axis=0)
            parts.append(top)
        c = counts.astype(np.float32)[:, None]
        x = np.concatenate([np.asarray(ego, np.float32), *parts, (c == 0).astype(np.float32),
                            np.log1p(c)], axis=1)
        return _mlp(self._head, _mlp(self._rho, x))
