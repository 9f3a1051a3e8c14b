"""The run manifest: written next to the outputs of every training and evaluation run.

It records what is needed to reproduce or audit a run: git commit, dataset manifest hash,
eval suite version, emulator params version, SUMO/Ray/torch versions, the seed, every seed the
workers used, the full config, the evaluations so far, and whether the run finished.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import time
import uuid
from pathlib import Path
from typing import Any

from roadsense.provenance import git_commit

MANIFEST_NAME = "run_manifest.json"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("roadsense", "ray", "torch", "eclipse-sumo", "libsumo", "gymnasium", "numpy"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    out["sumo"] = out.pop("eclipse-sumo")
    return out


def new_manifest(*, kind: str, config: dict[str, Any], seed: int | None = None,
                 dataset_manifest_hash: str | None = None, eval_suite: dict | None = None,
                 emulator_params_version: str | None = None, run_id: str | None = None
                 ) -> dict[str, Any]:
    return {
        "kind": kind,
        "run_id": run_id or f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}",
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "status": "running",
        "git_commit": git_commit() or "unknown",
        "dataset_manifest_hash": dataset_manifest_hash,
        "eval_suite": eval_suite,
        "emulator_params_version": emulator_params_version,
        "versions": versions(),
        "seed": seed,
        "config": config,
        "seeds": {},
        "evaluations": [],
        "forced": False,
    }


def save(manifest: dict[str, Any], folder: str | Path) -> Path:
    """Write atomically (a reader never sees half a file)."""
    path = Path(folder) / MANIFEST_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    tmp.replace(path)
    return path


def load(folder: str | Path) -> dict[str, Any]:
    return json.loads((Path(folder) / MANIFEST_NAME).read_text())
