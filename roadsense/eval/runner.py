"""Run a policy on a fixed evaluation suite: one row of ground-truth metrics per episode."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from roadsense.data import load_suite
from roadsense.envs import ConvoyEnv
from roadsense.envs.episodes import DroppedEpisode, EpisodeRunner, driver_env_config

log = logging.getLogger(__name__)

EVAL_ENV_CONFIG: dict[str, Any] = {"domain_randomization": False}
"""Evaluation never randomises: the suite fixes scenario, seed, hazard and radio level."""


def episode_row(info: dict[str, Any], ret: float, steps: int) -> dict[str, Any]:
    """The per-episode metrics from the last `info` of an episode."""
    plan = info["hazard"]
    rx, brake = info["hazard_msg_rx_s"], info["first_brake_s"]
    reaction = brake - rx if rx is not None and brake is not None and brake >= rx else None
    return {
        "scenario_id": info["scenario_id"],
        "peer_count": int(info["peer_count"]),
        "hazard": plan is not None,
        "hazard_rank": int(plan["rank"]) if plan else 0,
        "hazard_decel_mps2": float(plan["decel_mps2"]) if plan else 0.0,
        "hazard_to_stop": bool(plan["to_stop"]) if plan else False,
        "radio_loss_rate": float(info["radio_loss_rate"]),
        "collision": bool(info["collision"]),
        "other_collisions": int(info["other_collisions"]),
        "min_ttc_s": _finite(info["min_ttc_s"]),
        "min_gap_m": _finite(info["min_gap_m"]),
        "hazard_msg_rx_s": rx,
        "first_brake_s": brake,
        "reaction_s": reaction,
        "false_brake": bool(info["false_brake"]),
        "brake_steps": int(info["brake_steps"]),
        "peak_decel_mps2": float(info["peak_decel_mps2"]),
        "brake_dv_mps": float(info["brake_dv_mps"]),
        "return": float(ret),
        "steps": steps,
    }


def _finite(v: float) -> float | None:
    return None if v is None or math.isinf(v) else float(v)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Torch on one thread inside the block: a batch-1 policy gains nothing from the thread
    pool, and on a busy 2-core machine its spinning made evaluation 10x slower (860 vs 89
    steps/s on `smoke` during training, measured)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_suite(policy: Callable[[dict[str, np.ndarray]], np.ndarray], suite_name: str, *,
              policy_name: str = "policy", root: Path = Path("datasets"),
              env_config: dict[str, Any] | None = None,
              progress: Callable[[int, int], None] | None = None,
              place: str = "eval",
              on_drop: Callable[[DroppedEpisode], None] | None = None) -> list[dict[str, Any]]:
    """Every episode of the suite, in its order, with one env (one SUMO reloaded per episode).

    `env_config` overrides the env's defaults (evaluation never randomises; the backend is
    `driver_env_config`'s). An episode whose SUMO dies is dropped (no row), logged and handed
    to `on_drop`; a fresh SUMO runs the next one (`roadsense.envs.episodes`). `place` names this
    run in the dropped episodes' records."""
    suite = load_suite(suite_name)
    scenarios = suite.open(root)
    config = driver_env_config({**(env_config or {}), **EVAL_ENV_CONFIG})
    rows = []
    started = time.perf_counter()
    runner = EpisodeRunner(lambda: ConvoyEnv(scenarios, config), place, on_drop=on_drop,
                           context={"suite": suite.name, "policy": policy_name})
    with one_torch_thread(), runner:
        for i, ep in enumerate(suite.episodes):
            done = runner.run(policy, episode=i, seed=ep.seed, options=ep.reset_options())
            if done is not None:
                row = episode_row(done.info, done.ret, done.steps)
                row.update(suite=suite.name, suite_version=suite.version, episode=i,
                           seed=ep.seed, policy=policy_name)
                rows.append(row)
            if progress:
                progress(i + 1, len(suite.episodes))
    log.info("%s on %s: %d episodes in %.1f s (%d dropped: SUMO died)", policy_name,
             suite.name, len(rows), time.perf_counter() - started, len(runner.dropped))
    return rows
