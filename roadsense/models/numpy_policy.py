"""`NumpyPolicy`: the policy path of a `DeepSets` net (`DeepSets.policy`) in numpy.

For an env runner's forward pass. One vector step is a batch of 1-8 samples with a few dozen
peer rows: the network's ~30 torch calls then cost their dispatch (5-10 us each, more once the
env steps in between have evicted the caches), not their arithmetic, and together they cost
more than the env step they serve. The same arithmetic in numpy takes about a third of that
(~36 vs ~106 us at batch 4 with the default sizes, measured in-process on a loaded 2-core
machine; the training benchmark's lean-loop rows show the effect on sampling).

The arithmetic is `roadsense.deploy.runtime.deepsets_policy`, the same code that runs an
exported artifact. The parameters are read as numpy views of the net's tensors (no copy), so
an in-place update (`load_state_dict`, an optimizer step) is seen at once; call `refresh()`
after parameter tensors are replaced. Float32 throughout, like the net: outputs agree with
torch to ~1e-6 (summation order differs), not bit for bit.

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

import numpy as np
from torch import nn

from roadsense.deploy.runtime import ACTIVATIONS, Layer, deepsets_policy
from roadsense.models.deepsets import DeepSets

_ACTIVATION_NAMES: dict[type[nn.Module], str] = {nn.Tanh: "tanh", nn.ReLU: "relu",
                                                  nn.SiLU: "silu"}


def _view(t) -> np.ndarray:
    return t.detach().numpy()


def layer_specs(mlp: nn.Sequential) -> list[tuple[np.ndarray, np.ndarray, str | None]]:
    """(weight transposed (in, out), bias, activation name or None) per Linear of `mlp`, the
    weights as views of the tensors (no copy)."""
    layers: list[tuple[np.ndarray, np.ndarray, str | None]] = []
    for m in mlp:
        if isinstance(m, nn.Linear):
            layers.append((_view(m.weight).T, _view(m.bias), None))
        elif type(m) in _ACTIVATION_NAMES and layers and layers[-1][2] is None:
            w, b, _ = layers[-1]
            layers[-1] = (w, b, _ACTIVATION_NAMES[type(m)])
        else:
            raise TypeError(f"NumpyPolicy cannot mirror {m!r} in {mlp!r}")
    return layers


def _layers(mlp: nn.Sequential) -> list[Layer]:
    return [(w, b, ACTIVATIONS[act] if act else None) for w, b, act in layer_specs(mlp)]


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
        return deepsets_policy(self._phi, self._rho, self._head, self._pooling, ego, peers,
                               counts)
