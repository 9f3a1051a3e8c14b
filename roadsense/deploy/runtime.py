"""Run an exported RoadSense policy with numpy alone (or onnxruntime for `.onnx`).

This file imports only the standard library and numpy (onnxruntime only when an `.onnx`
artifact is opened), never torch, Ray or the rest of this project, so it can be copied next
to an artifact onto the car and used as it is:

>>> policy = load_artifact("policy.npz")                             # doctest: +SKIP
>>> action = policy({"ego": ego_row, "peers": peer_rows})              # doctest: +SKIP

An artifact is one file holding the weights and a JSON spec: the observation layout (feature
names, scales, `layout_version`), the action bounds, and where the weights came from.

- `.npz`: arrays `phi.<i>.w` (in, out), `phi.<i>.b`, same for `rho` and `head`, plus `spec`
  (the JSON text as a 0-d string array); loads with `allow_pickle=False`.
- `.onnx`: inputs `ego` (B, E) float32, `peers` (N, F) float32 (the ragged set as rows) and
  `index` (N,) int64 (the sample each row belongs to); outputs `policy_out` (B, D) and
  `action` (B, A); the spec is the metadata entry `roadsense_spec`.

The forward pass is Deep Sets' policy path: phi per peer row, mean/sum/max pooling per
sample, rho over [ego, pooled, empty-set flag, log1p(K)], then the policy head. The action
is the deterministic one: the head's first A outputs (the Gaussian's mean, in [-1, 1]) mapped
to [low, high] and clipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ARTIFACT_FORMAT = "roadsense-policy/1"
"""Format tag in every artifact's spec; a loader refuses any other."""

SPEC_KEY = "roadsense_spec"
"""Name of the spec in an ONNX model's metadata."""


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "silu": _silu,
}

Layer = tuple[np.ndarray, np.ndarray, Callable[[np.ndarray], np.ndarray] | None]
"""(weight (in, out), bias (out,), activation or None): one linear layer of an MLP."""


def mlp(layers: list[Layer], x: np.ndarray) -> np.ndarray:
    """Apply `layers` in order to rows `x`."""
    for w, b, act in layers:
        x = x @ w + b
        if act is not None:
            x = act(x)
    return x


def deepsets_policy(phi: list[Layer], rho: list[Layer], head: list[Layer], pooling: str,
                    ego: np.ndarray, peers: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Policy output (B, D) for ego (B, E), packed peers (sum counts, F) in sample order and
    per-sample peer counts (B,); float32 throughout, like the torch net."""
    counts = np.asarray(counts)
    h = mlp(phi, np.asarray(peers, np.float32))
    c = counts.reshape(-1, 1).astype(np.float32)
    x = np.concatenate([np.asarray(ego, np.float32), *_pool(h, counts, pooling),
                        (c == 0).astype(np.float32), np.log1p(c)], axis=1)
    return mlp(head, mlp(rho, x))


_FIRST_ROW = np.zeros(1, np.intp)


def _pool(h: np.ndarray, counts: np.ndarray, pooling: str) -> list[np.ndarray]:
    """The pooled rows (B, H) of each sample's peer embeddings `h` (sum counts, H): sum,
    mean and/or max over each sample's rows, zeros for a sample without peers.

    `reduceat` over the first row of each sample that has peers reduces exactly that sample's
    rows (an empty sample owns none). With one sample, what every forward pass of a runner with
    one env (and of a car) is, that arithmetic is constant: its rows start at row 0, and it
    either has rows or the result is all zeros. The other reductions are the same calls
    either way, so a sample pools to the same row, bit for bit, alone or in a batch.
    """
    batch, width = len(counts), h.shape[1]
    if batch == 1:
        n = int(counts[0])
        if n == 0:
            zero = np.zeros((1, width), np.float32)
            return [zero, zero] if "_" in pooling else [zero]
        starts, filled, divisor = _FIRST_ROW, None, np.float32(n)
    else:
        has_rows = counts > 0
        starts = (np.cumsum(counts) - counts)[has_rows]
        filled = None if 0 < starts.size == batch else has_rows
        divisor = np.maximum(counts, 1).astype(np.float32)[:, None]

    def reduce(ufunc: np.ufunc) -> np.ndarray:
        if filled is None:  # every sample has rows: one reduced row each, in order
            return ufunc.reduceat(h, starts, axis=0)
        out = np.zeros((batch, width), np.float32)
        if starts.size:
            out[filled] = ufunc.reduceat(h, starts, axis=0)
        return out

    parts = []
    if pooling in ("sum", "mean", "sum_max", "mean_max"):
        total = reduce(np.add)
        if pooling.startswith("mean"):
            total /= divisor
        parts.append(total)
    if pooling.endswith("max"):
        parts.append(reduce(np.maximum))
    return parts


class ArtifactPolicy:
    """Common part of both artifact kinds: the spec, input checks and the action mapping."""

    def __init__(self, path: Path, spec: dict[str, Any]) -> None:
        if spec.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"{path}: format {spec.get('format')!r} is not {ARTIFACT_FORMAT!r}; "
                             "re-export it with this version of `roadsense export`")
        self.path, self.spec = path, spec
        obs = spec["observation"]
        self.ego_dim, self.peer_dim = len(obs["ego_features"]), len(obs["peer_features"])
        self.low = np.asarray(spec["action"]["low"], np.float32)
        self.high = np.asarray(spec["action"]["high"], np.float32)

    def forward(self, ego: np.ndarray, peers: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Raw policy output (B, D): ego (B, E), packed peers (sum counts, F), counts (B,)."""
        raise NotImplementedError

    def act(self, ego: np.ndarray, peers: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Deterministic actions (B, A) for a batch, as `forward` takes it."""
        mean = self.forward(ego, peers, counts)[:, : len(self.low)]
        action = self.low + (mean + 1.0) * (self.high - self.low) / 2.0
        return np.clip(action, self.low, self.high).astype(np.float32)

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Action (A,) for one observation {"ego": (E,), "peers": (K, F)}, K >= 0."""
        ego = np.asarray(obs["ego"], np.float32).reshape(1, -1)
        peers = np.asarray(obs["peers"], np.float32).reshape(-1, self.peer_dim)
        if ego.shape[1] != self.ego_dim:
            raise ValueError(f"ego has {ego.shape[1]} features, {self.path} expects "
                             f"{self.ego_dim} ({self.spec['observation']['ego_features']})")
        return self.act(ego, peers, np.array([len(peers)]))[0]


class NumpyArtifactPolicy(ArtifactPolicy):
    """An exported `.npz` artifact, run with numpy."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        spec = json.loads(str(arrays.pop("spec")))
        super().__init__(path, spec)
        net = spec["network"]
        self.pooling = net["pooling"]
        self.phi, self.rho, self.head = (
            [(arrays[f"{part}.{i}.w"], arrays[f"{part}.{i}.b"],
              ACTIVATIONS[act] if act else None) for i, act in enumerate(net["layers"][part])]
            for part in ("phi", "rho", "head"))

    def forward(self, ego: np.ndarray, peers: np.ndarray, counts: np.ndarray) -> np.ndarray:
        return deepsets_policy(self.phi, self.rho, self.head, self.pooling, ego, peers, counts)


class OnnxArtifactPolicy(ArtifactPolicy):
    """An exported `.onnx` artifact, run with onnxruntime on `threads` CPU threads."""

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        import onnxruntime as ort

        path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options,
                                            providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        if SPEC_KEY not in meta:
            raise ValueError(f"{path}: no {SPEC_KEY} metadata; not a `roadsense export` file")
        super().__init__(path, json.loads(meta[SPEC_KEY]))

    def run(self, ego: np.ndarray, peers: np.ndarray,
            counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(policy output (B, D), action (B, A)) from one onnxruntime call."""
        counts = np.asarray(counts)
        feeds = {"ego": np.asarray(ego, np.float32),
                 "peers": np.asarray(peers, np.float32).reshape(-1, self.peer_dim),
                 "index": np.repeat(np.arange(len(counts), dtype=np.int64), counts)}
        out, action = self.session.run(["policy_out", "action"], feeds)
        return out, action

    def forward(self, ego: np.ndarray, peers: np.ndarray, counts: np.ndarray) -> np.ndarray:
        return self.run(ego, peers, counts)[0]

    def act(self, ego: np.ndarray, peers: np.ndarray, counts: np.ndarray) -> np.ndarray:
        return self.run(ego, peers, counts)[1]


def load_artifact(path: str | Path, threads: int = 1,
                  layout_version: int | None = None) -> ArtifactPolicy:
    """Open an exported artifact by its suffix: `.npz` (numpy) or `.onnx` (onnxruntime).

    `layout_version`: the observation layout the caller builds; an artifact made for another
    one is refused (its features would be read with the wrong meaning)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such artifact; write one with `roadsense export`")
    if path.suffix == ".npz":
        policy: ArtifactPolicy = NumpyArtifactPolicy(path)
    elif path.suffix == ".onnx":
        policy = OnnxArtifactPolicy(path, threads=threads)
    else:
        raise ValueError(f"{path}: unknown artifact suffix {path.suffix!r}; use .npz or .onnx")
    found = policy.spec["observation"]["layout_version"]
    if layout_version is not None and found != layout_version:
        raise ValueError(f"{path}: made for observation layout {found}, the caller builds "
                         f"layout {layout_version}; export a policy trained on layout "
                         f"{layout_version}")
    return policy
