"""End-to-end training throughput: env steps/s of whole `roadsense train` runs, by layout.

Each figure comes from a real training run (`python -m roadsense train` in a subprocess: Ray
started by the run, PPO with the learner in the driver process, the warm start's imitation
term in the loss) with no validation, no replay and no final evaluation, read from the run's
`progress.jsonl` (per iteration: cumulative env steps and elapsed seconds). The rate is the
env steps of iterations 2..N over their wall time; the first iteration (SUMO start-up, first
weights) and everything before it (Ray start, warm start) are left out.

Rows (all measured in this run, on this machine):
- the defaults end to end vs the former defaults (10 PPO epochs per batch, now 5; one env
  runner per core plus one, now one per core): the learner's updates were half of an
  iteration's time on 2 cores; target >= 1.5x;
- the default layout (no layout flags: what `roadsense train` picks) end to end vs the
  sampling-only rate of the same layout (`LeanEnvRunner`s sampling with a policy that never
  brakes, no learner, the same dataset and env config: `benchmarks.training`'s method), and the
  non-sampling share of a training iteration (learner update, weight sync, driver work),
  1 - end-to-end rate / sampling-only rate, since PPO samples and learns in turn;
- scaling: end to end with 1, 2, 4 env runners (the default envs per runner) vs 1 runner
  (information: on a small machine the learner and the runners share the cores; on a big node
  this is the scaling curve);
- with `layouts` (`benchmarks.layouts`, run when named): each layout `runners x envs per
  runner` (`--num-env-runners R --num-envs-per-env-runner E`; a runner's first env on libsumo,
  the others on traci) end to end vs the default layout: target <= 1.0x.

`python -m benchmarks e2e` makes four training runs (7 iterations of 4,000 steps each, after
Ray's start and a 2,000-step warm start) and one sampling measurement; `--quick` is a smoke
check (tiny batches, 3 iterations; its rates mean nothing).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
LAYOUTS = ((1, 1), (2, 1), (2, 4), (3, 1), (4, 1), (1, 4))
"""runners x envs per runner compared with the default layout (plus the scaling runs)."""
SCALING_RUNNERS = (1, 2, 4)
RUN_TIMEOUT_S = 600


@dataclass(frozen=True)
class Budget:
    """How long each training run is: iterations (the first is not measured) and PPO sizes."""

    iterations: int
    train_batch_size: int | None = None  # None: the run's default
    minibatch_size: int | None = None
    warm_start_steps: int = 2000
    sampling_steps: int = 4000  # per runner and round of the sampling-only baseline
    sampling_rounds: int = 3


FULL = Budget(iterations=7)
QUICK = Budget(iterations=3, train_batch_size=256, minibatch_size=64, warm_start_steps=200,
               sampling_steps=300, sampling_rounds=1)


@dataclass(frozen=True)
class TrainRun:
    """What one training run measured."""

    runners: int
    envs: int
    steps_per_s: float
    iterations: int  # measured (after the first)
    wall_s: float  # the whole subprocess, start-up included
    env_config: dict
    dataset: str
    learn_share: float | None = None
    """Learner update time / (sampling + learner update) from RLlib's timers at the last
    iteration (running means); None when the run did not record them."""


FORMER_EPOCHS = 10


def former_flags() -> tuple[str, ...]:
    """The former defaults, the end-to-end baseline: 10 PPO epochs per batch, one env runner
    per core plus one."""
    return ("--num-env-runners", str((os.cpu_count() or 2) + 1), "--num-epochs",
            str(FORMER_EPOCHS))


def train_command(budget: Budget, storage: Path, layout: tuple[int, int] | None,
                  extra: tuple[str, ...] = ()) -> list[str]:
    """The `roadsense train` command of one measurement (`layout` None: the default one;
    `extra`: more flags)."""
    cmd = [sys.executable, "-m", "roadsense", "train", "--storage", str(storage), "--seed", "0",
           "--iterations", str(budget.iterations), "--checkpoint-every", "1000000",
           "--validation-suite", "none", "--replay", "none", "--no-final-eval",
           "--warm-start-steps", str(budget.warm_start_steps)]
    if budget.train_batch_size:
        cmd += ["--train-batch-size", str(budget.train_batch_size)]
    if budget.minibatch_size:
        cmd += ["--minibatch-size", str(budget.minibatch_size)]
    if layout is not None:
        runners, envs = layout
        cmd += ["--num-env-runners", str(runners), "--num-envs-per-env-runner", str(envs)]
    return cmd + list(extra)


def loop_rate(progress: list[dict]) -> tuple[float, int]:
    """(env steps/s over iterations 2..N, iterations measured) from `progress.jsonl` records."""
    if len(progress) < 2:
        raise RuntimeError(f"need at least 2 iterations in progress.jsonl, got {len(progress)}")
    first, last = progress[0], progress[-1]
    steps = last["env_steps"] - first["env_steps"]
    seconds = last["elapsed_s"] - first["elapsed_s"]
    if steps <= 0 or seconds <= 0:
        raise RuntimeError(f"progress.jsonl records no steps or time after iteration 1: {progress}")
    return steps / seconds, len(progress) - 1


def train_run(budget: Budget, layout: tuple[int, int] | None,
              extra: tuple[str, ...] = ()) -> TrainRun:
    """One `roadsense train` run in its own temporary folder (Ray's too); removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="rse", dir="/tmp"))  # short: Ray's socket paths
    try:
        storage = tmp / "runs"
        env = dict(os.environ, TMPDIR=str(tmp))
        started = time.perf_counter()
        # its own process group: on a timeout the run, its Ray and its SUMOs go together
        proc = subprocess.Popen(train_command(budget, storage, layout, extra), cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            tail = " | ".join((err or out).strip().splitlines()[-5:])
            raise RuntimeError(f"roadsense train {layout or 'default'} failed: {tail}")
        runs = sorted(storage.glob("*/progress.jsonl"))
        if len(runs) != 1:
            raise RuntimeError(f"expected one run under {storage}, found {len(runs)}")
        progress = [json.loads(line) for line in runs[0].read_text().splitlines() if line]
        manifest = json.loads((runs[0].parent / "run_manifest.json").read_text())
        config = manifest["config"]
        rate, measured = loop_rate(progress)
        dataset = config.get("dataset_dir") or str(ROOT / config["dataset_root"] / "default-v1")
        last = progress[-1]
        timed = last.get("sample_s") and last.get("learn_s")
        share = last["learn_s"] / (last["sample_s"] + last["learn_s"]) if timed else None
        return TrainRun(int(config["num_env_runners_resolved"]),
                        int(config["num_envs_per_env_runner"]), rate, measured, wall,
                        dict(config["env"]), dataset, share)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def sampling_only(run: TrainRun, budget: Budget) -> float:
    """Sampling-only env steps/s of `run`'s layout, dataset and env config (lean loop)."""
    import ray

    from benchmarks.training import CONVOY, _sampling_steps_per_s

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    tmp = tempfile.mkdtemp(prefix="rs_ray_", dir="/tmp")
    ray.init(num_cpus=max(run.runners + 1, os.cpu_count() or 2), include_dashboard=False,
             _temp_dir=tmp, log_to_driver=False, logging_level=logging.WARNING)
    try:
        return _sampling_steps_per_s(CONVOY, {"scenarios": run.dataset, "config": run.env_config},
                                     run.runners, budget.sampling_steps, budget.sampling_rounds,
                                     envs=run.envs, lean=True)
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def _row(metric: str, value: float, baseline: float, ratio: float, target: str, ok: bool,
         unit: str, **extra: object) -> dict:
    return {"benchmark": "e2e", "metric": metric, "value": float(value),
            "baseline": float(baseline), "ratio": float(ratio), "target": target,
            "pass": bool(ok), "unit": unit, **extra}


def run(quick: bool = False, *, layouts: tuple[tuple[int, int], ...] = (),
        scaling: tuple[int, ...] = SCALING_RUNNERS, sampling: bool = True,
        former: bool = True) -> list[dict]:
    """The rows of the default layout's run and of the runs `layouts` (runners x envs, vs the
    default) and `scaling` (runner counts at the default envs per runner, vs the first);
    `sampling`: also measure the default layout's sampling-only rate (and its rows); `former`:
    also run the former default (`FORMER_EPOCHS` epochs), the end-to-end baseline."""
    budget = QUICK if quick else FULL
    default = train_run(budget, None)
    name = f"{default.runners}x{default.envs}"
    rows = []
    if former:
        old = train_run(budget, None, former_flags())
        ratio = default.steps_per_s / old.steps_per_s
        from roadsense.rllib.settings import TrainSettings

        epochs = TrainSettings().num_epochs
        rows.append(_row(f"training env steps/s end to end, defaults ({name}, {epochs} epochs) "
                         f"vs the former ({old.runners}x{old.envs}, {FORMER_EPOCHS} epochs)",
                         default.steps_per_s, old.steps_per_s,
                         ratio, ">= 1.5x", ratio >= 1.5, "steps/s", layout=name,
                         wall_s=default.wall_s))
    if sampling:
        rate = sampling_only(default, budget)
        ratio = default.steps_per_s / rate
        rows += [
            _row(f"training env steps/s end to end, default layout {name} vs sampling only",
                 default.steps_per_s, rate, ratio, "(information)", True, "steps/s",
                 layout=name, iterations=default.iterations, wall_s=default.wall_s),
            _row(f"non-sampling share of a training iteration (learner, weight sync), {name}",
                 100.0 * (1.0 - ratio), float("nan"), float("nan"), "(information)", True,
                 "%"),
        ]
    if default.learn_share is not None:
        rows.append(_row(f"learner update share of sampling + update (RLlib timers), {name}",
                         100.0 * default.learn_share, float("nan"), float("nan"),
                         "(information)", True, "%"))
    runs = {(default.runners, default.envs): default}
    wanted = list(layouts) + [(r, default.envs) for r in scaling]
    for layout in dict.fromkeys(wanted):  # in order, once each
        if layout not in runs:
            runs[layout] = train_run(budget, layout)
    for layout in layouts:
        r = runs[layout]
        if layout == (default.runners, default.envs):
            continue  # the baseline itself
        ratio = r.steps_per_s / default.steps_per_s
        rows.append(_row(f"training env steps/s end to end, {r.runners}x{r.envs} vs default "
                         f"{name}", r.steps_per_s, default.steps_per_s, ratio,
                         "<= 1.0x (default fastest)", ratio <= 1.0, "steps/s",
                         layout=f"{r.runners}x{r.envs}", wall_s=r.wall_s))
    for runners in scaling[1:]:
        one = runs[(scaling[0], default.envs)]
        r = runs[(runners, default.envs)]
        rows.append(_row(f"training env steps/s end to end, {runners} env runners vs "
                         f"{scaling[0]} (x{default.envs} envs)", r.steps_per_s, one.steps_per_s,
                         r.steps_per_s / one.steps_per_s, "(scaling curve)", True, "steps/s",
                         layout=f"{runners}x{default.envs}", wall_s=r.wall_s))
    return rows
