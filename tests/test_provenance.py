"""The one `git_commit` and the one `canonical_json` every manifest and hash is built from."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from roadsense import provenance, run_manifest
from roadsense.comms import load_params, params_version
from roadsense.provenance import canonical_json, git_commit


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def test_git_commit_is_head_and_says_dirty(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(provenance.GIT_COMMIT_ENV, raising=False)
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("1")
    _git(repo, "add", "a.txt")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = _git(repo, "rev-parse", "HEAD")
    assert git_commit(repo) == head
    (repo / "new.txt").write_text("untracked files do not count")
    assert git_commit(repo) == head
    (repo / "a.txt").write_text("2")
    assert git_commit(repo) == head + "-dirty"
    # outside a checkout (the Docker image): the image's variable, else None
    outside = tmp_path / "plain"
    outside.mkdir()
    assert git_commit(outside) is None
    monkeypatch.setenv(provenance.GIT_COMMIT_ENV, "abc123")
    assert git_commit(outside) == "abc123"


def test_the_run_manifest_uses_it(monkeypatch) -> None:
    monkeypatch.setattr(run_manifest, "git_commit", lambda: None)
    assert run_manifest.new_manifest(kind="eval", config={})["git_commit"] == "unknown"
    monkeypatch.undo()
    assert run_manifest.new_manifest(kind="eval", config={})["git_commit"] == git_commit()


def test_canonical_json_is_the_hashed_form() -> None:
    assert canonical_json({"b": 1, "a": [1.5, "é"]}) == '{"a":[1.5,"é"],"b":1}'.encode()
    params = load_params()
    digest = hashlib.sha256(canonical_json(params.raw)).hexdigest()[:12]
    assert params_version(params) == f"{params.raw['name']}+sha256:{digest}"


@pytest.mark.parametrize("module", ["roadsense.data.manifest", "roadsense.comms.params",
                                    "roadsense.cloud.ecr", "roadsense.run_manifest"])
def test_no_module_keeps_its_own_copy(module: str) -> None:
    import importlib

    mod = importlib.import_module(module)
    for name in ("git_commit", "canonical_json"):
        if hasattr(mod, name):
            assert getattr(mod, name) is getattr(provenance, name), f"{module}.{name}"
