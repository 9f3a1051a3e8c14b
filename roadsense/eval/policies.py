"""Policies evaluation can run: the baselines by name, or a trained checkpoint.

A trained policy is stored as `policy.pt` next to every checkpoint: the Deep Sets weights and
sizes, loadable with plain torch (no Ray), so evaluation and deployment need no cluster.
Its action is the deterministic one: the Gaussian's mean, mapped from RLlib's normalised
[-1, 1] range to the action space and clipped, as RLlib's env runner does.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np

from roadsense.envs.baselines import BASELINES, make_baseline
from roadsense.errors import ConfigError

POLICY_FILE = "policy.pt"


class TorchPolicy:
    """A trained Deep Sets policy from `policy.pt` (see `save_policy`)."""

    def __init__(self, path: str | Path) -> None:
        import torch

        from roadsense.models import DeepSets, DeepSetsConfig

        self.path = Path(path)
        try:
            blob = torch.load(self.path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, KeyError) as exc:
            raise ConfigError(f"cannot read the policy file: {exc}", path=self.path,
                              fix="point to a checkpoint folder written by `roadsense train`"
                              ) from exc
        self.net = DeepSets(blob["ego_dim"], blob["peer_dim"], blob["dist_dim"],
                            DeepSetsConfig.from_dict(blob["model"]))
        self.net.load_state_dict(blob["state_dict"])
        self.net.eval()
        self.low = np.asarray(blob["action_low"], dtype=np.float32)
        self.high = np.asarray(blob["action_high"], dtype=np.float32)
        self._torch = torch

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        peers = torch.as_tensor(np.asarray(obs["peers"], dtype=np.float32))
        ego = torch.as_tensor(np.asarray(obs["ego"], dtype=np.float32))[None]
        index = torch.zeros(len(peers), dtype=torch.long)
        with torch.inference_mode():
            out = self.net.policy(ego, peers, index)[0].numpy()
        mean = out[: len(self.low)]
        action = self.low + (mean + 1.0) * (self.high - self.low) / 2.0
        return np.clip(action, self.low, self.high).astype(np.float32)


def save_policy(module: Any, path: str | Path) -> Path:
    """Write `policy.pt` from a `DeepSetsRLModule` (its `net` plus the sizes to rebuild it)."""
    import dataclasses

    import torch

    net = module.net
    space = module.action_space
    blob = {
        "ego_dim": net.ego_dim, "peer_dim": net.peer_dim, "dist_dim": net.action_dim,
        "model": dataclasses.asdict(net.config),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "action_low": np.asarray(space.low, dtype=np.float32).tolist(),
        "action_high": np.asarray(space.high, dtype=np.float32).tolist(),
    }
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)
    return path


def load_policy(spec: str) -> tuple[str, Any]:
    """(name, policy) from a baseline name, optionally with settings (`v2v_rule:brake=0.6`,
    `urgency_brake:gain=3,hold_s=1`: the constructor's keyword arguments), a checkpoint
    folder, or a `policy.pt` file."""
    name, _, settings = spec.partition(":")
    if name in BASELINES:
        try:
            return spec, make_baseline(name, **_baseline_settings(spec))
        except ValueError as exc:  # the constructor's own range checks
            raise ConfigError(f"{name} settings rejected: {exc}", path=spec,
                              fix="change the settings") from None
    path = Path(spec)
    if path.is_dir():
        candidates = [path / POLICY_FILE, *sorted(path.glob(f"*/{POLICY_FILE}"))]
        found = [c for c in candidates if c.is_file()]
        if not found:
            raise ConfigError(f"no {POLICY_FILE} in this folder", path=path,
                              fix="pass a checkpoint folder written by `roadsense train` "
                                  f"or one of {sorted(BASELINES)}")
        path = found[-1]
    elif not path.is_file():
        raise ConfigError("policy not found", path=spec,
                          fix=f"pass a checkpoint folder, a {POLICY_FILE}, or one of "
                              f"{sorted(BASELINES)}")
    return f"trained:{path.parent.name}", TorchPolicy(path)


def _baseline_settings(spec: str) -> dict[str, float]:
    """`NAME:key=value,key=value`'s settings as numbers, checked against the baseline's
    parameters."""
    name, _, text = spec.partition(":")
    accepted = [p for p in inspect.signature(BASELINES[name]).parameters if p != "step_s"]
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise ConfigError(f"{name} setting {item!r} has no value", path=spec,
                              fix="write NAME:key=value,..., e.g. v2v_rule:brake=0.6")
        if key not in accepted:
            raise ConfigError(f"{name} has no setting {key!r}", path=spec,
                              fix="write NAME:key=value,... with keys among "
                                  f"{accepted or 'none (it takes no settings)'}")
        try:
            out[key] = float(value)
        except ValueError:
            raise ConfigError(f"{name} setting {key}={value!r} is not a number",
                              path=spec, fix="give a number, e.g. brake=0.6"
                              ) from None
    return out
