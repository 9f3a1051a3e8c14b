"""SageMaker's container contract, exercised offline: docker/entrypoint.sh runs against a
simulated /opt/ml tree the way a tuning job's child starts it (`<image> train`), trains for the
budget its hyperparameters ask, exports the model to /opt/ml/model, prints metric lines that the
tuning job's regex reads, and a second start of the same job (a spot restart) resumes from the
checkpoint directory.

The image's user: as root, with this interpreter usable by uid 1000, the entry point runs as
uid 1000 (the image's `ray`) through setpriv; otherwise as the current user (CI runners run
tests as a non-root user already; a root whose Python lives under a private /root cannot
lend it to uid 1000).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from roadsense import run_manifest
from roadsense.cloud.sagemaker import TrainingJobSpec, TuningJobSettings, build_tuning_job_request
from scenario_factory import GeneratorSettings, generate_dataset

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"
IMAGE_UID = 1000
"""The image's user `ray` (docker/Dockerfile: useradd --uid 1000)."""
BUDGET_MIN = 0.3
JOB = "roadsense-tune-001-3f9a2c1d"

# hyperparameters.json as SageMaker writes it for a tuning job's child: every value a string,
# the static hyperparameters, the tuned ones, SageMaker's own bookkeeping keys.
HYPERPARAMETERS = {
    "_tuning_objective_metric": "validation/score",
    "sagemaker_container_log_level": "20",
    "sagemaker_job_name": f'"{JOB}"',
    "sagemaker_region": '"us-east-1"',
    "max-runtime-minutes": str(BUDGET_MIN),
    "lr": "0.00041",
    "warm-start": "none",
    "validation-suite": "smoke",
    "validate-every-minutes": "100",
    "final-eval": "false",
    "num-env-runners": "0",
    "train-batch-size": "200",
    "minibatch-size": "100",
    "num-epochs": "1",
    "env": "episode_s=12",
}
INPUT_DATA_CONFIG = {
    "dataset": {"TrainingInputMode": "FastFile", "S3DistributionType": "FullyReplicated",
                "RecordWrapperType": "None"},
}  # fmt: skip


def _runs_as_image_user() -> list[str]:
    """setpriv's prefix when this process may and can run the venv's Python as uid 1000."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        return []
    prefix = ["setpriv", f"--reuid={IMAGE_UID}", f"--regid={IMAGE_UID}", "--clear-groups"]
    # Through a shell, as the entry point starts Python (setpriv's own exec is more lenient).
    probe = subprocess.run([*prefix, "bash", "-c", f'"{sys.executable}" -c "import roadsense"'],
                           capture_output=True, timeout=60, env={"PYTHONPATH": str(ROOT)})
    return prefix if probe.returncode == 0 else []


@pytest.fixture(scope="module")
def opt_ml() -> Iterator[Path]:
    """A simulated SageMaker container filesystem: /opt/ml, a home, a temp dir, and `roadsense`
    on PATH (this checkout's CLI, as /opt/venv/bin/roadsense is in the image). Directly under
    /tmp, whatever TMPDIR says: pytest's own base is private to the user running the tests, and
    Ray's socket paths under the tree's temp dir must stay within AF_UNIX's 107 bytes."""
    base = Path(tempfile.mkdtemp(prefix="rs-sm-", dir="/tmp"))
    try:
        yield _build_tree(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _build_tree(base: Path) -> Path:
    ml = base / "opt" / "ml"
    config = ml / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(HYPERPARAMETERS))
    (config / "inputdataconfig.json").write_text(json.dumps(INPUT_DATA_CONFIG))
    (config / "resourceconfig.json").write_text(json.dumps(
        {"current_host": "algo-1", "hosts": ["algo-1"]}))
    generate_dataset(GeneratorSettings(dataset_id="sm-contract", seed=5, count=4),
                     ml / "input" / "data" / "dataset", workers=1)
    for folder in (ml / "checkpoints", ml / "model", ml / "output", base / "home",
                   base / "tmp", base / "bin"):
        folder.mkdir(parents=True, exist_ok=True)
    cli = base / "bin" / "roadsense"
    cli.write_text(f'#!/bin/sh\nexec {sys.executable} -m roadsense "$@"\n')
    cli.chmod(0o755)
    return base


def _start(base: Path, prefix: list[str]) -> subprocess.CompletedProcess[str]:
    """`<image> train` as SageMaker runs it: the environment SageMaker sets, nothing else."""
    ml = base / "opt" / "ml"
    env = {
        "PATH": f"{base / 'bin'}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(base / "home"), "TMPDIR": str(base / "tmp"), "PYTHONPATH": str(ROOT),
        "TRAINING_JOB_NAME": JOB, "SM_MODEL_DIR": str(ml / "model"),
        "SM_CHANNEL_DATASET": str(ml / "input" / "data" / "dataset"),
        "SM_INPUT_CONFIG_DIR": str(ml / "input" / "config"),
        "RS_CHECKPOINT_DIR": str(ml / "checkpoints"),
    }  # fmt: skip
    if prefix:
        subprocess.run(["chown", "-R", f"{IMAGE_UID}:{IMAGE_UID}", str(base)], check=True)
    return subprocess.run([*prefix, "bash", str(ENTRYPOINT), "train"], env=env, cwd=base,
                          capture_output=True, text=True, timeout=600)


def _left_running(base: Path, wait_s: float = 30.0) -> list[str]:
    """Command lines of processes still running that mention the simulated tree (Ray, SUMO)."""
    deadline = time.monotonic() + wait_s
    while True:
        left = []
        for entry in os.listdir("/proc"):
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, ValueError):
                continue
            if entry.isdigit() and str(base) in cmd:
                left.append(cmd[:120])
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def test_entrypoint_meets_sagemakers_contract(opt_ml: Path):
    base, ml = opt_ml, opt_ml / "opt" / "ml"
    prefix = _runs_as_image_user()
    first = _start(base, prefix)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    # Checkpoints in the job's own folder of the checkpoint directory.
    (run,) = (ml / "checkpoints" / JOB).iterdir()
    manifest = run_manifest.load(run)
    assert manifest["status"] == "finished"
    # The hyperparameters reached `roadsense train`; SageMaker's own keys did not.
    assert manifest["config"]["lr"] == pytest.approx(0.00041)
    assert manifest["config"]["budget_minutes"] == BUDGET_MIN
    assert manifest["config"]["final_eval"] is False
    # It trained for the budget asked: the last iteration ended at or past it.
    rows = [json.loads(line) for line in (run / "progress.jsonl").open()]
    assert rows[-1]["elapsed_s"] >= BUDGET_MIN * 60
    assert rows[-2]["elapsed_s"] < BUDGET_MIN * 60  # and stopped there
    # The model SageMaker uploads: the picked policy and the run manifest.
    assert (ml / "model" / "policy.pt").is_file()
    assert json.loads((ml / "model" / "run_manifest.json").read_text())["run_id"] == run.name

    # Metric lines the tuning job's regex reads (the request's MetricDefinitions).
    request = build_tuning_job_request(
        TrainingJobSpec(job_name="roadsense-tune", image_uri="1.dkr.ecr.x/roadsense:1",
                        role_arn="arn:aws:iam::000000000000:role/r", dataset_uri="s3://b/d",
                        output_uri="s3://b/o", checkpoint_uri="s3://b/c"),
        TuningJobSettings(name="roadsense-tune", ranges=["lr=1e-5:1e-3:log"]))
    (metric,) = request["TrainingJobDefinition"]["AlgorithmSpecification"]["MetricDefinitions"]
    assert metric["Name"] == HYPERPARAMETERS["_tuning_objective_metric"]
    values = [float(v) for v in re.findall(metric["Regex"], first.stdout)]
    # One per validation, then the picked checkpoint's score last (SageMaker keeps the last).
    (picked,) = [v for v in manifest["validations"]
                 if v["checkpoint"] == manifest["selected_checkpoint"]]
    assert len(values) == len(manifest["validations"]) + 1
    assert values[-1] == pytest.approx(picked["score"]) and 0.0 <= values[-1] <= 2.0
    last_iteration = rows[-1]["iteration"]
    assert not _left_running(base), "Ray or SUMO outlived the container's command"

    # A second start of the same job (spot restart): resumes the run from the checkpoints.
    (ml / "model" / "policy.pt").unlink()
    second = _start(base, prefix)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert [p.name for p in (ml / "checkpoints" / JOB).iterdir()] == [run.name]
    resumed = run_manifest.load(run)
    assert len(resumed["resumed"]) == 1
    rows = [json.loads(line) for line in (run / "progress.jsonl").open()]
    assert rows[-1]["iteration"] > last_iteration
    assert (ml / "model" / "policy.pt").is_file()
    assert not _left_running(base), "Ray or SUMO outlived the container's command"
