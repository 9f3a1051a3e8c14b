"""Training-side throughput: RLlib sampling scaling and overhead, Deep Sets ragged vs padded.

Rows (all measured in this run):
- Deep Sets forward+backward on a ragged batch of 4,096 samples (packed rows, index_add /
  scatter_reduce) vs a padded-to-maximum implementation of the same network and weights
  (ratio = padded time / ragged time; target >= 1.0x, i.e. not slower);
- for each sampling loop, RLlib's own (`RoadSenseEnvRunner`) and the lean one
  (`LeanEnvRunner`, ``build_config(lean_sampling=True)``, what `roadsense train` uses):
  - sampling env steps/s with 2 env runners vs 1 (target >= 1.7x on 2 cores), with 1 sub-env
    per runner and with 4 (the training default);
  - sampling env steps/s of one env runner vs a plain loop stepping the same vector env
    with constant actions (target >= 0.7x: RLlib's overhead, module inference included, at
    most 30%), with 1 sub-env and with 4 (the first on libsumo, the others on traci, as
    `roadsense train` runs them). The sampled policy starts below the brake threshold
    (`NEVER_BRAKES`), so both loops ask SUMO for the same work. The plain loops run in a Ray
    worker, as the env runners do: Ray starts its workers at nice 15, so a loop in the driver
    would win any contended core.

`run(env_id=...)` takes the gym id to sample from (default ``roadsense/Convoy-v0``, whose
steps cost what SUMO costs; the toy ragged env also works).

Known limit: with one sub-env a runner's fixed cost per vector step is half a libsumo ConvoyEnv
step on a slow host and more than a whole one on a fast host (where SUMO speeds up more than the
Python around it: 0.57x against 0.41-0.49x), so the 1-env row cannot reach 0.7x with either
loop. In RLlib's loop that cost is mostly its connector pipelines and the policy's torch calls.
In the lean loop, timed in-process on an idle slow 2-core host (one base-scenario env, 6,000 steps,
interleaved runs): the action step takes ~180-210 us (the numpy policy ~100 us at batch 1: ~20
numpy calls, each slower than in a tight loop because the SUMO step in between evicts the
caches; packing, the Gaussian sample, logp and unsquash the rest), RLlib's episode bookkeeping
(``add_env_step``) ~25 us, and the env step itself runs ~10-20% slower than in the plain loop,
for the same reason. Shipping the episodes adds ~16 us per env step to pickle them in the runner
(mostly the ragged observations) and ~10 us to unpickle them in the driver. With 4 sub-envs (3
on traci) the fixed cost is shared and the lean row sits at 0.48-0.80x.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import tempfile
import time

import numpy as np
import torch

from roadsense.models import DeepSets, DeepSetsConfig
from roadsense.models.deepsets import DeepSetsEncoder
from roadsense.rllib.vector_env import KNOWN_ENV_MODULES

BATCH = 4096
MAX_PEERS = 20
PEER_DIM, EGO_DIM = 8, 8


def _row(metric: str, value: float, baseline: float, ratio: float, target: str, ok: bool,
         unit: str) -> dict:
    return {"benchmark": "training", "metric": metric, "value": float(value),
            "baseline": float(baseline), "ratio": float(ratio), "target": target,
            "pass": bool(ok), "unit": unit}


# -- Deep Sets: ragged vs padded --------------------------------------------------------------
def _padded_encode(enc: DeepSetsEncoder, ego: torch.Tensor, pad: torch.Tensor,
                   count: torch.Tensor) -> torch.Tensor:
    """The same encoder on (B, Kmax, F) padded peers with masked pooling (the baseline)."""
    h = enc.phi(pad)  # every slot goes through phi, padding included
    mask = (torch.arange(pad.shape[1]).unsqueeze(0) < count.unsqueeze(1)).unsqueeze(2)
    parts = []
    if enc.pooling in ("sum", "mean", "sum_max", "mean_max"):
        total = (h * mask).sum(1)
        if enc.pooling.startswith("mean"):
            total = total / count.clamp(min=1).unsqueeze(1).to(h.dtype)
        parts.append(total)
    if enc.pooling.endswith("max"):
        top = h.masked_fill(~mask, float("-inf")).amax(1)
        parts.append(torch.where(count.unsqueeze(1) > 0, top, torch.zeros_like(top)))
    pooled = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
    c = count.to(ego.dtype).unsqueeze(1)
    return enc.rho(torch.cat([ego, pooled, (c == 0).to(ego.dtype), torch.log1p(c)], 1))


def _deepsets_rows(quick: bool) -> list[dict]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = DeepSets(EGO_DIM, PEER_DIM, 2, DeepSetsConfig())
    count = torch.as_tensor(rng.integers(0, MAX_PEERS + 1, size=BATCH))
    ego = torch.randn(BATCH, EGO_DIM)
    peers = torch.randn(int(count.sum()), PEER_DIM)
    index = torch.repeat_interleave(torch.arange(BATCH), count)
    pad = torch.zeros(BATCH, int(count.max()), PEER_DIM)
    pad[torch.arange(pad.shape[1]).unsqueeze(0) < count.unsqueeze(1)] = peers

    def ragged() -> torch.Tensor:
        pi, v = net(ego, peers, index)
        return pi.square().sum() + v.square().sum()

    def padded() -> torch.Tensor:
        pi = net.pi_head(_padded_encode(net.pi_encoder, ego, pad, count))
        v = net.vf_head(_padded_encode(net.vf_encoder, ego, pad, count)).squeeze(1)
        return pi.square().sum() + v.square().sum()

    torch.testing.assert_close(ragged(), padded(), rtol=1e-4, atol=1e-3)  # same network

    def timed(fn) -> float:
        net.zero_grad()
        started = time.perf_counter()
        fn().backward()
        return time.perf_counter() - started

    reps = 5 if quick else 20
    for fn in (ragged, padded):
        timed(fn)  # warm-up
    t_ragged, t_padded = [], []
    for _ in range(reps):  # interleaved, so load changes hit both alike
        t_ragged.append(timed(ragged))
        t_padded.append(timed(padded))
    rag, padm = statistics.median(t_ragged), statistics.median(t_padded)
    return [_row(f"Deep Sets fwd+bwd, {BATCH} samples (0-{MAX_PEERS} peers) vs padded",
                 rag * 1e3, padm * 1e3, padm / rag, ">= 1.0x (not slower)", padm / rag >= 1.0,
                 "ms")]


# -- RLlib sampling ---------------------------------------------------------------------------
def _plain_loop_steps_per_s(env_id: str, env_kwargs: dict, envs: int, steps: int) -> float:
    """A plain loop over the vector env one env runner (worker 1) builds: the same sub-envs
    (for ConvoyEnv the first on libsumo, the others on traci), constant actions, no RLlib.
    It steps them with `step_lists` (no batching of observations and infos), as the lean
    loop does: the cheapest loop over the same sub-envs."""
    from roadsense.rllib.vector_env import (
        EnvIdentity,
        make_ragged_vector_env,
        reset_identity,
        set_identity,
    )

    token = set_identity(EnvIdentity(worker_index=1))
    try:
        env = make_ragged_vector_env({"env_id": env_id, "env_kwargs": env_kwargs,
                                      "num_envs": envs, "identity_kwarg": _identity_kwarg(env_id)})
    finally:
        reset_identity(token)
    actions = np.zeros((envs, *env.single_action_space.shape), np.float32)
    try:
        env.reset()
        resetting = np.zeros(envs, bool)
        stepped = 0
        started = time.perf_counter()
        while stepped < steps:
            # A sub-env done last step resets on this one (next-step autoreset): not a step.
            stepped += int(envs - resetting.sum())
            _, _, term, trunc, _ = env.step_lists(actions)
            resetting = term | trunc
        return stepped / (time.perf_counter() - started)
    finally:
        env.close()


NEVER_BRAKES = {"init_action_mean": -3.0, "init_log_std": -3.0, "free_log_std": True}
"""The sampled policy's start: every action below the brake threshold, like the plain loop's
zeros, so both loops make SUMO do the same work. With RLlib's default start (mean 0, std 1)
the policy brakes on about half the steps, and each brake sends SUMO commands (over TCP for
the traci sub-envs) that the plain loop never sends: env cost, not sampling overhead. The
forward pass, sampling and logp are the same work whatever the action values."""


def _identity_kwarg(env_id: str) -> str | None:
    return "identity" if env_id == CONVOY else None


def _sampling_steps_per_s(env_id: str, env_kwargs: dict, runners: int, steps: int,
                          rounds: int, envs: int = 1, lean: bool = False) -> float:
    from roadsense.rllib.ppo import build_config

    config = build_config(env_id=env_id, env_kwargs=env_kwargs, num_env_runners=runners,
                          num_envs_per_env_runner=envs, identity_kwarg=_identity_kwarg(env_id),
                          lean_sampling=lean, model=NEVER_BRAKES)
    algo = config.build_algo()
    try:
        group = algo.env_runner_group

        def sample_all() -> int:
            eps = group.foreach_env_runner(lambda r: r.sample(num_timesteps=steps),
                                           local_env_runner=False)
            return sum(len(e) for runner_eps in eps for e in runner_eps)

        sample_all()  # warm-up: env start, first weights
        rates = []
        for _ in range(rounds):
            started = time.perf_counter()
            n = sample_all()
            rates.append(n / (time.perf_counter() - started))
        return statistics.median(rates)
    finally:
        algo.stop()


def _sampling_rows(env_id: str, env_kwargs: dict, quick: bool) -> list[dict]:
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Rounds of ~1-3 s each at the lean loop's rates: 2,000-step rounds (<1 s) swung the 2-vs-1
    # ratio between 1.5 and 1.8 from run to run.
    steps, rounds = (500, 2) if quick else (6000, 5)
    tmp = tempfile.mkdtemp(prefix="rs_ray_", dir="/tmp")
    # 3 logical CPUs: two runners plus the driver; the physical cores are what is measured.
    ray.init(num_cpus=3, include_dashboard=False, _temp_dir=tmp, log_to_driver=False,
             logging_level=logging.WARNING)
    name = env_id.split("/")[-1]
    rows = []
    try:
        # The plain loops run in a Ray worker too: Ray runs its workers (and the SUMOs they
        # start) at nice 15, so a loop in this process would win every contended core.
        plain_loop = ray.remote(num_cpus=1)(_plain_loop_steps_per_s)
        plain = ray.get(plain_loop.remote(env_id, env_kwargs, 1, steps))
        plain_vec = ray.get(plain_loop.remote(env_id, env_kwargs, 4, steps))
        for lean, loop in ((False, "RLlib loop"), (True, "lean loop")):
            one = _sampling_steps_per_s(env_id, env_kwargs, 1, steps, rounds, lean=lean)
            two = _sampling_steps_per_s(env_id, env_kwargs, 2, steps, rounds, lean=lean)
            vec = _sampling_steps_per_s(env_id, env_kwargs, 1, steps, rounds, envs=4, lean=lean)
            two_vec = _sampling_steps_per_s(env_id, env_kwargs, 2, steps, rounds, envs=4,
                                            lean=lean)
            rows += [
                _row(f"sampling steps/s, 2 env runners vs 1 ({name}, {loop})", two, one,
                     two / one, ">= 1.7x", two / one >= 1.7, "steps/s"),
                _row(f"sampling steps/s, 2 env runners x 4 envs vs 1 x 4 ({name}, {loop})",
                     two_vec, vec, two_vec / vec, ">= 1.7x", two_vec / vec >= 1.7, "steps/s"),
                _row(f"sampling steps/s, 1 env runner vs plain env loop ({name}, {loop})", one,
                     plain, one / plain, ">= 0.7x", one / plain >= 0.7, "steps/s"),
                _row(f"sampling steps/s, 1 env runner x 4 envs vs plain loop over the same 4 "
                     f"({name}, {loop})", vec, plain_vec, vec / plain_vec, ">= 0.7x",
                     vec / plain_vec >= 0.7, "steps/s"),
            ]
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


CONVOY = "roadsense/Convoy-v0"


def run(quick: bool = False, env_id: str = CONVOY, env_kwargs: dict | None = None
        ) -> list[dict]:
    """All rows; `env_id` picks the env the sampling rows step (any ragged-obs gym id)."""
    if env_id in KNOWN_ENV_MODULES:
        __import__(KNOWN_ENV_MODULES[env_id])
    return _deepsets_rows(quick) + _sampling_rows(env_id, dict(env_kwargs or {}), quick)
