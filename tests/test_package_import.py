"""`import roadsense` registers the env id cheaply, as highway-env does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

HEAVY = ("torch", "ray", "libsumo", "traci", "sumolib")

_PROBE = """
import json, sys
import gymnasium as gym
import roadsense
heavy = sorted({m.split('.')[0] for m in sys.modules} & set(HEAVY))
env = gym.make('roadsense/Convoy-v0', config={'episode_s': 2.0})
obs, _ = env.reset(seed=3)
env.close()
print(json.dumps({'heavy_after_import': heavy, 'ego_shape': list(obs['ego'].shape),
                  'peer_cols': int(obs['peers'].shape[1]),
                  'registered': roadsense.ENV_ID in gym.registry}))
"""


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{code}"], cwd=REPO,
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_roadsense_registers_convoy_without_heavy_imports() -> None:
    got = _run(_PROBE)
    assert got["registered"]
    assert got["heavy_after_import"] == []
    from roadsense.envs.observation import EGO_DIM, PEER_DIM
    assert got["ego_shape"] == [EGO_DIM]
    assert got["peer_cols"] == PEER_DIM


def test_import_roadsense_envs_still_registers_the_same_id() -> None:
    got = _run("import json\nimport gymnasium as gym\nimport roadsense.envs as e\n"
               "spec = gym.spec(e.ENV_ID)\n"
               "print(json.dumps({'id': spec.id, 'entry': spec.entry_point}))")
    assert got == {"id": "roadsense/Convoy-v0", "entry": "roadsense.envs.convoy_env:ConvoyEnv"}
