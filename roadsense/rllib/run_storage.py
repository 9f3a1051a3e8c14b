"""A training run's folder: local, or a local mirror synced to S3 after every write.

Layout (a local folder or `s3://bucket/prefix`)::
    <storage>/<run_id>/run_manifest.json
    <storage>/<run_id>/checkpoints/iter_000010/...   RLlib checkpoint + policy.pt (plain torch)
    <storage>/<run_id>/validations/iter_000010.jsonl     the validation's rows, one per episode
    <storage>/<run_id>/eval/report.md, metrics.parquet, *.png
    <storage>/<run_id>/learning_curve.png, progress.jsonl
    <storage>/<run_id>/tensorboard/events.out.tfevents.*   (roadsense.tracking)

A checkpoint counts once its ``DONE`` file is there (`checkpoints`); `latest_run` finds the run
a resume continues.
"""

from __future__ import annotations

from pathlib import Path

from roadsense.data.storage import download_dir, is_s3_uri, list_prefixes, upload_dir
from roadsense.sim.scenario import cache_root

CHECKPOINTS = "checkpoints"


class Storage:
    """A run folder: local, or a local mirror synced to S3 after every write."""

    def __init__(self, root: str, run_id: str) -> None:
        self.remote = f"{root.rstrip('/')}/{run_id}" if is_s3_uri(root) else None
        if self.remote:
            self.local = mirror_root() / run_id
        else:
            self.local = Path(root) / run_id
        self.local.mkdir(parents=True, exist_ok=True)

    def sync(self) -> None:
        if self.remote:
            upload_dir(self.local, self.remote)

    @property
    def where(self) -> str:
        return self.remote or str(self.local)


def mirror_root() -> Path:
    """Local mirror of runs kept on S3 (under $ROADSENSE_CACHE, default ~/.cache/roadsense)."""
    return cache_root() / "runs"


def latest_run(root: str) -> tuple[str, Path] | None:
    """(run_id, local folder) of the newest run with a checkpoint under `root` (S3: pulled)."""
    if is_s3_uri(root):
        runs = sorted(list_prefixes(root))
        for run_id in reversed(runs):
            local = mirror_root() / run_id
            download_dir(f"{root.rstrip('/')}/{run_id}", local)
            if checkpoints(local):
                return run_id, local
        return None
    base = Path(root)
    if not base.is_dir():
        return None
    for run in sorted((p for p in base.iterdir() if p.is_dir()), reverse=True):
        if checkpoints(run):
            return run.name, run
    return None


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's whole checkpoints (those with a ``DONE`` file), oldest first."""
    folder = run_dir / CHECKPOINTS
    return sorted(p for p in folder.glob("iter_*") if (p / "DONE").is_file()) \
        if folder.is_dir() else []
