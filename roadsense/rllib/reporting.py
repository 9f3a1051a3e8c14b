"""What a training run reports: one `IterationReport` per iteration (from RLlib's result), the
final evaluation of the selected checkpoint and the baselines on the test suites, the replay
of the real recordings, the gating probe, and the learning curve.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from roadsense.comms import params_version
from roadsense.eval import load_policy, run_suite, summarize, write_report
from roadsense.eval.gating import gating_probe
from roadsense.eval.gating import write_report as write_gating_report
from roadsense.eval.replay import replay_report
from roadsense.rllib.run_storage import Storage
from roadsense.rllib.settings import TrainSettings
from roadsense.rllib.validation import driver_env_config, recorder

CURVE_WINDOW = 20
"""Iterations averaged per point of the learning curve."""


@dataclass


class IterationReport:
    iteration: int
    env_steps: int
    steps_per_s: float
    return_mean: float | None
    collision_rate: float | None
    false_brake_rate: float | None
    elapsed_s: float
    lr: float | None = None
    reward_weights: dict[str, float] | None = None
    """Scheduled reward weights of the iteration's sampling (None: no schedule)."""
    imitation_loss: float | None = None
    """The imitation term's mean squared error (unweighted) at the iteration's last update."""
    sample_s: float | None = None
    """Seconds an iteration spends sampling (RLlib's `env_runner_sampling_timer`, a running
    mean over iterations)."""
    learn_s: float | None = None
    """Seconds an iteration spends in the learner's updates (RLlib's `learner_update_timer`,
    a running mean over iterations)."""


def metric(result: dict, key: str) -> float | None:
    """An env runner metric of RLlib's result as a float (None: missing or not a number)."""
    v = result.get("env_runners", {}).get(key)
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def timer(result: dict, key: str) -> float | None:
    """RLlib's timer `key` (seconds) from an iteration's result, None when absent."""
    value = (result.get("timers") or {}).get(key)
    return float(value) if isinstance(value, (int, float)) else None


def learner_stat(result: dict, key: str) -> float | None:
    """A learner statistic of RLlib's result (the first module reporting it), else None."""
    for stats in (result.get("learners") or {}).values():
        if isinstance(stats, dict) and key in stats:
            return float(stats[key])
    return None


def final_eval(settings: TrainSettings, store: Storage, ckpt: Path, env_config: Any,
               manifest: dict) -> dict[str, Any]:
    """The checkpoint and the baselines on the test suites, with training's env config and
    radio (the report says which); dropped episodes go to the manifest."""
    suites = [settings.eval_suite] + ([settings.eval_no_hazard_suite]
                                      if settings.eval_no_hazard_suite else [])
    config = driver_env_config(env_config)
    rows = []
    for spec in (str(ckpt), "no_assist", "v2v_rule"):
        name, policy = load_policy(spec)
        for suite in suites:
            rows += run_suite(policy, suite, policy_name=name,
                              root=Path(settings.dataset_root), env_config=config,
                              place="final_eval", on_drop=recorder(manifest, checkpoint=ckpt.name))
    dropped = [d for d in manifest.get("dropped_episodes", []) if d["place"] == "final_eval"]
    write_report(rows, store.local / "eval", title=f"Evaluation of {ckpt.name}",
                 meta={"checkpoint": ckpt.name, "suites": ", ".join(suites),
                       "emulator params": params_version(env_config.emulator_params),
                       "env overrides": json.dumps(settings.env_overrides, sort_keys=True),
                       "episodes dropped (SUMO died)": str(len(dropped))})
    return summarize(rows)


def final_replay(store: Storage, ckpt: Path, replays: list[Any]) -> dict[str, Any]:
    """The checkpoint and the baselines replayed on the real recordings (`eval/replay.md`);
    per recording and policy, the closed-loop calm-driving figures."""
    summary = replay_report([load_policy(str(ckpt)), "no_assist", "v2v_rule"],
                            [inp.recording for inp in replays], store.local / "eval")
    keep = ("brake_share", "onsets_per_min", "longest_brake_s", "events_braked",
            "stretches_braked")
    return {rec: {name: {k: r["closed_loop"][k] for k in keep}
                  for name, r in body["results"].items()}
            for rec, body in summary["recordings"].items()}


def final_gating(store: Storage, ckpt: Path, brake_threshold: float) -> dict[str, Any]:
    """The checkpoint and `v2v_rule` on the gating probe (`roadsense.eval.gating`), written to
    `eval/gating.md`; per policy, its summary and brake per case."""
    results = {}
    for spec in (str(ckpt), "v2v_rule"):
        name, policy = load_policy(spec)
        results[name] = gating_probe(policy, brake_threshold=brake_threshold)
    write_gating_report(results, store.local / "eval")
    return results


def learning_curve(progress: Path, out: Path, validations: list[dict] | None = None) -> None:
    """Training return and rates (mean over `CURVE_WINDOW` iterations: one iteration holds
    only ~16 episodes) against env steps, with each validation of a checkpoint on top."""
    if not progress.is_file():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [json.loads(ln) for ln in progress.read_text().splitlines() if ln.strip()]
    if not rows:
        return

    def smooth(key: str) -> np.ndarray:
        v = np.array([np.nan if r[key] is None else r[key] for r in rows], float)
        k = min(CURVE_WINDOW, len(v))
        filled = np.nan_to_num(v)
        counts = np.convolve(~np.isnan(v), np.ones(k), "same")
        return np.convolve(filled, np.ones(k), "same") / np.maximum(counts, 1)

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.4))
    x = [r["env_steps"] for r in rows]
    a.plot(x, smooth("return_mean"))
    a.set_xlabel("env steps")
    a.set_ylabel(f"episode return (mean of {CURVE_WINDOW} iterations)")
    b.plot(x, smooth("collision_rate"), label="collision rate (training)", color="C3")
    b.plot(x, smooth("false_brake_rate"), label="false braking (training)", color="C1")
    steps_at = {r["iteration"]: r["env_steps"] for r in rows}
    done = [(steps_at.get(v["iteration"]), v) for v in validations or []]
    done = [(s, v) for s, v in done if s is not None]
    if done:
        vx = [s for s, _ in done]
        b.plot(vx, [v["collision_rate"] or 0 for _, v in done], "o--", color="C3",
               label=f"collision rate ({done[0][1]['suite']})")
        b.plot(vx, [v["false_brake_rate"] or 0 for _, v in done], "s--", color="C1",
               label=f"false braking ({done[0][1]['suite']})")
    b.set_xlabel("env steps")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
