"""`NumpyPolicy` computes what `DeepSets.policy` computes, for every pooling and activation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from roadsense.deploy import runtime
from roadsense.models import POOLINGS, DeepSets, DeepSetsConfig, NumpyPolicy

E, F = 3, 7


def _net(pooling: str, activation: str, seed: int = 0) -> DeepSets:
    torch.manual_seed(seed)
    net = DeepSets(E, F, 2, DeepSetsConfig(pooling=pooling, activation=activation,
                                           phi_hidden=(32, 16), rho_hidden=(24, 8)))
    with torch.no_grad():  # the policy head starts near zero (gain 0.01): make it matter
        net.pi_head.weight.normal_()
        net.pi_head.bias.normal_()
    return net


def _torch_policy(net: DeepSets, ego: np.ndarray, peers: np.ndarray,
                  counts: np.ndarray) -> np.ndarray:
    index = torch.repeat_interleave(torch.arange(len(counts)), torch.as_tensor(counts))
    with torch.no_grad():
        return net.policy(torch.from_numpy(ego), torch.from_numpy(peers), index).numpy()


BATCHES = [(0, 3, 40, 0, 1, 12), (0,), (0, 0, 0), (5,), (40,), (1, 1, 2, 0, 7, 0, 0, 3)]


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("activation", ["tanh", "relu", "silu"])
def test_numpy_policy_matches_the_torch_policy(pooling: str, activation: str) -> None:
    net = _net(pooling, activation)
    mirror = NumpyPolicy(net)
    rng = np.random.default_rng(0)
    for counts in BATCHES:
        counts = np.array(counts, np.int64)
        ego = rng.normal(size=(len(counts), E)).astype(np.float32)
        peers = rng.normal(size=(int(counts.sum()), F)).astype(np.float32) * 2
        ours = mirror(ego, peers, counts)
        assert ours.dtype == np.float32 and ours.shape == (len(counts), 2)
        np.testing.assert_allclose(ours, _torch_policy(net, ego, peers, counts),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_one_sample_pools_as_the_batch_path_does_bit_for_bit(pooling: str) -> None:
    """A batch of one (an env runner with one env, a car) takes constant segment arithmetic;
    its pooled row is exactly that sample's row in a batch (beside samples with and without
    peers, and in a batch where every sample has peers), for 0 to 40 peers. (The matrix
    products themselves may round differently at another batch size, in numpy as in torch: a
    seed's episodes are the same for the same runner layout.)"""
    rng = np.random.default_rng(1)
    for k in (0, 1, 2, 3, 5, 8, 13, 40):
        for neighbours in ((3, 0, 2), (4, 1)):
            counts = np.array([neighbours[0], k, *neighbours[1:]], np.int64)
            h = rng.normal(size=(int(counts.sum()), 16)).astype(np.float32)
            first = neighbours[0]
            one = runtime._pool(h[first:first + k], np.array([k], np.int64), pooling)
            batch = runtime._pool(h, counts, pooling)
            for got, want in zip(one, batch, strict=True):
                assert got.dtype == want.dtype == np.float32
                assert got.shape == (1, 16) and want.shape == (len(counts), 16)
                np.testing.assert_array_equal(got[0], want[1])
                if k == 0:
                    assert not got.any()


def test_numpy_policy_follows_in_place_weight_updates() -> None:
    net, other = _net("mean_max", "tanh", seed=0), _net("mean_max", "tanh", seed=1)
    mirror = NumpyPolicy(net)
    ego = np.ones((2, E), np.float32)
    peers = np.linspace(-1, 1, 3 * F, dtype=np.float32).reshape(3, F)
    counts = np.array([1, 2])
    before = mirror(ego, peers, counts)
    net.load_state_dict(other.state_dict())  # RLlib's weight sync copies in place
    after = mirror(ego, peers, counts)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, _torch_policy(other, ego, peers, counts), rtol=1e-5,
                               atol=1e-5)


def test_numpy_policy_refuses_a_layer_it_cannot_mirror() -> None:
    net = _net("mean", "tanh")
    net.pi_encoder.phi.append(torch.nn.Dropout(0.1))
    with pytest.raises(TypeError, match="Dropout"):
        NumpyPolicy(net)
