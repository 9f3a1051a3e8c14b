"""`TrainSettings`: every setting of a training run, declared once.

Each field holds its type, default and documentation; fields made with `option(...)` are also
`roadsense train` flags (`roadsense.options.option`; `roadsense.cli.train` generates its
options from them: flag names, help, bounds, and the CLI's spellings of None: ``none`` for
`none_word` fields, 0 for `zero_none` ones). A run can also be given as a TOML file of these fields
(`settings_from_toml`), which the CLI's flags override.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from roadsense.errors import ConfigError
from roadsense.options import option


def cli_value(name: str, value: Any) -> Any:
    """A CLI or TOML value of field `name` as the setting (``none`` / 0 spellings -> None)."""
    meta = _FIELDS[name].metadata.get("cli", {})
    if meta.get("none_word"):
        if isinstance(value, str) and value.lower() == "none":
            return None
        if isinstance(value, list):
            return [v for v in value if not (isinstance(v, str) and v.lower() == "none")]
    if meta.get("zero_none") and value == 0:
        return None
    return value


def load_toml(path: str | Path) -> dict[str, Any]:
    """The settings a TOML file gives: top-level keys named like `TrainSettings` fields (e.g.
    ``seed = 3``, ``warm_start = "none"``, an ``[env_overrides]`` table). An unknown key, a
    file that is not TOML or a value of the wrong type is a `ConfigError` naming the file and
    the key."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}", path=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", path=path) from None
    values = {}
    for key, value in data.items():
        if key not in _FIELDS:
            raise ConfigError(f"{path}: unknown setting {key!r}", path=path,
                              fix=f"use fields of TrainSettings: {', '.join(sorted(_FIELDS))}")
        _check_type(path, key, value)
        values[key] = cli_value(key, value)
    return values


def settings_from_toml(path: str | Path, **overrides: Any) -> TrainSettings:
    """`TrainSettings` from a TOML file (`load_toml`), then `overrides` on top."""
    return TrainSettings(**(load_toml(path) | overrides))


def _check_type(path: Path, key: str, value: Any) -> None:
    hint = str(_FIELDS[key].type)  # the annotation as written, e.g. "float | None"
    want = tuple(t for name, kinds in _KINDS.items() if re.search(rf"\b{name}\b", hint)
                 for t in kinds)
    if (isinstance(value, bool) and bool not in want) or not isinstance(value, want):
        raise ConfigError(f"{path}: {key} = {value!r} is not a {hint}", path=path)


_KINDS = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,),
          "list": (list,), "dict": (dict,)}


EXPECTED_STEPS_PER_S_PER_RUNNER = 1000
"""Training env steps/s per runner, learner updates included, that sizes the schedules of a
timed run (the learning-rate decay, the false-braking ramp) and nothing else. On 2 cores the
default 2 runners make ~1,270 each end to end (`python -m benchmarks e2e`), so a decay sized
for 15 minutes ends after ~12; two runs side by side make about half."""
EXPECTED_STEPS_PER_S_PER_RUNNER_RLLIB_LOOP = 700
"""The same with RLlib's own sampling loop (``lean_sampling=False``)."""
LR_DECAY_MINUTES = 15.0
"""By default the learning rate reaches `lr_final` after this much training (or at the end of
a shorter run) and stays there, so most of an hour's checkpoints come from a slowly moving
policy: with the decay spread over the hour, checkpoints 6 minutes apart swing between 0 and
4 validation collisions in 153 and 2-13% false braking (docs/experiments.md)."""


COLLISION_WEIGHT = 4.0
"""Default weight of the collision rate (hazard episodes) in the validation score, against 1.0
for the false-braking rate (calm episodes): one collision among `validation-v3`'s 156 hazard
episodes scores like two false brakes among its 78 calm ones. A collision is the failure the
assist exists to prevent; at 1.0 one collision scored like half a false brake, and selection
preferred an early checkpoint with 1 collision and 1 false brake on validation to later ones
with 0 and 2 (docs/experiments.md)."""
REPLAY_WEIGHT = 1.0
"""Default weight of real-recording braking in the validation score. The recordings are calm
drives, so every brake there is a false one: at 1.0, braking on 2% of a recording's rows scores
like 1.6 false brakes in the 78 calm episodes of `validation-v3` (each 1.3%), and braking on
most of a drive outweighs any simulated result, as a car that brakes on calm roads is
unusable."""
DEFAULT_RECORDINGS = "recordings"
GATING_WEIGHT = 0.1
"""Default weight of the gating probe's failed validation cases (their share) in the
validation score: one failed case of nine scores like 0.9 false brakes in `validation-v3`'s 78
calm episodes. A brake for a car beside or behind is a false brake on any road with more
lanes than the convoy's, and a brake withheld because other cars read behind or beside is a
missed warning on a real drive; the suites show neither (`roadsense.eval.gating`)."""


DEFAULT_BUDGET_MINUTES = 10.0
"""The budget of a run given neither a budget nor a maximum runtime."""


@dataclass
class TrainSettings:
    """Everything a training run takes; `option(...)` fields are `roadsense train` flags."""

    dataset_dir: str | None = option(None, flags=("--dataset-dir", "--dataset"), help="training "
        "dataset folder or s3:// URI (default: the built-in default-v1)")
    """Training dataset (folder or s3://); None: the built-in default, generated on first use."""
    eval_suite: str = option("standard-v1", help="suite of the final evaluation")
    """Suite of the final evaluation (also run: no-hazard-v1, for false braking)."""
    seed: int = option(0, min=0, help="base seed of the run")
    emulator_params: str | None = option(None, help="radio parameter file (default: the packaged "
        "calibration)")
    storage: str = option("runs", help="runs folder or s3://bucket/prefix")
    """Local folder or s3://bucket/prefix for checkpoints, manifest and report."""
    num_env_runners: int | None = option(None, min=0, help="env runners (default: one per "
        "core; with --address, one per CPU of the cluster's workers at its autoscaling "
        "maximum; 0 = in this process)")
    """None: one per core, or on a cluster one per CPU it can offer
    (`roadsense.rllib.sizing`). 0: everything in this process (debug)."""
    num_envs_per_env_runner: int = option(1, min=1, help="envs per runner (the first on libsumo, "
        "the rest on traci)")
    """The first on libsumo, the others on traci (libsumo runs one simulation per process). One:
    a traci env costs ~3x a libsumo one, more than a batched forward pass saves; end to end on 2
    cores, 2 runners x 1 env train at 1.34-1.36x the steps/s of 2 x 4 (`python -m benchmarks
    layouts`)."""
    budget_minutes: float | None = DEFAULT_BUDGET_MINUTES
    """Wall-clock budget; the CLI's --budget-minutes (`roadsense.cli.train.resolve_budget`)."""
    iterations: int | None = option(None, min=1, help="stop after N iterations")
    checkpoint_every: int = option(5, min=1, help="iterations")
    resume: bool = option(False, help="continue the latest run in --storage (a new run if there is "
        "none)")
    address: str | None = option(None, help="join a Ray cluster (e.g. auto) instead of starting "
        "local Ray")
    """Join an existing Ray cluster ("auto" on a cluster node) instead of starting one."""
    train_batch_size: int = option(4000, min=64)
    minibatch_size: int = option(256, min=16)
    num_epochs: int = option(5, min=1)
    """PPO passes over each train batch. Five: at ten the learner's updates took about half of
    an iteration on a small machine (PPO samples and learns in turn), and at five passes
    `roadsense train` makes 1.3-1.5x the env steps/s of ten end to end on 2 cores
    (`python -m benchmarks e2e`), with the same results from an hour of training
    (docs/experiments.md)."""
    lr: float = option(3e-4, min=0.0, help="learning rate at the start")
    lr_final: float | None = option(3e-5, min=0.0, zero_none=True, help="learning rate reached "
        "linearly, then kept (0: keep --lr)")
    """Learning rate reached linearly from `lr` and then kept (None: constant `lr`). Checkpoints
    still differ from one another, so the checkpoint selection on `validation_suite` does most
    of the work."""
    lr_decay_steps: int | None = option(None, min=1, help="env steps of the decay (default: the "
        "run's expected length, at most 15 minutes of it)")
    """Env steps over which `lr` falls to `lr_final`; None: the run's expected length
    (`iterations` x batch, or the budget at `EXPECTED_STEPS_PER_S_PER_RUNNER`), at most
    `LR_DECAY_MINUTES` of training at that rate."""
    validation_suite: str | None = option("validation-v3", none_word=True, help="suite that picks "
        "the checkpoint to evaluate ('none': the last one)")
    """Evaluated every `validate_every_minutes` and at the end (the time counts against the
    budget); the final evaluation uses the checkpoint that scored best on it. None: the last
    checkpoint. `validation-v3` is on `val-v1`, scenarios drawn like the test ones and neither
    trained nor tested on, so its false braking estimates the test suite's; it cannot separate
    checkpoints one false brake apart (single brake blips on different roads). Its last 78
    episodes have the car directly ahead brake at 6-9 m/s^2, where a short or late brake
    collides (`v2v_rule` in 2 of them, the no-assist driver in 22), so collisions count in the
    score; on `validation-v2`'s hazards the rule collides in none."""
    validate_every_minutes: float = option(6.0, min=0.1, help="how often to validate (also at the "
        "end)")
    replay: list[str] | None = option(None, none_word=True, help="real recording (.npz) or folder "
        "of them, replayed at every validation and in the final report, repeatable (default: "
        "./recordings when it exists; 'none': no replay)")
    """Real recordings (`.npz` files, or folders of them) replayed at every validation and in
    the final report (`roadsense.eval.replay`); None: the `recordings/` folder of the current
    directory when there is one; []: none."""
    collision_weight: float = option(COLLISION_WEIGHT, min=0.0, help="weight of the collision "
        "rate in the validation score (the false-braking rate weighs 1)")
    """Weight of the validation collision rate in the validation score (`validation_score`)."""
    replay_weight: float = option(REPLAY_WEIGHT, min=0.0, help="weight of the recordings' braking "
        "share in the validation score")
    """Weight of the recordings' braking (share of rows braking > 0.1) in the validation score
    (`validation_score`)."""
    gating_weight: float = option(GATING_WEIGHT, min=0.0, help="weight of the gating probe's "
        "failed validation cases in the validation score")
    """Weight of the share of the gating probe's validation cases (`VALIDATION_CASES`) that the
    checkpoint answers unlike a driver, in the validation score (`validation_score`)."""
    entropy_coeff: float = 0.0
    false_brake_start: float | None = option(None, min=0.0, help="false-braking penalty weight at "
        "the start, raised to the env's (RewardWeights.false_brake) over 40-80% of the "
        "learning-rate decay (default: the env's weight throughout)")
    """Weight of the false-braking penalty at the start; it stays there for the first 40% of
    the learning-rate decay (`lr_decay_steps`) and rises linearly to the env's weight
    (`RewardWeights.false_brake`, 3.0) at 80% of it (None: the env's weight throughout). Off
    by default: it did not prevent a run from collapsing to "never brake"
    (docs/experiments.md)."""
    lean_sampling: bool = option(True, help="sample with LeanEnvRunner (RLlib's bookkeeping, no "
        "per-step connectors, the policy in numpy); --no-lean-sampling: RLlib's own loop")
    """Env runners sample with `LeanEnvRunner`: RLlib's episode bookkeeping without its per-step
    connector pipelines, the policy's forward pass in numpy (1.6x RLlib's sampling steps/s with
    4 envs per runner, 4.5x with one: `python -m benchmarks training`). False: RLlib's own
    loop."""
    warm_start: str | None = option("v2v_rule", none_word=True, help="start from an imitation of "
        "this baseline ('none': from scratch)")
    """Start PPO from an imitation of this baseline (`roadsense.rllib.warm_start`), fitted on
    `warm_start_steps` steps of it on the training dataset before the first iteration (the
    time counts against the budget); None: from the module's initial policy. From scratch,
    whether a run learns to brake on warnings depends on luck in its first minute
    (`roadsense.rllib.warm_start`)."""
    warm_start_steps: int = option(40_000, min=1, help="env steps of the baseline to imitate")
    warm_start_brake: float | None = option(1.0, zero_none=True, help="brake level imitated on "
        "urgent warnings when --warm-start-brake-gain is 0 (0: the baseline's own)")
    """Brake level the imitation fits on urgent warnings in hazard episodes when
    `warm_start_brake_gain` is None (None: the baseline's own, 0.8 for `v2v_rule`); the
    baseline's brakes in calm episodes are fitted as "no brake"
    (`roadsense.rllib.warm_start.imitation_targets`). Full brake, because the returns
    favour it: on training episodes `v2v_rule` braking at 1.0 returns about twice what it
    returns at 0.8, and a single peer's hard-braking report is where a brake of ~0.7 still
    collides (docs/experiments.md)."""
    warm_start_brake_gain: float | None = option(2.0, zero_none=True, help="imitated brake = "
        "this x the warning's urgency / max brake, capped at --warm-start-brake-cap (0: the flat "
        "--warm-start-brake)")
    """Imitated brakes follow how hard the warning asks the ego to brake (`warning_urgency`,
    m/s^2): this gain times that over the full brake's deceleration, capped at
    `warm_start_brake_cap`, so a distant warning draws a partial brake and a near one the cap;
    2.0 leaves a margin of two. On `validation-v3`, warm-start fits alone (two seeds, capped at
    a full brake): peak deceleration 5.2 against 6.0 at a flat full brake, median minimum TTC
    5.7-5.8 s against the rule's 5.2 s, no collisions (docs/experiments.md). None: the flat
    `warm_start_brake`."""
    warm_start_brake_cap: float = option(0.8, help="highest imitated brake level (0.8: "
        "v2v_rule's own)")
    """With `warm_start_brake_gain`, the imitated brake never exceeds this level (of the full
    brake), however urgent the warning: the assist brakes as early as the rule and at most as
    hard, and a harder stop is the driver's. At a full-brake cap the trained policies' mean
    peak deceleration runs above the rule's; scripted on `validation-v3` (`roadsense eval
    urgency_brake:cap=1 urgency_brake`), the cap at 0.8 takes the mean peak deceleration from
    4.68 to 3.93 m/s^2 (the rule: 4.39) and the speed braked off from 3.7 to 3.5 m/s. The reward's
    `hazard_response_max_brake` stops paying at the same level and its `over_cap` charges for
    braking above it, so PPO is not paid to go past it."""
    gating_counterexamples: bool = option(True, help="add copies of the demonstrations with "
        "cars moved behind or beside the ego: the braking car (imitated as no brake), the cars "
        "of calm steps (no brake) and the other cars of warning steps (brake as before)")
    """Teach the gate a driver applies: brake for a hard-braking car ahead in the lane, not for
    one behind or beside, and the same whatever the other cars around do; the convoy scenarios
    show neither (`roadsense.rllib.warm_start.with_gating_counterexamples`)."""
    imitation_weight: float = option(1.0, min=0.0, help="weight of the imitation term kept in "
        "PPO's loss (0: plain PPO after the warm start)")
    """Weight of the imitation term added to PPO's loss for the whole run, on the warm start's
    demonstrations (`roadsense.rllib.learner`); 0, or no `warm_start`: plain PPO."""
    env_overrides: dict[str, Any] = field(default_factory=dict)
    """EnvConfig fields to override (e.g. {"episode_s": 20.0})."""
    final_eval: bool = option(True, help="evaluate on the suite at the end")
    eval_no_hazard_suite: str | None = "no-hazard-v1"
    dataset_root: str = "datasets"
    mlflow_uri: str | None = option(None, help="also track the run in MLflow (a tracking server "
        "URL, or file:PATH); TensorBoard event files go under the run folder either way")
    """Also track the run in MLflow at this URI (`roadsense.tracking`); TensorBoard event
    files are written under the run folder either way."""

    def decay_steps(self, runners: int) -> int:
        """Env steps of the learning-rate decay: `lr_decay_steps`, or the run's expected
        length (`iterations` x batch, or the budget at the expected rate), at most
        `LR_DECAY_MINUTES` of training."""
        if self.lr_decay_steps is not None:
            return int(self.lr_decay_steps)
        per_s = (EXPECTED_STEPS_PER_S_PER_RUNNER if self.lean_sampling
                 else EXPECTED_STEPS_PER_S_PER_RUNNER_RLLIB_LOOP)
        rate = 60 * per_s * max(1, runners)  # steps per minute
        expected = [int(LR_DECAY_MINUTES * rate)]
        if self.iterations is not None:
            expected.append(self.iterations * self.train_batch_size)
        if self.budget_minutes is not None:
            expected.append(int(self.budget_minutes * rate))
        return min(expected)

    def lr_schedule(self, runners: int) -> float | list[list[float]]:
        """RLlib's `lr`: a constant, or [[0, lr], [decay steps, lr_final]] (linear)."""
        if self.lr_final is None:
            return self.lr
        return [[0, self.lr], [self.decay_steps(runners), self.lr_final]]

    def reward_schedule(self, runners: int, false_brake: float
                        ) -> dict[str, list[list[float]]] | None:
        """The env runners' reward schedule (see `false_brake_start`); `false_brake` is the
        env's weight, reached at 80% of the learning-rate decay."""
        if self.false_brake_start is None or self.false_brake_start == false_brake:
            return None
        steps = self.decay_steps(runners)
        return {"false_brake": [[0, self.false_brake_start],
                                [int(0.4 * steps), self.false_brake_start],
                                [int(0.8 * steps), false_brake]]}

    def validate(self) -> None:
        problems = []
        if self.budget_minutes is None and self.iterations is None:
            problems.append("give --budget-minutes or --iterations (or both)")
        if self.budget_minutes is not None and self.budget_minutes <= 0:
            problems.append(f"--budget-minutes must be > 0, got {self.budget_minutes}")
        if self.iterations is not None and self.iterations <= 0:
            problems.append(f"--iterations must be > 0, got {self.iterations}")
        if self.num_env_runners is not None and self.num_env_runners < 0:
            problems.append(f"--num-env-runners must be >= 0, got {self.num_env_runners}")
        if self.checkpoint_every < 1:
            problems.append("--checkpoint-every must be >= 1")
        if self.lr <= 0 or (self.lr_final is not None and self.lr_final <= 0):
            problems.append("--lr and --lr-final must be > 0")
        if self.false_brake_start is not None and self.false_brake_start < 0:
            problems.append(f"--false-brake-start must be >= 0, got {self.false_brake_start}")
        if self.lr_decay_steps is not None and self.lr_decay_steps < 1:
            problems.append(f"--lr-decay-steps must be >= 1, got {self.lr_decay_steps}")
        if self.validate_every_minutes <= 0:
            problems.append("--validate-every-minutes must be > 0")
        from roadsense.envs.baselines import BASELINES

        if self.warm_start is not None and self.warm_start not in BASELINES:
            problems.append(f"--warm-start {self.warm_start!r} is not a baseline; one of "
                            f"{sorted(BASELINES)} or none")
        if self.warm_start_steps < 1:
            problems.append(f"--warm-start-steps must be >= 1, got {self.warm_start_steps}")
        if self.warm_start_brake is not None and not 0.05 < self.warm_start_brake <= 1.0:
            problems.append(f"--warm-start-brake must be in (0.05, 1] (above the brake "
                            f"threshold), got {self.warm_start_brake}")
        gain = self.warm_start_brake_gain
        if gain is not None and not (math.isfinite(gain) and gain > 0):
            problems.append(f"--warm-start-brake-gain must be > 0 (0: none), got {gain}")
        cap = self.warm_start_brake_cap
        if not (math.isfinite(cap) and 0.05 < cap <= 1.0):
            problems.append(f"--warm-start-brake-cap must be in (0.05, 1] (above the brake "
                            f"threshold), got {cap}")
        if not (math.isfinite(self.imitation_weight) and self.imitation_weight >= 0):
            problems.append(f"--imitation-weight must be >= 0, got {self.imitation_weight}")
        if not (math.isfinite(self.collision_weight) and self.collision_weight >= 0):
            problems.append(f"--collision-weight must be >= 0, got {self.collision_weight}")
        if not (math.isfinite(self.replay_weight) and self.replay_weight >= 0):
            problems.append(f"--replay-weight must be >= 0, got {self.replay_weight}")
        if problems:
            raise ConfigError("; ".join(problems), fix="see `roadsense train --help`")
        if self.mlflow_uri:
            from roadsense.tracking import require_mlflow

            require_mlflow(self.mlflow_uri)
        if self.validation_suite:  # a bad name fails now, not at the first validation
            from roadsense.data import load_suite

            load_suite(self.validation_suite)
        self.load_recordings()  # so does a bad recording

    def load_recordings(self) -> list[Any]:
        """The recordings `replay` names, loaded and checked (`RecordingError` if unusable)."""
        from roadsense.eval.replay import load_recording, recording_paths

        if self.replay is None:
            default = Path(DEFAULT_RECORDINGS)
            paths = recording_paths([default]) if default.is_dir() else []
        else:
            paths = recording_paths(self.replay)
        return [load_recording(p) for p in paths]


_FIELDS = {f.name: f for f in fields(TrainSettings)}
