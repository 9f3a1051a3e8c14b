"""Deep Sets: permutation invariance, batch independence, empty sets, padding, gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from roadsense.errors import ConfigError
from roadsense.models import POOLINGS, DeepSets, DeepSetsConfig, packed_from_padded

E, F = 5, 4


def _net(pooling: str = "mean_max", seed: int = 0) -> DeepSets:
    torch.manual_seed(seed)
    return DeepSets(E, F, 2, DeepSetsConfig(pooling=pooling, phi_hidden=(16, 16), rho_hidden=(16,)))


def _sample(rng: np.random.Generator, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    ego = torch.as_tensor(rng.normal(size=(E,)), dtype=torch.float32)
    peers = torch.as_tensor(rng.normal(size=(k, F)), dtype=torch.float32)
    return ego, peers


def _pack(samples: list[tuple[torch.Tensor, torch.Tensor]]):
    ego = torch.stack([s[0] for s in samples])
    peers = torch.cat([s[1] for s in samples])
    index = torch.repeat_interleave(
        torch.arange(len(samples)), torch.tensor([len(s[1]) for s in samples])
    )
    return ego, peers, index


@pytest.mark.parametrize("pooling", POOLINGS)
def test_output_unchanged_under_any_permutation_of_peers(pooling: str) -> None:
    net, rng = _net(pooling), np.random.default_rng(1)
    samples = [_sample(rng, k) for k in (7, 0, 12)]
    base_pi, base_v = net(*_pack(samples))
    for _ in range(5):
        shuffled = [(e, p[torch.as_tensor(rng.permutation(len(p)), dtype=torch.long)])
                    for e, p in samples]
        pi, v = net(*_pack(shuffled))
        torch.testing.assert_close(pi, base_pi, rtol=0, atol=1e-6)
        torch.testing.assert_close(v, base_v, rtol=0, atol=1e-6)
    # Interleaving rows of different samples (packed order) changes nothing either.
    ego, peers, index = _pack(samples)
    order = torch.as_tensor(rng.permutation(len(peers)), dtype=torch.long)
    pi, v = net(ego, peers[order], index[order])
    torch.testing.assert_close(pi, base_pi, rtol=0, atol=1e-6)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_sample_alone_equals_sample_in_mixed_batch(pooling: str) -> None:
    net, rng = _net(pooling), np.random.default_rng(2)
    samples = [_sample(rng, k) for k in (0, 40, 3, 0, 1, 17)]
    pi_batch, v_batch = net(*_pack(samples))
    for i, s in enumerate(samples):
        pi, v = net(*_pack([s]))
        torch.testing.assert_close(pi[0], pi_batch[i], rtol=0, atol=1e-6)
        torch.testing.assert_close(v[0], v_batch[i], rtol=0, atol=1e-6)


def test_empty_set_has_a_defined_embedding_distinct_from_peers() -> None:
    net, rng = _net(), np.random.default_rng(3)
    ego, _ = _sample(rng, 0)
    empty = net(ego[None], torch.zeros(0, F), torch.zeros(0, dtype=torch.long))
    assert all(torch.isfinite(t).all() for t in empty)
    # One all-zero peer is not the same as no peer: the empty-set flag tells them apart.
    one = net(ego[None], torch.zeros(1, F), torch.zeros(1, dtype=torch.long))
    assert not torch.allclose(empty[1], one[1])
    # A whole batch of empty sets works too.
    pi, v = net(torch.zeros(3, E), torch.zeros(0, F), torch.zeros(0, dtype=torch.long))
    assert pi.shape == (3, 2) and v.shape == (3,)


def test_gradients_flow_to_phi_rho_and_heads() -> None:
    net, rng = _net(), np.random.default_rng(4)
    pi, v = net(*_pack([_sample(rng, k) for k in (0, 5, 9)]))
    (pi.sum() + v.sum()).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"
    assert any(n.startswith("pi_encoder.phi") for n, _ in net.named_parameters())


def test_padding_with_garbage_changes_no_output_and_no_gradient() -> None:
    rng = np.random.default_rng(5)
    samples = [_sample(rng, k) for k in (0, 40, 3, 0, 11)]
    kmax = 40
    pad = torch.full((len(samples), kmax, F), 123.0)
    for i, (_, p) in enumerate(samples):
        pad[i, : len(p)] = p
    count = torch.tensor([len(s[1]) for s in samples])

    packed_net, padded_net = _net(seed=9), _net(seed=9)
    ego, peers, index = _pack(samples)
    out_packed = packed_net(ego, peers, index)
    out_padded = padded_net(ego, *packed_from_padded(pad, count))
    for a, b in zip(out_packed, out_padded, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    (out_packed[0].sum() + out_packed[1].sum()).backward()
    (out_padded[0].sum() + out_padded[1].sum()).backward()
    for (name, a), (_, b) in zip(
        packed_net.named_parameters(), padded_net.named_parameters(), strict=True
    ):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0, msg=name)


def test_shared_encoder_has_fewer_parameters_and_same_interface() -> None:
    sep = DeepSets(E, F, 2, DeepSetsConfig(shared_encoder=False))
    shared = DeepSets(E, F, 2, DeepSetsConfig(shared_encoder=True))
    assert sum(p.numel() for p in shared.parameters()) < sum(p.numel() for p in sep.parameters())


@pytest.mark.parametrize(
    "bad", [{"pooling": "median"}, {"phi_hidden": []}, {"activation": "gelu"}, {"width": 3}]
)
def test_bad_model_config_names_the_field(bad: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad))):
        DeepSetsConfig.from_dict(bad)
