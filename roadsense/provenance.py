"""What every manifest and content hash is built from: the source commit and canonical JSON.

One definition each, used by the run manifest, the dataset manifest, the emulator params
version and the image push.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

GIT_COMMIT_ENV = "ROADSENSE_GIT_COMMIT"
"""Set in the Docker image, which has no .git."""
DIRTY_SUFFIX = "-dirty"
"""Appended to the commit when tracked files have local changes (git describe's convention)."""


def git_commit(repo: str | Path | None = None) -> str | None:
    """HEAD of the git checkout at `repo` (default: the one holding this package), with
    `DIRTY_SUFFIX` when tracked files differ from it; outside a checkout `$ROADSENSE_GIT_COMMIT`,
    else None."""
    where = Path(repo) if repo is not None else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode == 0:
            dirty = subprocess.run(
                ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True, timeout=10).stdout
            return head.stdout.strip() + (DIRTY_SUFFIX if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return os.environ.get(GIT_COMMIT_ENV) or None


def canonical_json(obj: Any) -> bytes:
    """The bytes content hashes are taken of: sorted keys, no whitespace, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
