"""`export_policy`: write a trained `policy.pt` as a self-contained numpy or ONNX artifact.

Both artifacts hold the policy path of the Deep Sets net (not the value head), the observation
layout they expect (`roadsense.envs.observation.observation_spec`, with its version), the action
bounds, and the source file's sha256; `roadsense.deploy.runtime` runs them without Ray or
torch. See that module for the file layouts.

ONNX: `DeepSets.policy` itself does not export with dynamic sizes (`torch.bincount` with a
batch-sized `minlength` becomes a constant of symbolic size, which the exporter cannot build),
so `_OnnxPolicy` computes the same function from ops ONNX has: counts and sums are
`ScatterElements` additions, the max starts at -inf and empty samples are set to 0 afterwards
(the net's `include_self=False` reduction from a zero start), and the action mapping is in the
graph. Rows may come in any order; `index` names each row's sample.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from roadsense.deploy.runtime import ARTIFACT_FORMAT, SPEC_KEY
from roadsense.envs.observation import EGO_DIM, PEER_DIM, observation_spec
from roadsense.errors import ConfigError

log = logging.getLogger(__name__)

FORMATS = {"numpy": ".npz", "onnx": ".onnx"}
"""Export format -> file suffix."""

ONNX_OPSET = 18
"""ScatterElements with reduction="max" needs opset 18."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_spec(policy: Any) -> dict[str, Any]:
    """The artifact spec of a loaded `TorchPolicy` (JSON-ready)."""
    import roadsense
    from roadsense.models.numpy_policy import layer_specs

    net = policy.net
    if (net.ego_dim, net.peer_dim) != (EGO_DIM, PEER_DIM):
        raise ConfigError(
            f"the policy takes {net.ego_dim} ego and {net.peer_dim} peer features, the convoy "
            f"observation has {EGO_DIM} and {PEER_DIM}", path=policy.path,
            fix="export a policy trained on roadsense/Convoy-v0 with this observation layout")
    enc = net.pi_encoder
    from torch import nn

    return {
        "format": ARTIFACT_FORMAT,
        "observation": observation_spec(),
        "action": {
            "low": policy.low.astype(float).tolist(), "high": policy.high.astype(float).tolist(),
            "rule": "low + (policy_out[:A] + 1) * (high - low) / 2, clipped to [low, high]",
        },
        "network": {
            "kind": "deepsets_policy", "pooling": enc.pooling,
            "ego_dim": net.ego_dim, "peer_dim": net.peer_dim, "policy_dim": net.action_dim,
            **{k: v for k, v in net.config.as_dict().items() if k != "shared_encoder"},
            "layers": {name: [act for _, _, act in layer_specs(mlp)] for name, mlp in
                       (("phi", enc.phi), ("rho", enc.rho),
                        ("head", nn.Sequential(net.pi_head)))},
        },
        "source": {"policy_file": str(policy.path), "sha256": _sha256(policy.path),
                   "roadsense_version": roadsense.__version__},
    }


def _write_numpy(policy: Any, spec: dict[str, Any], tmp: Path) -> None:
    from torch import nn

    from roadsense.models.numpy_policy import layer_specs

    enc = policy.net.pi_encoder
    arrays: dict[str, np.ndarray] = {"spec": np.array(json.dumps(spec, sort_keys=True))}
    for name, mlp in (("phi", enc.phi), ("rho", enc.rho), ("head", nn.Sequential(
            policy.net.pi_head))):
        for i, (w, b, _) in enumerate(layer_specs(mlp)):
            arrays[f"{name}.{i}.w"] = np.ascontiguousarray(w, np.float32)
            arrays[f"{name}.{i}.b"] = np.ascontiguousarray(b, np.float32)
    with tmp.open("wb") as f:
        np.savez(f, **arrays)


def _onnx_module(policy: Any) -> Any:
    import torch
    from torch import nn

    class _OnnxPolicy(nn.Module):
        """`DeepSets.policy` plus the action mapping, in ops the ONNX exporter handles."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.head = policy.net.pi_encoder, policy.net.pi_head
            self.register_buffer("low", torch.as_tensor(policy.low))
            self.register_buffer("high", torch.as_tensor(policy.high))

        def forward(self, ego: torch.Tensor, peers: torch.Tensor,
                    index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            batch, pooling = ego.shape[0], self.encoder.pooling
            h = self.encoder.phi(peers)
            width = h.shape[1]
            rows = index.unsqueeze(1).expand(-1, width)
            count = ego.new_zeros(batch).scatter_add(
                0, index, torch.ones_like(index, dtype=ego.dtype)).unsqueeze(1)
            parts = []
            if pooling in ("sum", "mean", "sum_max", "mean_max"):
                total = h.new_zeros(batch, width).scatter_add(0, rows, h)
                if pooling.startswith("mean"):
                    total = total / count.clamp(min=1.0)
                parts.append(total)
            if pooling.endswith("max"):
                top = h.new_full((batch, width), float("-inf")).scatter_reduce(
                    0, rows, h, reduce="amax", include_self=True)
                parts.append(torch.where(count > 0, top, torch.zeros_like(top)))
            set_size = [(count == 0).to(ego.dtype), torch.log1p(count)]
            out = self.head(self.encoder.rho(torch.cat([ego, *parts, *set_size], dim=1)))
            mean = out[:, : self.low.shape[0]]
            action = self.low + (mean + 1.0) * (self.high - self.low) / 2.0
            return out, torch.minimum(torch.maximum(action, self.low), self.high)

    return _OnnxPolicy().eval()


def _write_onnx(policy: Any, spec: dict[str, Any], tmp: Path) -> None:
    import onnx
    import torch

    module = _onnx_module(policy)
    ego = torch.zeros(3, EGO_DIM)
    peers = torch.zeros(5, PEER_DIM)
    index = torch.tensor([0, 0, 0, 2, 2])
    batch, rows = torch.export.Dim("batch"), torch.export.Dim("peer_rows")
    # torch's exporter notes its own internals (torchvision ops it skips, a deprecated pytree
    # type, an axis name it merges), nothing about this model: keep them off the terminal.
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
            warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used")
            program = torch.onnx.export(
                module, (ego, peers, index), dynamo=True, opset_version=ONNX_OPSET,
                input_names=["ego", "peers", "index"], output_names=["policy_out", "action"],
                dynamic_shapes={"ego": {0: batch}, "peers": {0: rows}, "index": {0: rows}},
                verbose=False)
    finally:
        registry_log.setLevel(level)
    model = program.model_proto
    entry = model.metadata_props.add()
    entry.key, entry.value = SPEC_KEY, json.dumps(spec, sort_keys=True)
    onnx.checker.check_model(model)
    onnx.save_model(model, str(tmp))


def export_policy(checkpoint: str | Path, fmt: str, out: str | Path | None = None) -> Path:
    """Write CHECKPOINT's `policy.pt` as a `fmt` ("numpy" or "onnx") artifact; returns its path.

    `checkpoint` is a checkpoint folder or a `policy.pt`; `out` defaults to `policy.npz` /
    `policy.onnx` next to the `policy.pt`, and an existing folder gets that name inside it.
    The file is written to a temporary name and renamed, so a failed export leaves nothing.
    """
    from roadsense.eval.policies import TorchPolicy, load_policy

    if fmt not in FORMATS:
        raise ConfigError(f"export format {fmt!r} is unknown", fix=f"use one of {list(FORMATS)}")
    _, policy = load_policy(str(checkpoint))
    if not isinstance(policy, TorchPolicy):
        raise ConfigError(f"{checkpoint!s} is a baseline, not a trained policy",
                          fix="pass a checkpoint folder or policy.pt written by `roadsense train`")
    suffix = FORMATS[fmt]
    target = Path(out) if out is not None else policy.path.with_name(f"policy{suffix}")
    if target.is_dir():
        target = target / f"policy{suffix}"
    if target.suffix != suffix:
        raise ConfigError(f"a {fmt} artifact is a {suffix} file, not {target.name!r}",
                          path=target, fix=f"give --out a name ending in {suffix} or a folder")
    if not target.parent.is_dir():
        raise ConfigError("the output folder does not exist", path=target.parent,
                          fix="create it or pick another --out")
    spec = build_spec(policy)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        (_write_numpy if fmt == "numpy" else _write_onnx)(policy, spec, tmp)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported %s as %s", policy.path, target)
    return target
