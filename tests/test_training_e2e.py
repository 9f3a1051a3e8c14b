"""End to end: a tiny real training run (local Ray, real SUMO), checkpoint, resume, evaluate.

Budgets are tiny on purpose; learning itself is measured by benchmarks/learning.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import _descendants

from roadsense import run_manifest
from roadsense.eval.gating import VALIDATION_CASES
from roadsense.rllib.training import (
    EXPECTED_STEPS_PER_S_PER_RUNNER,
    LR_DECAY_MINUTES,
    TrainSettings,
    latest_run,
    train,
)

pytestmark = pytest.mark.slow

TINY = dict(train_batch_size=300, minibatch_size=100, num_epochs=1, num_env_runners=1,
            checkpoint_every=1, budget_minutes=None, eval_suite="smoke",
            eval_no_hazard_suite=None, validation_suite="smoke",
            env_overrides={"episode_s": 12.0}, warm_start_steps=1500)


@pytest.fixture
def leftovers():
    """Call it at the end of a test: processes the test started (Ray, SUMO) still alive after
    30 s. Processes that were there before (a session-wide moto server) do not count."""
    before = _descendants(os.getpid())

    def check(wait_s: float = 30.0) -> list[int]:
        deadline = time.monotonic() + wait_s
        while (left := sorted(_descendants(os.getpid()) - before)) and (
                time.monotonic() < deadline):
            time.sleep(0.5)
        return left

    return check


def test_train_checkpoint_resume_evaluate(tmp_path: Path, leftovers) -> None:
    storage = str(tmp_path / "runs")
    first = train(TrainSettings(storage=storage, iterations=2, final_eval=False,
                                false_brake_start=1.0, **TINY))
    run_dir = Path(first["storage"])
    assert first["status"] == "finished"
    assert [e["iteration"] for e in first["evaluations"]] == [1, 2]
    assert first["dataset_manifest_hash"] and first["emulator_params_version"]
    assert first["versions"]["ray"] == "2.60.0"
    assert first["seeds"]["workers"], "every seed the workers used is recorded"
    warm = first["warm_start"]  # started from an imitation of the rule, its seed recorded
    assert warm["baseline"] == "v2v_rule" and warm["steps"] >= 1500 and warm["seed"] > 0
    assert 0 < warm["braking_share"] < 1
    assert (run_dir / "checkpoints" / "iter_000002" / "policy.pt").is_file()
    # validated at the end (the run is shorter than the interval), on the smoke suite
    assert [(v["checkpoint"], v["suite"]) for v in first["validations"]] == [
        ("iter_000002", "smoke")]
    assert first["selected_checkpoint"] == "iter_000002"
    # the repo's real recordings are replayed at every validation and count in its score
    assert [r["name"] for r in first["replay_recordings"]] == ["calibration_drive_2026-02-21"]
    assert len(first["replay_recordings"][0]["sha256"]) == 64
    v = first["validations"][0]
    assert 0.0 <= v["replay_brake_share"] <= 1.0
    # the gating probe's validation cases count too (default weight 0.1, nine judged cases)
    judged = sum(c.should_brake is not None for c in VALIDATION_CASES)
    assert judged == 9 and 0 <= v["gating_failed"] <= judged
    assert v["score"] == pytest.approx(v["collision_rate"] + v["false_brake_rate"]
                                       + v["replay_brake_share"]
                                       + 0.1 * v["gating_failed"] / judged)
    # the learning rate falls linearly over the run's 2 x 300 steps
    rows = [json.loads(line) for line in (run_dir / "progress.jsonl").open()]
    # the warm start counts against the budget: the first iteration's clock includes it
    assert 0 < warm["seconds"] < rows[0]["elapsed_s"]
    assert rows[0]["lr"] < 3e-4 and rows[1]["lr"] < rows[0]["lr"]
    # the false-braking penalty: 1.0 until 40% of the decay (240 steps), 3.0 from 80% (480)
    # (iteration 2 samples with the weight at the step count iteration 1 ended on)
    ramp = 1.0 + 2.0 * (rows[0]["env_steps"] - 240) / 240
    assert 1.0 < ramp < 3.0
    assert [r["reward_weights"] for r in rows] == [{"false_brake": 1.0},
                                                   {"false_brake": pytest.approx(ramp)}]
    # the imitation term is in the loss of every update (default weight 1.0), and it measures
    # the fitted policy: the unfitted start (mean -1.5, braking targets +1.0 weighing half)
    # would score about 0.5 x 2.5^2 = 3.1
    assert all(0 < r["imitation_loss"] < 1.0 for r in rows), [r["imitation_loss"] for r in rows]

    again = train(TrainSettings(storage=storage, iterations=3, resume=True, **TINY))
    assert again["run_id"] == first["run_id"]
    assert again["warm_start"] == warm  # a resumed run starts from its checkpoint, not again
    # ... and imitates the same demonstrations (made again from the recorded seed)
    rows = [json.loads(line) for line in (run_dir / "progress.jsonl").open()]
    assert [r["iteration"] for r in rows] == [1, 2, 3] and rows[2]["imitation_loss"] > 0
    assert [e["iteration"] for e in again["evaluations"]] == [1, 2, 3]
    assert [v["checkpoint"] for v in again["validations"]] == ["iter_000002", "iter_000003"]
    best = min(again["validations"], key=lambda v: (v["score"], -v["iteration"]))
    assert again["selected_checkpoint"] == best["checkpoint"]
    assert f"Evaluation of {best['checkpoint']}" in (run_dir / "eval" / "report.md").read_text()
    assert again["final_eval"].keys() >= {"no_assist", "v2v_rule"}
    # the gentleness figures, per hazard episode: the rule brakes at 0.8 of 8 m/s^2 or not at all
    rule, none = again["final_eval"]["v2v_rule"], again["final_eval"]["no_assist"]
    assert rule["brake_steps_per_hazard_episode"] > 0
    assert 0 < rule["peak_decel_mps2_mean"] <= 0.8 * 8.0 + 1e-9
    assert none["brake_steps_per_hazard_episode"] == none["peak_decel_mps2_mean"] == 0
    assert (run_dir / "eval" / "report.md").is_file()
    assert (run_dir / "eval" / "metrics.parquet").is_file()
    # ... and the final report replays the picked checkpoint and both baselines
    replayed = again["final_replay"]["calibration_drive_2026-02-21"]
    trained = next(k for k in again["final_eval"] if k not in ("no_assist", "v2v_rule"))
    assert replayed.keys() == {trained, "no_assist", "v2v_rule"}
    assert replayed["no_assist"]["brake_share"] == 0.0
    assert "calibration_drive_2026-02-21" in (run_dir / "eval" / "replay.md").read_text()
    # ... and probes its gating beside the rule's
    gating = again["final_gating"]
    assert gating.keys() == {trained, "v2v_rule"} and gating["v2v_rule"]["passed"]
    assert "behind 15 m" in (run_dir / "eval" / "gating.md").read_text()
    assert run_manifest.load(run_dir)["status"] == "finished"
    assert latest_run(storage)[0] == first["run_id"]
    assert leftovers() == []


def _env_runner_sumos() -> list[int]:
    """SUMO processes (ours) whose parent is an env runner actor (Ray names its process
    `ray::<ActorClass>...`), not the driver's own envs."""
    out = subprocess.run(["pgrep", "-x", "sumo"], capture_output=True, text=True).stdout
    ours = _descendants(os.getpid())
    found = []
    for pid in (int(p) for p in out.split()):
        try:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            parent = Path(f"/proc/{ppid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if pid in ours and "EnvRunner" in parent:
            found.append(pid)
    return found


def test_sumo_killed_mid_training_is_survived(tmp_path: Path, leftovers) -> None:
    """An env runner's SUMO (traci backend: its own process) is SIGKILLed during sampling; the
    episode is dropped, the env rebuilt, and training finishes with nothing left behind."""
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not killed:
            pids = _env_runner_sumos()
            if pids:
                time.sleep(1.0)  # let it run a little
                try:
                    os.kill(pids[0], signal.SIGKILL)
                    killed.append(pids[0])
                except ProcessLookupError:
                    pass
            time.sleep(0.1)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    settings = TrainSettings(storage=str(tmp_path / "runs"), iterations=3, final_eval=False,
                             **{**TINY, "env_overrides": {"episode_s": 12.0,
                                                          "sumo_backend": "traci"}})
    manifest = train(settings)
    thread.join(timeout=5)
    assert killed, "the test never found an env runner's SUMO to kill"
    assert manifest["status"] == "finished"
    assert len(manifest["evaluations"]) == 3
    assert "dropped_episodes" not in manifest, "the driver's own SUMOs were not touched"
    assert leftovers() == []


def _params_file(tmp_path: Path, overall_loss: float) -> Path:
    from roadsense.comms.params import default_params_path

    raw = json.loads(default_params_path().read_text())
    raw["loss"]["overall_loss"] = overall_loss
    path = tmp_path / "params.json"
    path.write_text(json.dumps(raw))
    return path


def test_driver_sumo_deaths_and_provenance(tmp_path: Path, leftovers, monkeypatch) -> None:
    """A run whose warm start loses SUMO in every episode fails with the reason in its
    manifest and leaves Ray down; a run whose SUMO is killed once in the warm start, a
    validation and the final evaluation finishes and lists the dropped episodes. That run
    trains on another radio and episode length, which its manifest records and its
    validation and final evaluation use."""
    import ray

    from roadsense.comms import params_version
    from roadsense.envs.episodes import KILL_HOOK_ENV, MAX_CONSECUTIVE_CRASHES
    from roadsense.errors import SumoCrashedError

    crashes = MAX_CONSECUTIVE_CRASHES + 1
    monkeypatch.setenv(KILL_HOOK_ENV, ",".join(f"warm_start:{i}:5" for i in range(crashes)))
    with pytest.raises(SumoCrashedError, match=f"died {crashes} times in a row"):
        train(TrainSettings(storage=str(tmp_path / "failed"), iterations=1, **TINY))
    assert not ray.is_initialized(), "a failed run shuts Ray down"
    (failed_dir,) = (tmp_path / "failed").iterdir()
    failed = run_manifest.load(failed_dir)
    assert failed["status"] == "failed" and f"died {crashes} times" in failed["failure"]
    assert [(d["place"], d["episode"]) for d in failed["dropped_episodes"]] == [
        ("warm_start", i) for i in range(crashes)]

    params = _params_file(tmp_path, overall_loss=0.25)
    monkeypatch.setenv(KILL_HOOK_ENV, "warm_start:1:20,validation:2:20,final_eval:0:20")
    manifest = train(TrainSettings(storage=str(tmp_path / "runs"), iterations=1,
                                   emulator_params=str(params), **TINY))
    run_dir = Path(manifest["storage"])
    assert manifest["status"] == "finished"
    dropped = [(d["place"], d["episode"], d.get("policy")) for d in manifest["dropped_episodes"]]
    ckpt = manifest["selected_checkpoint"]
    trained = f"trained:{ckpt}"
    assert dropped == [("warm_start", 1, "v2v_rule"), ("validation", 2, trained),
                       ("final_eval", 0, trained), ("final_eval", 0, "no_assist"),
                       ("final_eval", 0, "v2v_rule")]
    (validation,) = manifest["validations"]
    assert validation["episodes"] == 4 and validation["dropped_episodes"] == 1

    # provenance: the params actually used (by content) and the env overrides
    assert manifest["emulator_params_version"] == params_version(params)
    assert manifest["emulator_params_version"] != params_version()
    assert manifest["env_overrides"] == {"episode_s": 12.0}
    # ... and validation and the final evaluation ran on them: 12 s episodes, and the smoke
    # episodes that leave the radio at its reference level report the file's loss
    rows = [json.loads(line) for line in (run_dir / "validations" / f"{ckpt}.jsonl").open()]
    import pandas as pd

    final = pd.read_parquet(run_dir / "eval" / "metrics.parquet").to_dict("records")
    for r in rows + final:
        assert r["steps"] <= 120
    reference = {0, 2, 4}  # smoke episodes with radio {}
    assert {r["radio_loss_rate"] for r in rows + final if r["episode"] in reference} == {0.25}
    report = (run_dir / "eval" / "report.md").read_text()
    assert manifest["emulator_params_version"] in report and '"episode_s": 12.0' in report
    assert leftovers() == []


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    from roadsense.errors import ConfigError, EvalSuiteError

    with pytest.raises(ConfigError, match="budget"):
        train(TrainSettings(storage=str(tmp_path), budget_minutes=None, iterations=None))
    with pytest.raises(ConfigError, match="iterations"):
        train(TrainSettings(storage=str(tmp_path), iterations=0))
    with pytest.raises(ConfigError, match="--warm-start 'nope' is not a baseline"):
        train(TrainSettings(storage=str(tmp_path), iterations=1, warm_start="nope"))
    with pytest.raises(ConfigError, match="--warm-start-steps"):
        train(TrainSettings(storage=str(tmp_path), iterations=1, warm_start_steps=0))
    with pytest.raises(ConfigError, match="--warm-start-brake must be in"):
        train(TrainSettings(storage=str(tmp_path), iterations=1, warm_start_brake=0.01))
    with pytest.raises(ConfigError, match="--warm-start-brake-gain must be > 0"):
        train(TrainSettings(storage=str(tmp_path), iterations=1, warm_start_brake_gain=-1.0))
    with pytest.raises(ConfigError, match="--warm-start-brake-cap must be in"):
        train(TrainSettings(storage=str(tmp_path), iterations=1, warm_start_brake_cap=1.5))
    with pytest.raises(ConfigError, match="--imitation-weight must be >= 0"):
        train(TrainSettings(storage=str(tmp_path), iterations=1, imitation_weight=-1.0))
    with pytest.raises(ConfigError, match="--replay-weight must be >= 0"):
        train(TrainSettings(storage=str(tmp_path), iterations=1, replay_weight=-1.0))
    with pytest.raises(ConfigError, match="--collision-weight must be >= 0"):
        train(TrainSettings(storage=str(tmp_path), iterations=1, collision_weight=float("nan")))
    with pytest.raises(ConfigError, match="recording not found"):  # before any Ray start
        train(TrainSettings(storage=str(tmp_path), iterations=1, replay=["nope.npz"]))
    with pytest.raises(EvalSuiteError, match="no eval suite 'nope'"):  # before any Ray start
        train(TrainSettings(storage=str(tmp_path), iterations=1, validation_suite="nope"))
    assert TrainSettings(iterations=10, train_batch_size=400).lr_schedule(runners=2) == [
        [0, 3e-4], [4000, 3e-5]]
    assert TrainSettings(budget_minutes=1, lr_final=None).lr_schedule(runners=2) == 3e-4
    # a timed run decays over its expected length, at most LR_DECAY_MINUTES of it
    per_minute = 60 * EXPECTED_STEPS_PER_S_PER_RUNNER * 2
    assert TrainSettings(budget_minutes=5).lr_schedule(runners=2)[1][0] == 5 * per_minute
    assert TrainSettings(budget_minutes=60).lr_schedule(runners=2)[1] == [
        int(LR_DECAY_MINUTES * per_minute), 3e-5]
    decay = int(LR_DECAY_MINUTES * per_minute)
    assert TrainSettings(budget_minutes=60, false_brake_start=1.0).reward_schedule(
        runners=2, false_brake=3.0) == {
        "false_brake": [[0, 1.0], [int(0.4 * decay), 1.0], [int(0.8 * decay), 3.0]]}
    assert TrainSettings().reward_schedule(2, false_brake=3.0) is None  # off by default
    assert TrainSettings(false_brake_start=3.0).reward_schedule(2, false_brake=3.0) is None
    with pytest.raises(ConfigError, match="--false-brake-start"):
        TrainSettings(false_brake_start=-1.0).validate()
