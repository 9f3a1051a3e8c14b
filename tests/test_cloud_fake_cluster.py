"""`ray up` rehearsed offline: the literal `ray up -y` brings up a cluster derived from
cluster.yaml (roadsense.cloud.fake_cluster) on Ray's fake multi-node provider made fit for it
(roadsense.cloud.fake_provider): the file's head start commands start the head, the autoscaler
launches worker nodes for the env runners and Ray's installer runs the file's worker start
commands on them, every node pulls the dataset from the moto S3 server with the file's setup
command; `ray job submit` runs `roadsense train --address auto`, the runners spread over
the workers (none on the head, which offers no CPU), checkpoints go to the moto S3 server, and
`ray down -y` leaves nothing running."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import boto3
import pytest

from roadsense.cloud.fake_cluster import FakeCluster
from roadsense.cloud.fake_provider import FAKE_HEAD_NODE_ID
from roadsense.data.storage import upload_dir
from scenario_factory import GeneratorSettings, generate_dataset

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 2


def _bin_dir(tmp_path: Path) -> str:
    """A folder with `roadsense` (this checkout's CLI), standing in for the image's venv."""
    folder = tmp_path / "bin"
    folder.mkdir()
    cli = folder / "roadsense"
    cli.write_text(f'#!/bin/sh\nexec {sys.executable} -m roadsense "$@"\n')
    cli.chmod(0o755)
    return str(folder)


def test_ray_up_job_submit_and_down_on_the_fake_provider(s3_bucket: str, tmp_path: Path):
    dataset = tmp_path / "train"
    generate_dataset(GeneratorSettings(dataset_id="fake-cluster", seed=11, count=4), dataset,
                     workers=1)
    dataset_uri = f"s3://{s3_bucket}/datasets/fake-cluster"
    upload_dir(dataset, dataset_uri)  # docs/cloud.md: `roadsense scenarios push`
    cluster = FakeCluster(ROOT / "cluster.yaml", max_workers=WORKERS, worker_cpus=1,
                          bin_dirs=[_bin_dir(tmp_path), str(Path(sys.executable).parent)],
                          env={"PYTHONPATH": str(ROOT)}, dataset_uri=dataset_uri)
    try:
        cluster.up()
        # cluster.yaml's setup command pulled the dataset from S3 on the head
        head_log = (cluster.root / "logs" / f"{FAKE_HEAD_NODE_ID}.log").read_text()
        assert "roadsense scenarios pull" in head_log
        pulled = json.loads((cluster.dataset_dir / "manifest.json").read_text())
        assert pulled == json.loads((dataset / "manifest.json").read_text())
        # docs/cloud.md's submit command, with a tiny run; --num-env-runners left to the
        # cluster's size (one per worker CPU at the autoscaler's maximum).
        job = cluster.submit([
            "roadsense", "train", "--address", "auto", "--dataset", str(cluster.dataset_dir),
            "--storage", f"s3://{s3_bucket}/runs", "--max-runtime-minutes", "0.4",
            "--num-envs-per-env-runner", "1", "--train-batch-size", "200",
            "--minibatch-size", "100", "--num-epochs", "1", "--env", "episode_s=12",
            "--warm-start-steps", "300", "--validation-suite", "smoke",
            "--validate-every-minutes", "100", "--no-final-eval",
        ], submission_id="rehearsal", timeout_s=600)  # fmt: skip
        assert cluster.job_status("rehearsal") == "SUCCEEDED", (job.stdout[-3000:]
                                                                + job.stderr[-2000:])

        nodes = cluster.nodes()
        (head,) = [n for n in nodes if n["is_head_node"]]
        workers = [n for n in nodes if not n["is_head_node"]]
        assert len(workers) >= WORKERS
        runners = cluster.actors("LeanEnvRunner")
        assert len(runners) == WORKERS * 1  # sized to the cluster: 2 workers x 1 CPU
        spread = {a["node_id"] for a in runners}
        assert len(spread) == WORKERS and head["node_id"] not in spread
        # The workers were started by cluster.yaml's worker start commands (localized), run by
        # Ray's installer with the head's address and the worker's instance id exported.
        logs = {p.stem: p.read_text() for p in (cluster.root / "logs").glob("*.log")}
        started = [text for node, text in logs.items() if node != FAKE_HEAD_NODE_ID
                   and "ray start --address=$RAY_HEAD_IP:" in text
                   and f"export RAY_CLOUD_INSTANCE_ID={node};" in text]
        assert len(started) >= WORKERS, sorted(logs)
        pulls = [node for node, text in logs.items() if "roadsense scenarios pull" in text]
        assert len(pulls) >= WORKERS + 1  # the setup commands ran on every node
    finally:
        left = cluster.down()
    assert left == [], "processes of the cluster outlived `ray down`"
    assert not cluster.processes()

    s3 = boto3.client("s3")
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=s3_bucket, Prefix="runs/") for o in page.get("Contents", [])]
    manifests = [k for k in keys if k.endswith("/run_manifest.json") and k.count("/") == 2]
    (manifest_key,) = manifests
    manifest = json.loads(s3.get_object(Bucket=s3_bucket, Key=manifest_key)["Body"].read())
    assert manifest["status"] == "finished"
    assert manifest["config"]["num_env_runners_resolved"] == WORKERS
    assert manifest["config"]["budget_minutes"] == 0.4
    assert any(k.endswith("/policy.pt") and "/checkpoints/iter_" in k for k in keys), keys
