"""Learner-side speed: the PPO updates of one training iteration, on the CPU and on CUDA.

What RLlib's learner computes per iteration with `roadsense train`'s batch sizes at 10 epochs
(twice the default `--num-epochs`, so twice a default iteration's updates): 4,000 samples, 10
epochs of minibatches of 256, each the policy and value paths of the Deep Sets network over a
ragged minibatch (packed peer rows, 0-12 peers per sample like the training scenarios, cut from
the packed batch with index arithmetic, as the ragged path needs), PPO's clipped surrogate and
clipped value loss, backward, gradient clipping and a fused Adam step (as the learner of
`roadsense train` runs it). Plain torch on the very `DeepSets` the RLModule wraps (no Ray, no
SUMO), so it also runs on a machine with a GPU but without the rest of the stack, to decide
whether a GPU learner pays.

Not included: RLlib's learner connectors (episodes to batch, GAE), its metrics and the weight
sync to the env runners: CPU work a GPU does not speed up. So the CUDA row is an upper bound on
what a GPU learner could save.

Rows (each measured in this run): the update of one iteration at minibatches of 256 (what
`roadsense train` uses), 500, 1,000, 2,000 and 4,000 (the whole batch at once), CUDA vs CPU
(ratio = CPU time / CUDA time; without CUDA the CUDA cells are empty), and the break-even
minibatch: the smallest of those sizes from which on CUDA is not slower than the CPU (empty
without CUDA). Before timing, the CUDA network is checked against the CPU one on the same
minibatch (outputs and gradients to 1e-4).

Padding rows: `roadsense train`'s learner connector pads the peers of the whole train batch
to its largest set (`RaggedObsToLearner`), RLlib cuts minibatches from it, and the module packs
each minibatch back to ragged rows (`packed_from_padded`) before the network. The same
iteration's updates (plus the value pass over the whole batch that GAE needs) on 0-12 and
0-50 peers per sample, with minibatches (a) packed (the baseline), (b) cut from the
batch-wide padding (what the learner does), (c) padded to their own largest set (minibatch-
local padding); ratio = (b) / (a), and (b) / (c) in the metric's text.

On an NVIDIA H200 machine (16 CPU cores) minibatch 256 runs at about the same speed on CUDA
and CPU (160 small updates are bound by kernel launches, not arithmetic) and minibatch 4,000
about 4x faster on CUDA (figures: README), so `roadsense train` keeps its learner on the CPU
(docs/cloud.md).
"""

from __future__ import annotations

import statistics
import time

import torch

from roadsense.models import DeepSets, DeepSetsConfig
from roadsense.models.deepsets import packed_from_padded

SAMPLES, EPOCHS = 4000, 10
EGO_DIM, PEER_DIM, ACTION_DIM = 3, 7, 1  # ConvoyEnv's observation and action
MAX_PEERS = 12
MINIBATCHES = (256, 500, 1000, 2000, SAMPLES)
"""Minibatch sizes timed on the CPU and on CUDA (ascending): `roadsense train`'s 256 up to the
whole batch, to find where a GPU learner starts to pay."""
CLIP, VF_CLIP, VF_COEFF, GRAD_CLIP = 0.2, 10.0, 1.0, 40.0  # RLlib's PPO defaults, our clip


def _batch(device: torch.device, max_peers: int = MAX_PEERS) -> dict[str, torch.Tensor]:
    """One iteration's samples (random, fixed seed): ego, packed peers with each sample's
    first row and count, actions, old logp, advantages, value targets."""
    g = torch.Generator().manual_seed(0)
    counts = torch.randint(0, max_peers + 1, (SAMPLES,), generator=g)
    batch = {
        "ego": torch.randn(SAMPLES, EGO_DIM, generator=g),
        "peers": torch.randn(int(counts.sum()), PEER_DIM, generator=g),
        "counts": counts,
        "starts": torch.cumsum(counts, 0) - counts,
        "actions": torch.randn(SAMPLES, ACTION_DIM, generator=g),
        "old_logp": torch.randn(SAMPLES, generator=g) - 1.0,
        "advantages": torch.randn(SAMPLES, generator=g),
        "value_targets": torch.randn(SAMPLES, generator=g),
    }
    return {k: v.to(device) for k, v in batch.items()}


def _minibatch(b: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Samples `idx` with their peer rows, re-packed (rows of sample j first, index = j)."""
    counts, starts = b["counts"][idx], b["starts"][idx]
    index = torch.repeat_interleave(torch.arange(len(idx), device=idx.device), counts)
    first = torch.cumsum(counts, 0) - counts  # each sample's first row in the minibatch
    rows = starts[index] + torch.arange(len(index), device=idx.device) - first[index]
    out = {k: b[k][idx] for k in ("ego", "actions", "old_logp", "advantages", "value_targets")}
    out.update(peers=b["peers"][rows], index=index)
    return out


def _loss(net: DeepSets, mb: dict[str, torch.Tensor]) -> torch.Tensor:
    pi, value = net(mb["ego"], mb["peers"], mb["index"])
    mean, log_std = pi.chunk(2, dim=1)
    dist = torch.distributions.Normal(mean, log_std.exp())
    ratio = torch.exp(dist.log_prob(mb["actions"]).sum(1) - mb["old_logp"])
    adv = mb["advantages"]
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - CLIP, 1 + CLIP) * adv)
    vf = (value - mb["value_targets"]).square().clamp(0, VF_CLIP)
    return -surrogate.mean() + VF_COEFF * vf.mean()


def _iteration(net: DeepSets, opt: torch.optim.Optimizer, b: dict[str, torch.Tensor],
               minibatch: int, device: torch.device) -> float:
    """Seconds for one iteration's updates (EPOCHS passes over shuffled minibatches)."""
    g = torch.Generator().manual_seed(1)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(EPOCHS):
        perm = torch.randperm(SAMPLES, generator=g).to(device)
        for lo in range(0, SAMPLES, minibatch):
            loss = _loss(net, _minibatch(b, perm[lo:lo + minibatch]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), GRAD_CLIP)
            opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def _net(device: torch.device) -> DeepSets:
    torch.manual_seed(0)
    return DeepSets(EGO_DIM, PEER_DIM, 2 * ACTION_DIM, DeepSetsConfig()).to(device)


def _same_on_cuda(cuda: torch.device) -> None:
    """The CUDA network computes what the CPU one does (ragged pooling included)."""
    cpu = torch.device("cpu")
    nets = {d: _net(d) for d in (cpu, cuda)}
    idx = torch.arange(256)
    grads = {}
    for d, net in nets.items():
        loss = _loss(net, _minibatch(_batch(d), idx.to(d)))
        loss.backward()
        grads[d] = [p.grad.cpu() for p in net.parameters()]
        if d == cpu:
            ref_loss = loss.detach()
        else:
            torch.testing.assert_close(loss.detach().cpu(), ref_loss, rtol=1e-4, atol=1e-4)
    for a, b in zip(grads[cpu], grads[cuda], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def _padded(b: dict[str, torch.Tensor]) -> torch.Tensor:
    """The batch's peers padded to its largest set: (SAMPLES, Kmax, F), zeros beyond counts."""
    counts = b["counts"]
    kmax = int(counts.max())
    pad = torch.zeros(SAMPLES, kmax, PEER_DIM, device=counts.device)
    mask = torch.arange(kmax, device=counts.device).unsqueeze(0) < counts.unsqueeze(1)
    pad[mask] = b["peers"]
    return pad


def _layout_iteration(net: DeepSets, opt: torch.optim.Optimizer, b: dict[str, torch.Tensor],
                      pad: torch.Tensor, layout: str) -> float:
    """Seconds for one iteration's updates at minibatch 256 with minibatches in `layout`
    ("packed", "batch_padded", "minibatch_padded"), plus one value pass over the batch."""
    g = torch.Generator().manual_seed(1)
    started = time.perf_counter()
    with torch.no_grad():  # GAE's values: the whole batch, in the layout
        if layout == "packed":
            net(*_inputs(b, torch.arange(SAMPLES)))
        else:
            net(b["ego"], *packed_from_padded(pad, b["counts"]))
    for _ in range(EPOCHS):
        perm = torch.randperm(SAMPLES, generator=g)
        for lo in range(0, SAMPLES, 256):
            idx = perm[lo:lo + 256]
            if layout == "packed":
                mb = _minibatch(b, idx)
            else:
                mb = {k: b[k][idx] for k in ("ego", "actions", "old_logp", "advantages",
                                             "value_targets")}
                counts, slab = b["counts"][idx], pad[idx]
                if layout == "minibatch_padded":
                    slab = slab[:, :int(counts.max())]
                mb["peers"], mb["index"] = packed_from_padded(slab, counts)
            loss = _loss(net, mb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), GRAD_CLIP)
            opt.step()
    return time.perf_counter() - started


def _inputs(b: dict[str, torch.Tensor], idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
    mb = _minibatch(b, idx)
    return mb["ego"], mb["peers"], mb["index"]


def _padding_rows(reps: int) -> list[dict]:
    rows = []
    layouts = ("packed", "batch_padded", "minibatch_padded")
    for max_peers in (12, 50):
        b = _batch(torch.device("cpu"), max_peers)
        pad = _padded(b)
        # the three layouts feed the network the same rows: same loss on a minibatch
        idx = torch.arange(256)
        net = _net(torch.device("cpu"))
        packed = _loss(net, _minibatch(b, idx))
        mb = _minibatch(b, idx)
        mb["peers"], mb["index"] = packed_from_padded(pad[idx], b["counts"][idx])
        torch.testing.assert_close(_loss(net, mb), packed, rtol=0, atol=0)
        times: dict[str, list[float]] = {k: [] for k in layouts}
        for rep in range(reps + 1):  # interleaved; the first round warms up
            for layout in layouts:
                net = _net(torch.device("cpu"))
                opt = torch.optim.Adam(net.parameters(), lr=3e-4, fused=True)
                t = _layout_iteration(net, opt, b, pad, layout)
                if rep:
                    times[layout].append(t)
        med = {k: statistics.median(v) for k, v in times.items()}
        ratio = med["batch_padded"] / med["packed"]
        rows.append({
            "benchmark": "learner",
            "metric": f"PPO updates of one iteration, 0-{max_peers} peers, minibatches cut from "
                      f"the batch-wide padding (Kmax {pad.shape[1]}) vs packed (minibatch-local "
                      f"padding: {med['minibatch_padded']:.2f} s, batch-wide / local "
                      f"{med['batch_padded'] / med['minibatch_padded']:.2f})",
            "value": med["batch_padded"], "baseline": med["packed"], "ratio": ratio,
            "target": "<= 1.1", "pass": ratio <= 1.1, "unit": "s",
        })
    return rows


def _seconds(device: torch.device, minibatch: int, reps: int) -> float:
    net = _net(device)
    opt = torch.optim.Adam(net.parameters(), lr=3e-4, fused=True)
    b = _batch(device)
    _iteration(net, opt, b, minibatch, device)  # warm-up (CUDA context, kernels, allocator)
    return statistics.median(_iteration(net, opt, b, minibatch, device) for _ in range(reps))


def run(quick: bool = False) -> list[dict]:
    reps = 1 if quick else 3
    cuda = torch.device("cuda") if torch.cuda.is_available() else None
    if cuda is not None:
        _same_on_cuda(cuda)
    where = torch.cuda.get_device_name() if cuda is not None else "no CUDA here"
    rows = []
    for minibatch in MINIBATCHES:
        cpu_s = _seconds(torch.device("cpu"), minibatch, reps)
        gpu_s = _seconds(cuda, minibatch, reps) if cuda is not None else float("nan")
        rows.append({
            "benchmark": "learner",
            "metric": f"PPO updates of one iteration ({SAMPLES} samples x {EPOCHS} epochs, "
                      f"minibatch {minibatch}), CUDA ({where}) vs CPU "
                      f"({torch.get_num_threads()} threads)",
            "value": gpu_s, "baseline": cpu_s, "ratio": cpu_s / gpu_s, "target": "-",
            "pass": True, "unit": "s", "minibatch": minibatch,
        })
    return rows + [break_even_row(rows, where)] + _padding_rows(reps)


def break_even_row(rows: list[dict], where: str) -> dict:
    """The smallest minibatch of `rows` (the CUDA-vs-CPU rows, ascending) from which on CUDA
    is at least as fast as the CPU: the size above which a GPU learner pays. NaN without CUDA
    or when the CPU wins at every size tried."""
    ratios = [(r["minibatch"], r["ratio"]) for r in rows]
    size = next((m for i, (m, _) in enumerate(ratios)
                 if all(q >= 1.0 for _, q in ratios[i:])), None)
    return {
        "benchmark": "learner",
        "metric": f"break-even minibatch of a CUDA learner ({where}): the smallest size from "
                  f"which on CUDA is not slower than the CPU, of {[m for m, _ in ratios]}",
        "value": float("nan") if size is None else float(size), "baseline": float("nan"),
        "ratio": float("nan"), "target": "-", "pass": True, "unit": "samples",
    }
