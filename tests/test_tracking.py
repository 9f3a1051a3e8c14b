"""TensorBoard event files (and MLflow, file store) of a training run, read back."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from tensorboardX.proto import event_pb2
from test_training_e2e import TINY

from roadsense.errors import ConfigError
from roadsense.rllib.training import IterationReport, TrainSettings, train
from roadsense.tracking import TB_DIR, RunTracker, metric_name, require_mlflow


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the event files under `folder` (TFRecord framing: length, its crc,
    an `Event` proto, its crc), as tag -> [(step, value)] in file order."""
    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_tracker_writes_namespaced_scalars_at_env_steps(tmp_path: Path) -> None:
    tracker = RunTracker(tmp_path, {"run_id": "r", "kind": "train"}, {})
    for it, steps in ((1, 300), (2, 600)):
        tracker.iteration(vars(IterationReport(
            iteration=it, env_steps=steps, steps_per_s=50.0 * it, return_mean=-1.5 + it,
            collision_rate=0.25, false_brake_rate=None, elapsed_s=10.0 * it, lr=1e-4,
            reward_weights={"false_brake": 2.0})))
    tracker.validation({"suite": "smoke", "collision_rate": 0.0, "false_brake_rate": 0.5,
                        "score": 0.5, "seconds": 3.0, "checkpoint": "iter_000002"})
    tracker.final_eval({"trained:iter_000002": {"collision_rate": 0.1, "reaction_s_median": None}})
    tracker.finish({"status": "finished"})
    got = read_scalars(tmp_path / TB_DIR)
    assert got["train/return_mean"] == [(300, -0.5), (600, 0.5)]
    assert got["train/iteration"] == [(300, 1.0), (600, 2.0)]
    assert got["convoy/collision_rate"] == [(300, 0.25), (600, 0.25)]
    assert "convoy/false_brake_rate" not in got  # None is not plotted as 0
    assert got["reward_weights/false_brake"] == [(300, 2.0), (600, 2.0)]
    assert got["validation/smoke/false_brake_rate"] == [(600, 0.5)]
    assert got["final_eval/trained_iter_000002/collision_rate"] == [(600, pytest.approx(0.1))]
    assert "final_eval/trained_iter_000002/reaction_s_median" not in got


def test_mlflow_file_store_without_opt_in_is_refused_up_front(tmp_path: Path,
                                                               monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ConfigError, match="MLFLOW_ALLOW_FILE_STORE=true"):
        require_mlflow(f"file:{tmp_path / 'mlruns'}")
    with pytest.raises(ConfigError, match="--mlflow-uri"):
        TrainSettings(storage=str(tmp_path), iterations=1,
                      mlflow_uri=f"file:{tmp_path / 'mlruns'}").validate()
    assert not (tmp_path / "mlruns").exists() or not any((tmp_path / "mlruns").iterdir())


@pytest.mark.slow
def test_training_run_writes_event_files_and_mlflow_run(tmp_path: Path, monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"file:{tmp_path / 'mlruns'}"
    manifest = train(TrainSettings(storage=str(tmp_path / "runs"), iterations=2,
                                   mlflow_uri=uri, **TINY))
    run_dir = Path(manifest["storage"])
    rows = [json.loads(line) for line in (run_dir / "progress.jsonl").open()]
    got = read_scalars(run_dir / TB_DIR)
    # every numeric field of progress.jsonl, at its env steps
    for field, value in rows[-1].items():
        if isinstance(value, int | float) and field not in ("collision_rate",
                                                            "false_brake_rate"):
            assert got[f"train/{field}"][-1] == (rows[-1]["env_steps"], pytest.approx(value))
    assert got["train/iteration"] == [(r["env_steps"], r["iteration"]) for r in rows]
    assert [s for s, _ in got.get("train/return_mean", [])] == [
        r["env_steps"] for r in rows if r["return_mean"] is not None]
    assert "convoy/collision_rate" in got or rows[-1]["collision_rate"] is None
    (val,) = manifest["validations"]
    assert got["validation/smoke/score"] == [(rows[-1]["env_steps"], pytest.approx(val["score"]))]
    for policy, summary in manifest["final_eval"].items():
        for metric, value in summary.items():
            if value is not None:
                assert got[metric_name(f"final_eval/{policy}/{metric}")] == [
                    (rows[-1]["env_steps"], pytest.approx(value))]

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(manifest["tracking"]["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == manifest["run_id"]
    assert json.loads(run.data.params["iterations"]) == 2
    history = client.get_metric_history(run.info.run_id, "train/iteration")
    assert [m.step for m in history] == [r["env_steps"] for r in rows]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"run_manifest.json", "learning_curve.png", "policy"} <= artifacts
    assert [a.path for a in client.list_artifacts(run.info.run_id, "policy")] == [
        "policy/policy.pt"]
