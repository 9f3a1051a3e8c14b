"""`roadsense export`: numpy and ONNX artifacts match the torch policy, and run without torch.

Checked on the shared real recording (mapped to our peer rows as its README says) and on
simulated episodes with 0 and 50 peers, each step alone and all steps as one ragged batch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

from roadsense.deploy.export import export_policy
from roadsense.deploy.runtime import load_artifact
from roadsense.envs import ConvoyEnv
from roadsense.envs.observation import (
    EGO_DIM,
    OBSERVATION_LAYOUT_VERSION,
    PEER_DIM,
    PEER_FEATURES,
    PEER_SCALE,
)
from roadsense.errors import ConfigError
from roadsense.eval.policies import TorchPolicy, save_policy
from roadsense.eval.replay import convert, load_recording
from roadsense.models import DeepSets, DeepSetsConfig
from roadsense.sim.scenario import write_convoy

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "recordings" / "calibration_drive_2026-02-21.npz"
RUNTIME = REPO / "roadsense/deploy/runtime.py"
TOL = 1e-5


def _checkpoint(folder: Path, pooling: str, activation: str = "tanh", seed: int = 0) -> Path:
    """A `policy.pt` as `roadsense train` writes it, from an untrained net whose policy head is
    scaled up so that outputs span the action range (and get clipped)."""
    torch.manual_seed(seed)
    net = DeepSets(EGO_DIM, PEER_DIM, 2, DeepSetsConfig(pooling=pooling, activation=activation))
    with torch.no_grad():
        net.pi_head.weight.normal_(0.0, 0.5)
        net.pi_head.bias.normal_(0.0, 0.2)
    folder.mkdir(parents=True, exist_ok=True)
    module = SimpleNamespace(net=net, action_space=gym.spaces.Box(0.0, 1.0, (1,), np.float32))
    return save_policy(module, folder / "policy.pt")


@functools.cache
def real_observations() -> list[dict[str, np.ndarray]]:
    """The recording's rows as our observations, converted as replay converts them."""
    return convert(load_recording(REAL)).obs


def simulated_observations(folder: Path, n_peers: int, policy: TorchPolicy,
                           seed: int = 4) -> list[dict[str, np.ndarray]]:
    """Observations of one closed-loop episode of `policy` on a straight `n_peers` convoy."""
    cfg = write_convoy(folder, n_peers, spacing_m=15.0, speed_mps=5.0)
    env = ConvoyEnv(str(cfg), config={"domain_randomization": False, "episode_s": 6.0})
    try:
        obs, _ = env.reset(seed=seed, options={"radio": {"loss_rate": 0.0}})
        seen, done = [obs], False
        while not done:
            obs, _, term, trunc, _ = env.step(policy(obs))
            seen.append(obs)
            done = term or trunc
    finally:
        env.close()
    return seen


def _batch(obs: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.stack([o["ego"] for o in obs]),
            np.concatenate([o["peers"].reshape(-1, PEER_DIM) for o in obs]),
            np.array([len(o["peers"]) for o in obs]))


def _torch_out(policy: TorchPolicy, ego: np.ndarray, peers: np.ndarray,
               counts: np.ndarray) -> np.ndarray:
    index = torch.repeat_interleave(torch.arange(len(counts)), torch.as_tensor(counts))
    with torch.inference_mode():
        return policy.net.policy(torch.from_numpy(ego), torch.from_numpy(peers), index).numpy()


def assert_parity(artifact, policy: TorchPolicy, obs: list[dict[str, np.ndarray]]) -> None:
    """As one ragged batch (every observation) and per step (the car's call; at most ~250
    steps, spread over the episode, every empty one among them): actions and raw outputs to
    TOL against the torch policy."""
    ego, peers, counts = _batch(obs)
    np.testing.assert_allclose(artifact.forward(ego, peers, counts),
                               _torch_out(policy, ego, peers, counts), rtol=0, atol=TOL)
    out = _torch_out(policy, ego, peers, counts)[:, :1]
    ref = np.clip((out + 1.0) / 2.0, 0.0, 1.0)  # the [0, 1] brake of `_checkpoint`'s space
    np.testing.assert_allclose(artifact.act(ego, peers, counts), ref, rtol=0, atol=TOL)
    stride = max(1, len(obs) // 250)
    steps = sorted(set(range(0, len(obs), stride)) | {i for i, c in enumerate(counts) if not c})
    ours = np.stack([artifact(obs[i]) for i in steps])
    np.testing.assert_allclose(ours, np.stack([policy(obs[i]) for i in steps]), rtol=0, atol=TOL)
    np.testing.assert_allclose(ours, ref[steps], rtol=0, atol=TOL)


@pytest.fixture(scope="module")
def sim_obs(tmp_path_factory) -> dict[str, list[dict[str, np.ndarray]]]:
    """Episodes on convoys of 0 and 50 peer cars, driven by a default-sized policy, plus
    observations of exactly 50 peer rows drawn from the 50-car episode's rows: the radio's
    200 m range holds at most ~13 of the 50 cars at once, so the sim alone never fills 50."""
    root = tmp_path_factory.mktemp("sim")
    policy = TorchPolicy(_checkpoint(root / "driver", "mean_max", seed=7))
    got = {f"{n} cars": simulated_observations(root / f"convoy{n}", n, policy) for n in (0, 50)}
    assert max(len(o["peers"]) for o in got["0 cars"]) == 0
    assert max(len(o["peers"]) for o in got["50 cars"]) >= 10
    pool = np.concatenate([o["peers"] for o in got["50 cars"]])
    rng = np.random.default_rng(0)
    got["50 rows"] = [{"ego": o["ego"], "peers": pool[rng.choice(len(pool), 50, replace=False)]}
                      for o in got["50 cars"][::10]]
    return got


def test_real_recording_maps_to_plausible_rows() -> None:
    obs = real_observations()
    counts = [len(o["peers"]) for o in obs]
    assert len(obs) == 2024 and counts.count(0) == 2 and max(counts) == 2
    peers = np.concatenate([o["peers"] for o in obs])
    age_s = peers[:, PEER_FEATURES.index("age")] * PEER_SCALE[PEER_FEATURES.index("age")]
    assert 0.03 < np.median(age_s) < 0.1  # README: median message age 66 ms


@pytest.mark.parametrize(("pooling", "activation"), [
    ("mean", "tanh"), ("sum", "tanh"), ("max", "tanh"), ("mean_max", "tanh"), ("sum_max", "tanh"),
    ("mean_max", "relu"), ("mean_max", "silu")])
def test_numpy_artifact_matches_torch_on_the_real_recording(tmp_path: Path, pooling: str,
                                                            activation: str) -> None:
    pt = _checkpoint(tmp_path / "ckpt", pooling, activation)
    path = export_policy(tmp_path / "ckpt", "numpy")
    assert path == tmp_path / "ckpt" / "policy.npz"
    assert_parity(load_artifact(path), TorchPolicy(pt), real_observations())


@pytest.mark.slow
def test_numpy_artifact_matches_torch_on_simulated_episodes(tmp_path: Path, sim_obs) -> None:
    pt = _checkpoint(tmp_path / "ckpt", "mean_max", seed=1)
    artifact = load_artifact(export_policy(pt, "numpy", tmp_path))
    for obs in sim_obs.values():
        assert_parity(artifact, TorchPolicy(pt), obs)


@pytest.mark.slow
@pytest.mark.parametrize("pooling", ["mean_max", "sum", "max"])
def test_onnx_artifact_matches_torch(tmp_path: Path, pooling: str, sim_obs) -> None:
    pt = _checkpoint(tmp_path / "ckpt", pooling, seed=2)
    artifact = load_artifact(export_policy(pt, "onnx", tmp_path / "p.onnx"))
    policy = TorchPolicy(pt)
    assert_parity(artifact, policy, real_observations())
    for obs in sim_obs.values():
        assert_parity(artifact, policy, obs)
    # rows in any order: the index input says which sample each row belongs to
    obs = sim_obs["50 rows"][-1:] + sim_obs["0 cars"][:1] + sim_obs["50 cars"][-1:]
    ego, peers, counts = _batch(obs)
    index = np.repeat(np.arange(3), counts)
    perm = np.random.default_rng(0).permutation(len(index))
    out = artifact.session.run(["policy_out"], {"ego": ego, "peers": peers[perm],
                                                "index": index[perm].astype(np.int64)})[0]
    np.testing.assert_allclose(out, _torch_out(policy, ego, peers, counts), rtol=0, atol=TOL)


def test_artifact_spec_names_the_observation_layout(tmp_path: Path) -> None:
    pt = _checkpoint(tmp_path, "mean_max")
    spec = load_artifact(export_policy(pt, "numpy")).spec
    assert spec["observation"]["layout_version"] == OBSERVATION_LAYOUT_VERSION
    assert spec["observation"]["peer_features"] == list(PEER_FEATURES)
    assert spec["observation"]["peer_scale"] == PEER_SCALE.tolist()
    assert spec["action"]["low"] == [0.0] and spec["action"]["high"] == [1.0]
    assert spec["network"]["layers"] == {"phi": ["tanh", "tanh"], "rho": ["tanh", "tanh"],
                                         "head": [None]}
    assert spec["source"]["sha256"] == hashlib.sha256(pt.read_bytes()).hexdigest()
    path = tmp_path / "policy.npz"
    assert load_artifact(path, layout_version=OBSERVATION_LAYOUT_VERSION).spec == spec
    with pytest.raises(ValueError, match="made for observation layout 1, the caller builds"):
        load_artifact(path, layout_version=OBSERVATION_LAYOUT_VERSION + 1)


_NO_TORCH = """
import importlib.util, json, sys
import numpy as np
for name in ("torch", "ray", "roadsense", "gymnasium"):
    sys.modules[name] = None  # any import of these now fails
spec = importlib.util.spec_from_file_location("runtime", sys.argv[1])
runtime = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runtime)
z = np.load(sys.argv[3])
out = {}
for path in sys.argv[2].split(","):
    policy = runtime.load_artifact(path)
    out[path] = policy.act(z["ego"], z["peers"], z["counts"]).tolist()
print(json.dumps(out))
"""


@pytest.mark.slow
def test_artifacts_run_without_torch_ray_or_this_project(tmp_path: Path, sim_obs) -> None:
    pt = _checkpoint(tmp_path / "ckpt", "mean_max", seed=3)
    paths = [export_policy(pt, "numpy"), export_policy(pt, "onnx")]
    obs = sim_obs["50 rows"] + real_observations()[:200] + sim_obs["0 cars"]
    ego, peers, counts = _batch(obs)
    np.savez(tmp_path / "batch.npz", ego=ego, peers=peers, counts=counts)
    done = subprocess.run([sys.executable, "-c", _NO_TORCH, str(RUNTIME),
                           ",".join(map(str, paths)), str(tmp_path / "batch.npz")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    ref = np.stack([TorchPolicy(pt)(o) for o in obs])
    for path in paths:
        np.testing.assert_allclose(np.array(got[str(path)]), ref, rtol=0, atol=TOL)


def test_export_rejects_bad_input_and_writes_nothing(tmp_path: Path) -> None:
    pt = _checkpoint(tmp_path, "mean_max")
    with pytest.raises(ConfigError, match="format 'tflite' is unknown"):
        export_policy(pt, "tflite")
    with pytest.raises(ConfigError, match=r"\.npz file, not 'p.onnx'"):
        export_policy(pt, "numpy", tmp_path / "p.onnx")
    with pytest.raises(ConfigError, match="baseline"):
        export_policy("v2v_rule", "numpy")
    net = DeepSets(2, 4, 2)  # the toy env's sizes, not the convoy's
    save_policy(SimpleNamespace(net=net, action_space=gym.spaces.Box(-1, 1, (1,))),
                tmp_path / "toy.pt")
    with pytest.raises(ConfigError, match="2 ego and 4 peer features"):
        export_policy(tmp_path / "toy.pt", "numpy", tmp_path / "toy.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["policy.pt", "toy.pt"]


def test_cli_export_writes_the_artifact_and_reports_errors_in_one_line(tmp_path: Path) -> None:
    _checkpoint(tmp_path / "ckpt", "mean_max")
    ok = subprocess.run([sys.executable, "-m", "roadsense", "export", str(tmp_path / "ckpt"),
                         "--format", "numpy", "--out", str(tmp_path / "car.npz")],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert load_artifact(tmp_path / "car.npz").spec["network"]["pooling"] == "mean_max"
    bad = subprocess.run([sys.executable, "-m", "roadsense", "export", str(tmp_path / "nope"),
                          "--format", "numpy"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 1
    assert bad.stderr.strip().count("\n") == 0 and "policy not found" in bad.stderr
