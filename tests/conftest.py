"""Shared fixtures: a real S3 protocol server (moto's server mode) on 127.0.0.1.

The server is a separate process speaking HTTP, so boto3 goes through its whole real stack.
It is started once per test session and always stopped, even when tests fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def roadsense_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real `roadsense` command (a subprocess, as a user would) from the repo root."""
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "roadsense", *args], capture_output=True,
                          text=True, timeout=300, env=env, cwd=REPO)


def _free_port() -> int:
    # Only for the test server: it binds right away and the test session is the only user.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """Endpoint URL of a moto S3 server on 127.0.0.1; sets AWS_* env vars for the session."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.05)
        saved = {k: os.environ.get(k) for k in _AWS_ENV}
        os.environ.update(
            AWS_ENDPOINT_URL=url,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_SESSION_TOKEN="testing",
            AWS_DEFAULT_REGION="us-east-1",
        )
        try:
            yield url
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


_AWS_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
)


@pytest.fixture
def s3_bucket(s3_server: str) -> str:
    """A fresh, empty bucket on the moto server."""
    import boto3

    name = f"rs-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return name


def _descendants(pid: int) -> set[int]:
    """Live descendant processes of `pid` (from /proc; zombies excluded)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z":
            parents[int(entry)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


@pytest.fixture
def ray_local() -> Iterator[None]:
    """A local Ray for one test; afterwards no process it started may be left."""
    import ray
    import torch

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    before = _descendants(os.getpid())
    tmp = tempfile.mkdtemp(prefix="rs_ray_", dir="/tmp")  # short: Ray's socket paths are limited
    # The learner runs in this process: one torch thread, or it fights the env runners (and
    # other jobs) for the 2 cores and an iteration takes 10x longer.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tmp, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        torch.set_num_threads(threads)
        deadline = time.monotonic() + 20
        while (left := _descendants(os.getpid()) - before) and time.monotonic() < deadline:
            time.sleep(0.2)
        shutil.rmtree(tmp, ignore_errors=True)
        assert not left, f"processes left after ray.shutdown(): {sorted(left)}"


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without the interpreter's teardown once pytest has reported everything.

    The session loads libsumo, torch, Ray and onnxruntime into one process; their native
    teardown at interpreter exit occasionally segfaults after every test has passed (seen once
    in a clean-clone CI run: "457 passed", then make: Segmentation fault), which would turn a
    green run red. Every fixture has been finalised and every process a test started has been
    checked gone by then, so the result is final: flush and exit with pytest's own status.
    """
    if not _EXIT_STATUS:
        return
    libsumo = sys.modules.get("libsumo")
    if libsumo is not None:
        try:
            libsumo.close()  # a simulation some test left loaded in this process
        except Exception:  # none is loaded: nothing to close
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS[-1])
