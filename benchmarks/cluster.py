"""Sampling throughput on a rehearsal cluster of 1, 2 and 4 fake worker nodes.

Each size is a fresh cluster brought up from `cluster.yaml` by the literal `ray up` on this
machine (`roadsense.cloud.fake_cluster`: the file's head and worker start commands, its head at
CPU 0, worker nodes launched by the autoscaler, one CPU each; `ray down` after), and one
`roadsense train --address auto` job
submitted with `ray job submit`, sized to the cluster (one env runner per worker CPU, one env
per runner), no warm start, validation or final evaluation: only iterations of sampling plus a
one-epoch update. The figure is the median env steps/s of the iterations after the first
(sampled steps / iteration time); ratio = that / the 1-node cluster's, measured in the same run.

What it can show depends on the machine: every fake node is a raylet on this machine, so the
ratio tracks how many free cores the machine has (on 2 cores, 4 nodes cannot beat 2). On a
machine with a core per node it measures the cluster path's scaling (scheduling, weight sync,
sample collection over Ray), which is what grows with real nodes.

Run: ``python -m benchmarks cluster`` (``--quick``: 1 and 2 nodes, fewer iterations).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from roadsense.cloud.fake_cluster import FakeCluster

ROOT = Path(__file__).resolve().parents[1]


def _bin_dir(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    cli = folder / "roadsense"
    cli.write_text(f'#!/bin/sh\nexec {sys.executable} -m roadsense "$@"\n')
    cli.chmod(0o755)
    return str(folder)


def _one(nodes: int, iterations: int, work: Path, dataset: Path) -> dict:
    cluster = FakeCluster(ROOT / "cluster.yaml", max_workers=nodes, worker_cpus=1,
                          bin_dirs=[_bin_dir(work / "bin"), str(Path(sys.executable).parent)],
                          env={"PYTHONPATH": str(ROOT)})
    storage = work / f"runs-{nodes}"
    started = time.perf_counter()
    try:
        cluster.up()
        up_s = time.perf_counter() - started
        job = cluster.submit([
            "roadsense", "train", "--address", "auto", "--dataset", str(dataset),
            "--storage", str(storage), "--iterations", str(iterations),
            "--warm-start", "none", "--validation-suite", "none", "--no-final-eval",
            "--num-envs-per-env-runner", "1", "--train-batch-size", "1000",
            "--minibatch-size", "250", "--num-epochs", "1", "--env", "episode_s=12",
        ], submission_id=f"bench-{nodes}", timeout_s=900)  # fmt: skip
        status = cluster.job_status(f"bench-{nodes}")
        if status != "SUCCEEDED":
            raise RuntimeError(f"{nodes} nodes: job {status}: {job.stdout[-1500:]}")
        workers = [n for n in cluster.nodes() if not n["is_head_node"]]
    finally:
        left = cluster.down()
    if left:
        raise RuntimeError(f"processes left after down: {left}")
    (progress,) = storage.glob("*/progress.jsonl")
    rows = [json.loads(line) for line in progress.read_text().splitlines() if line.strip()]
    manifest = json.loads((progress.parent / "run_manifest.json").read_text())
    return {"steps_per_s": statistics.median(r["steps_per_s"] for r in rows[1:]),
            "runners": manifest["config"]["num_env_runners_resolved"],
            "worker_nodes": len(workers), "up_s": up_s}


def run(quick: bool = False) -> list[dict]:
    from scenario_factory import GeneratorSettings, generate_dataset

    sizes, iterations = ((1, 2), 3) if quick else ((1, 2, 4), 5)
    with tempfile.TemporaryDirectory(prefix="rs-bench-cluster-") as tmp:
        work = Path(tmp)
        dataset = work / "train"
        generate_dataset(GeneratorSettings(dataset_id="bench-cluster", seed=13, count=8),
                         dataset, workers=1)
        measured = {n: _one(n, iterations, work, dataset) for n in sizes}
    base = measured[1]["steps_per_s"]
    return [{
        "benchmark": "cluster",
        "metric": f"training env steps/s, {n} fake worker node(s) x 1 CPU "
                  f"({m['runners']} env runners, {m['worker_nodes']} nodes joined; "
                  f"up in {m['up_s']:.0f} s) vs 1 node",
        "value": m["steps_per_s"], "baseline": base, "ratio": m["steps_per_s"] / base,
        "target": "-", "pass": m["worker_nodes"] >= n and m["runners"] == n, "unit": "steps/s",
    } for n, m in measured.items()]
