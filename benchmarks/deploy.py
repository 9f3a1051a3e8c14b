"""Per-decision latency of an exported policy on one CPU core: numpy and ONNX vs torch.

One decision is what the car does every 100 ms: one observation (ego + K peer rows) in, one
brake command out, through the artifact's `__call__` (`roadsense.deploy.runtime`) or
`TorchPolicy.__call__` (the `policy.pt` path, `torch.inference_mode`). The network has the
training defaults (`DeepSetsConfig()`: phi 64-64, mean_max, rho 64-64); its weights are
random (latency does not depend on them). The process is pinned to one core and torch and
onnxruntime run one thread each. Rounds alternate between the three so drift hits all alike.

Rows (median over rounds of the mean per decision): numpy artifact vs torch, ONNX artifact
vs torch, at 0-12 peers per observation (uniform, like the training scenarios) and at 50.
Ratio = torch time / artifact time (above 1: the artifact is faster).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import torch

from roadsense.deploy.export import export_policy
from roadsense.deploy.runtime import load_artifact
from roadsense.envs.observation import EGO_DIM, PEER_DIM
from roadsense.eval.policies import TorchPolicy, save_policy
from roadsense.models import DeepSets, DeepSetsConfig


def _observations(n: int, peers: tuple[int, int], seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"ego": rng.normal(size=EGO_DIM).astype(np.float32),
             "peers": rng.normal(size=(int(rng.integers(*peers, endpoint=True)), PEER_DIM)
                                 ).astype(np.float32)} for _ in range(n)]


def _us_per_decision(policy, obs: list[dict]) -> float:
    started = time.perf_counter()
    for o in obs:
        policy(o)
    return (time.perf_counter() - started) / len(obs) * 1e6


def _row(metric: str, value: float, baseline: float) -> dict:
    return {"benchmark": "deploy", "metric": metric, "value": value, "baseline": baseline,
            "ratio": baseline / value, "target": "(comparison)", "pass": True, "unit": "us"}


def run(quick: bool = False) -> list[dict]:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    torch.set_num_threads(1)
    rounds, n = (3, 300) if quick else (15, 1000)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        net = DeepSets(EGO_DIM, PEER_DIM, 2, DeepSetsConfig())
        space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
        pt = save_policy(SimpleNamespace(net=net, action_space=space), Path(tmp) / "policy.pt")
        policies = {"torch": TorchPolicy(pt),
                    "numpy": load_artifact(export_policy(pt, "numpy")),
                    "onnx": load_artifact(export_policy(pt, "onnx"), threads=1)}
        rows = []
        for label, peers in (("0-12 peers", (0, 12)), ("50 peers", (50, 50))):
            obs = _observations(n, peers)
            for p in policies.values():  # warm-up: caches, lazy inits
                _us_per_decision(p, obs[:50])
            times: dict[str, list[float]] = {k: [] for k in policies}
            for _ in range(rounds):
                for name, p in policies.items():
                    times[name].append(_us_per_decision(p, obs))
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append(_row(f"numpy us/decision vs torch, {label}",
                             med["numpy"], med["torch"]))
            rows.append(_row(f"onnx us/decision vs torch, {label}",
                             med["onnx"], med["torch"]))
    return rows
