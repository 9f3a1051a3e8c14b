"""A spot interruption: the training process group is SIGKILLed mid-run; `--resume` continues
from the last checkpoint on S3 (moto's server) and loses at most one checkpoint interval."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest
from conftest import _descendants

pytestmark = pytest.mark.slow

TINY = ["--train-batch-size", "300", "--minibatch-size", "100", "--num-epochs", "1",
        "--num-env-runners", "1", "--checkpoint-every", "1", "--no-final-eval",
        "--env", "episode_s=12", "--budget-minutes", "30", "--validation-suite", "smoke",
        "--warm-start-steps", "1500"]


def _manifest(bucket: str) -> dict | None:
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])
            if o["Key"].endswith("run_manifest.json")]
    if not keys:
        return None
    return json.loads(s3.get_object(Bucket=bucket, Key=keys[0])["Body"].read())


def _train(storage: str, iterations: int, tmp: Path, resume: bool) -> subprocess.Popen:
    env = {**os.environ, "ROADSENSE_CACHE": str(tmp)}  # fresh local mirror: state from S3
    tmp.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "roadsense", "train", "--storage", storage,
           "--iterations", str(iterations), *TINY] + (["--resume"] if resume else [])
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def test_killed_run_resumes_from_s3(s3_bucket: str, tmp_path: Path) -> None:
    storage = f"s3://{s3_bucket}/runs"
    before = _descendants(os.getpid())  # the moto server
    proc = _train(storage, 8, tmp_path / "first", resume=False)
    try:
        deadline = time.monotonic() + 400
        while True:
            m = _manifest(s3_bucket)
            if m and len(m["evaluations"]) >= 2:
                break
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "training made no checkpoint in time"
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole machine goes, Ray included
        proc.wait()
    at_kill = _manifest(s3_bucket)
    last_ckpt = at_kill["evaluations"][-1]["iteration"]
    assert at_kill["status"] == "running"

    again = _train(storage, last_ckpt + 2, tmp_path / "second", resume=True)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    final = _manifest(s3_bucket)
    assert final["run_id"] == at_kill["run_id"] and final["status"] == "finished"
    its = [e["iteration"] for e in final["evaluations"]]
    # nothing before the last checkpoint is redone, nothing after it is skipped
    assert its == list(range(1, last_ckpt + 3)), its
    assert final["resumed"], "the manifest records the resume"
    deadline = time.monotonic() + 30
    while (left := _descendants(os.getpid()) - before) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, "a SUMO or Ray process outlived the runs"
