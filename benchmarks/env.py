"""ConvoyEnv throughput: env steps/s with the default radio vs raw libsumo stepping.

Rows:
- env steps/s (default radio with domain randomisation, hazards, reward, info; resets
  included) vs raw libsumo calls doing the same state reads, same run: target >= 0.3x.
- the same env vs the reference style (one TCP call per value, SUMO restarted per episode).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from benchmarks.sim import EPISODE_STEPS, _raw_episode, _reference_episode, _row
from roadsense.envs import ConvoyEnv
from roadsense.sim import base_scenario, sumo_binary
from roadsense.sim.binary import import_libsumo
from roadsense.sim.process import SIM_OPTIONS


def _env_steps_per_s(env: ConvoyEnv, seed: int) -> float:
    action = np.zeros(1, dtype=np.float32)
    started = time.perf_counter()
    env.reset(seed=seed)
    n = 0
    while True:
        _, _, term, trunc, _ = env.step(action)
        n += 1
        if term or trunc:
            break
    return n / (time.perf_counter() - started)


def run(quick: bool = False) -> list[dict]:
    cfg = base_scenario()
    rounds = 3 if quick else 10
    libsumo = import_libsumo()
    args = ["-c", str(cfg), "--seed", "0", *SIM_OPTIONS]
    env_rates, raw_rates = [], []
    env = ConvoyEnv(config={"hazard": {"probability": 0.0}})  # full-length episodes
    for r in range(rounds):
        env_rates.append(_env_steps_per_s(env, r))
        env.close()
        libsumo.start([str(sumo_binary()), *args])
        raw_rates.append(_raw_episode(libsumo, args))
        libsumo.close()
    env.close()
    ours, raw = statistics.median(env_rates), statistics.median(raw_rates)
    rows = [_row("env steps/s vs raw libsumo reads", ours, raw, ours / raw, ">= 0.3x",
                 ours / raw >= 0.3, "steps/s")]
    ref = statistics.median(
        [_reference_episode(str(cfg), s, 100 if quick else EPISODE_STEPS) for s in range(2)])
    rows.append(_row("env steps/s vs TCP-per-value + restart", ours, ref, ours / ref,
                     "(comparison)", True, "steps/s"))
    for row in rows:
        row["benchmark"] = "env"
    return rows
