"""The training image, checked statically (no docker engine needed): pinned base, non-root user,
the same install script as the Makefile, no secrets, a .dockerignore that keeps data out; and
the entry point's behaviour, run with bash."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from roadsense.cloud.cluster import image_pinned

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
ENTRYPOINT = ROOT / "docker" / "entrypoint.sh"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    logical, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    out = []
    for line in logical:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


@pytest.fixture(scope="module")
def steps() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE)


def _install_invocation(text: str) -> list[str]:
    """The words of the scripts/install.sh call inside a shell line."""
    match = re.search(r"bash scripts/install\.sh[^\n;&|]*", text)
    assert match, f"no scripts/install.sh call in {text!r}"
    return shlex.split(match.group(0))


def test_base_image_is_pinned(steps):
    froms = [args for word, args in steps if word == "FROM"]
    assert froms, "no FROM"
    for args in froms:
        image = args.split()[0]
        assert image_pinned(image), f"base image {image} is not pinned (exact tag or digest)"
        # An exact tag carries a full version (x.y.z), not a moving one like `3.11-slim`.
        assert "@sha256:" in image or re.search(r":\d+\.\d+\.\d+", image), image


def test_runs_as_a_non_root_user(steps):
    users = [args for word, args in steps if word == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")
    # The install runs after the switch, so nothing in the venv is root-owned.
    order = [w for w, _ in steps]
    install = next(i for i, (w, a) in enumerate(steps) if w == "RUN" and "install.sh" in a)
    assert order.index("USER") < install


def test_install_step_is_the_makefiles_script(steps):
    makefile = (ROOT / "Makefile").read_text()
    make_call = _install_invocation(makefile)
    runs = [args for word, args in steps if word == "RUN" and "install.sh" in args]
    assert len(runs) == 2, "a dependency layer, then the project"
    deps_call, image_call = (_install_invocation(r) for r in runs)
    # Same interpreter and the same script file...
    assert image_call[:2] == deps_call[:2] == make_call[:2] == ["bash", "scripts/install.sh"]
    assert (ROOT / "scripts" / "install.sh").is_file()
    # ...differing only in the image's venv location and the dev extras. Editable in both, so
    # the source tree is the one the package reads.
    assert image_call[2:] == ["--editable", "--venv", "/opt/venv"]
    assert set(make_call[2:]) - {"--dev", "--editable"} == {"--venv", "$(VENV)"}
    # The dependency layer: torch from PyTorch's CPU index by default (no CUDA build).
    assert deps_call[2:] == ["--deps-only", "--torch-index", "$TORCH_INDEX", "--venv",
                             "/opt/venv"]
    args = [a for w, a in steps if w == "ARG" and a.startswith("TORCH_INDEX=")]
    assert args == ["TORCH_INDEX=https://download.pytorch.org/whl/cpu"]


def test_dependencies_are_installed_before_the_sources_are_copied(steps):
    """Layer caching: a source edit must not re-run the dependency install."""
    copies = [i for i, (w, a) in enumerate(steps) if w == "COPY"]
    whole = next(i for i in copies if steps[i][1].split()[-2:] == [".", "/opt/roadsense"])
    deps = next(i for i, (w, a) in enumerate(steps) if w == "RUN" and "--deps-only" in a)
    assert deps < whole
    before = [steps[i][1].split()[-2] for i in copies if i < deps]
    assert set(before) == {"pyproject.toml", "scripts/install.sh"}


def test_the_venv_is_on_path_in_login_shells(steps):
    """Ray runs container commands in `bash --login`, whose /etc/profile resets PATH."""
    runs = " ".join(a for w, a in steps if w == "RUN")
    assert re.search(r"export PATH=/opt/venv/bin:\$PATH' > /etc/profile\.d/\S+\.sh", runs)


def test_deps_only_lists_pyprojects_dependencies(tmp_path: Path):
    """install.sh --deps-only reads pyproject.toml: its requirement list, run as a script."""
    text = (ROOT / "scripts" / "install.sh").read_text()
    script = text[text.index("<<'PY'") + len("<<'PY'\n"):text.index("\nPY\n")]
    done = subprocess.run(
        [sys.executable, "-", str(ROOT / "pyproject.toml")], input=script,
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split()
    assert "torch==2.13.0" in lines
    assert any(line.startswith("ray[default,") for line in lines)


def test_ray_comes_with_its_default_extra():
    """The dashboard's job server (`ray job submit`, `ray dashboard`) needs ray[default]."""
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    ray = next(d for d in deps if d.startswith("ray["))
    assert "default" in ray[ray.index("[") + 1:ray.index("]")].split(",")


def test_no_secrets_in_env_or_args(steps):
    secret = re.compile(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY|CREDENTIAL)", re.IGNORECASE)
    for word, args in steps:
        if word in ("ENV", "ARG"):
            for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) or args.split()[:1]:
                assert not secret.search(name), f"{word} {name} looks like a secret"
    text = DOCKERFILE.read_text()
    assert not re.search(r"AKIA[A-Z0-9]{16}", text)
    assert ".aws" not in [a.split()[0] for w, a in steps if w == "COPY"]


def test_entrypoint_is_declared_and_the_project_is_on_path(steps):
    entry = [args for word, args in steps if word == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1])[-1].endswith("entrypoint.sh")
    env = " ".join(args for word, args in steps if word == "ENV")
    assert "PATH=/opt/venv/bin:$PATH" in env and "RAY_AUTH_MODE=token" in env


def test_dockerignore_keeps_data_and_venv_out():
    entries = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".venv", "datasets", "runs", "checkpoints", ".git"):
        assert needed in entries, f".dockerignore lacks {needed}"
    # The install script and the sources must stay in the build context.
    for kept in ("scripts", "roadsense", "pyproject.toml", "docker"):
        assert kept not in entries


def _fake_roadsense(tmp_path: Path) -> dict:
    """A PATH where `roadsense` just prints its arguments as JSON (no training here)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "roadsense"
    fake.write_text("#!/usr/bin/env python3\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    fake.chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bindir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
        "RS_CHECKPOINT_DIR": str(tmp_path / "ckpt"),
        "SM_CHANNEL_DATASET": str(tmp_path / "data"),
        "SM_INPUT_CONFIG_DIR": str(tmp_path / "config"),
    }


def test_entrypoint_train_runs_roadsense_train_with_resume(tmp_path: Path):
    env = _fake_roadsense(tmp_path)
    config = tmp_path / "config"
    config.mkdir()
    (config / "hyperparameters.json").write_text(json.dumps({
        "lr": "0.0003", "max-runtime-minutes": "710", "sagemaker_job": "x",
        "_tuning_objective_metric": "convoy/collision_rate", "lean-sampling": "false",
    }))
    done = subprocess.run(
        ["bash", str(ENTRYPOINT), "train", "--seed", "4"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    # The stand-in trains nothing, so the model export that follows finds no run.
    assert done.returncode == 1 and "no model to export" in done.stderr, done.stderr
    argv = json.loads(done.stdout)
    assert argv[:4] == ["train", "--resume", "--storage", str(tmp_path / "ckpt")]
    assert argv[4:6] == ["--dataset", str(tmp_path / "data")]
    # SageMaker's own keys (sagemaker_*, _tuning_objective_metric) are not passed on.
    assert argv[6:] == ["--no-lean-sampling", "--lr", "0.0003", "--max-runtime-minutes", "710",
                        "--seed", "4"]
    assert (tmp_path / "ckpt").is_dir()


def test_entrypoint_keeps_each_training_jobs_checkpoints_apart(tmp_path: Path):
    """Tuning children share one checkpoint URI: each resumes only its own run."""
    env = _fake_roadsense(tmp_path)
    runs = []
    for job in ("tune-001-abc", "tune-002-def"):
        done = subprocess.run(
            ["bash", str(ENTRYPOINT), "train"], env={**env, "TRAINING_JOB_NAME": job},
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert "no model to export" in done.stderr, done.stderr
        runs.append(json.loads(done.stdout)[3])
    assert runs == [str(tmp_path / "ckpt" / job) for job in ("tune-001-abc", "tune-002-def")]


def test_sagemaker_jobs_start_the_images_entrypoint(steps):
    """Plain training jobs run the entry point too (the model export), at the image's path."""
    from roadsense.cloud.sagemaker import ENTRYPOINT as JOB_ENTRYPOINT

    copies = [a.split()[-2:] for w, a in steps if w == "COPY"]
    assert ["docker/entrypoint.sh", JOB_ENTRYPOINT] in copies
    entry = [json.loads(a) for w, a in steps if w == "ENTRYPOINT"][-1]
    assert entry == ["bash", JOB_ENTRYPOINT]


def test_entrypoint_passes_other_commands_through(tmp_path: Path):
    env = _fake_roadsense(tmp_path)
    done = subprocess.run(
        ["bash", str(ENTRYPOINT), "bash", "-c", "echo via-bash"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "via-bash"
