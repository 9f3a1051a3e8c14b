"""A local rehearsal of `cluster.yaml`: the literal `ray up` and `ray down` on this machine.

What `ray up cluster.yaml` does on EC2, done here by Ray's own CLI: a cluster config is derived
from `cluster.yaml` (``derive_config``), `ray up -y` brings the head up from it, the head's
autoscaler launches worker nodes as resource demand asks for them and Ray's installer runs the
file's ``worker_start_ray_commands`` on each, jobs go in with `ray job submit` to the
dashboard's job server (as in docs/cloud.md), and `ray down -y` ends it all. The nodes are
processes on this machine, provided by ``roadsense.cloud.fake_provider.LocalNodeProvider`` (Ray's
fake multi-node provider made fit for `ray up`; its docstring says why Ray's own
``fake_multinode`` type cannot run under `ray up`).

What the derived config keeps from `cluster.yaml`: cluster and node type names, the head's
resources (CPU 0), the spot and on-demand worker types and their priorities, the token file
mount, and the head and worker start commands. What it changes, each for a reason:
- EC2 node configs, ``docker`` and ``initialization_commands`` (host-only: lifetime cap, ECR
  login) are dropped: there is no EC2 and no image. The container's ``-e NAME=VALUE`` run
  options become every node's environment; given a ``dataset_uri``, ``RS_DATASET_URI`` is it and
  ``RS_DATASET_DIR`` a folder of the rehearsal, and ``setup_commands`` (the dataset pull) run on
  every node as on EC2; without one they are dropped. Worker CPUs are scaled down
  (``worker_cpus``).
- In the start commands: the image's venv (/opt/venv/bin) becomes this machine's bin folders,
  the token directory (/home/ray/ray-auth) a private one, Ray's default GCS port 6379 (head
  ``--port`` and the workers' ``$RAY_HEAD_IP:6379``) and the head's object manager port free
  ports; the workers' object manager port flag is dropped and their worker and dashboard agent
  ports are 0 (any free one), because all workers share one machine. The head's `ray start`
  also gets a private ``--temp-dir`` and free dashboard ports. Several rehearsals and other Ray
  instances can then share the machine.
- `ray stop` in the commands ends only that node's processes (the provider's runner does that;
  the real `ray stop` ends every Ray process of the user on the machine).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roadsense.cloud.cluster import VENV_BIN, load_cluster_yaml
from roadsense.cloud.fake_provider import (
    FAKE_HEAD_NODE_ID,
    NODE_MARKER,
    end_processes,
    marked_processes,
)
from roadsense.errors import ConfigError

log = logging.getLogger(__name__)

PROVIDER_MODULE = "roadsense.cloud.fake_provider.LocalNodeProvider"
TOKEN_DIR = "/home/ray/ray-auth"
"""cluster.yaml's token directory on the nodes (file_mounts)."""
GCS_PORT = 6379
"""Ray's default GCS port, the one cluster.yaml's start commands use."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _localize(command: str, *, bin_path: str, tokens: str, gcs_port: int) -> str:
    command = command.replace(VENV_BIN, bin_path).replace(TOKEN_DIR, tokens)
    command = re.sub(rf"--port[= ]{GCS_PORT}\b", f"--port={gcs_port}", command)
    return re.sub(rf":{GCS_PORT}\b", f":{gcs_port}", command)


def container_env(cluster: dict) -> dict[str, str]:
    """The ``-e NAME=VALUE`` options of `cluster`'s docker ``run_options``."""
    env = {}
    for option in (cluster.get("docker") or {}).get("run_options") or []:
        match = re.fullmatch(r"\s*-e\s+([A-Za-z_][A-Za-z0-9_]*)=(\S*)\s*", str(option))
        if match:
            env[match.group(1)] = match.group(2)
    return env


def derive_config(cluster: dict, *, root: Path, cluster_id: str, bin_dirs: list[str],
                  ports: dict[str, int], max_workers: int, worker_cpus: int = 1,
                  idle_timeout_minutes: float = 1.0, dataset_uri: str | None = None) -> dict:
    """The `ray up` config for `cluster` (cluster.yaml as loaded) on this machine: node types
    and start commands as the module docstring says, at most `max_workers` workers of
    `worker_cpus` CPUs each, state and logs under `root`; with `dataset_uri`, every node pulls
    that dataset into ``root/datasets/train`` with the file's setup commands."""
    head = cluster["head_node_type"]
    types: dict[str, Any] = {}
    for name, t in cluster["available_node_types"].items():
        if name == head:
            types[name] = {"resources": dict(t.get("resources") or {}), "node_config": {},
                           "max_workers": 0}
        else:
            types[name] = {"resources": {**(t.get("resources") or {}), "CPU": worker_cpus},
                           "node_config": {}, "min_workers": int(t.get("min_workers", 0)),
                           "max_workers": min(int(t.get("max_workers", 0)), max_workers),
                           "priority": t.get("priority", 0)}
    tokens = str(root / "ray-auth")
    local = {"bin_path": ":".join(bin_dirs), "tokens": tokens, "gcs_port": ports["gcs"]}
    head_extra = (f" --temp-dir={root / 't'} --dashboard-port={ports['dashboard']}"
                  f" --dashboard-agent-listen-port={ports['agent']}")
    worker_extra = " --min-worker-port=0 --max-worker-port=0 --dashboard-agent-listen-port=0"
    head_commands = []
    for command in cluster.get("head_start_ray_commands", []):
        command = _localize(str(command), **local)
        command = re.sub(r"--object-manager-port[= ]\d+",
                         f"--object-manager-port={ports['objects']}", command)
        head_commands.append(command + head_extra if "ray start" in command else command)
    worker_commands = []
    for command in cluster.get("worker_start_ray_commands", []):
        command = _localize(str(command), **local)
        command = re.sub(r"\s*--object-manager-port[= ]\d+", "", command)
        worker_commands.append(command + worker_extra if "ray start" in command else command)
    mounts = {_localize(str(k), **local): str(v) for k, v in
              (cluster.get("file_mounts") or {}).items()}
    env = {**container_env(cluster), "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    setup: list[str] = []
    if dataset_uri is not None:
        env.update(RS_DATASET_URI=dataset_uri, RS_DATASET_DIR=str(root / "datasets" / "train"))
        setup = [_localize(str(c), **local) for c in cluster.get("setup_commands") or []]
    return {
        "cluster_name": f"{cluster.get('cluster_name', 'roadsense')}-rehearsal-{cluster_id}",
        "max_workers": max_workers,
        "upscaling_speed": cluster.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {"type": "external", "module": PROVIDER_MODULE, "state_dir": str(root),
                     "cluster_id": cluster_id, "head_node_id": FAKE_HEAD_NODE_ID,
                     "launch_multiple": True, "env": env},
        "auth": {"ssh_user": "ray"},
        "head_node_type": head,
        "available_node_types": types,
        "file_mounts": mounts, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "initialization_commands": [], "setup_commands": setup, "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": head_commands,
        "worker_start_ray_commands": worker_commands,
    }


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()[:200]
    except OSError:
        return "(gone)"


def _node(pid: int) -> str:
    """The fake node a process belongs to (its environment's node marker)."""
    try:
        for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
            if item.startswith(f"{NODE_MARKER}=".encode()):
                return item.split(b"=", 1)[1].decode()
    except OSError:
        pass
    return "?"


@dataclass
class FakeCluster:
    """One rehearsal cluster: `up()` (`ray up`), `submit()`, `nodes()`, `actors()`, `down()`
    (`ray down`)."""

    cluster_yaml: str | Path
    max_workers: int = 2
    worker_cpus: int = 1
    bin_dirs: list[str] = field(default_factory=list)
    """Put first on the nodes' PATH in place of the image's venv (where `ray` and `roadsense`
    are); default: this interpreter's bin folder."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment of every process of the cluster (e.g. AWS_ENDPOINT_URL)."""
    dataset_uri: str | None = None
    """Dataset every node pulls with cluster.yaml's setup commands (`dataset_dir`); None: no
    pull."""
    root: Path | None = None
    dashboard_url: str = ""
    config_path: Path | None = None

    def __post_init__(self) -> None:
        self.cluster_id = uuid.uuid4().hex[:12]

    # --- lifecycle ------------------------------------------------------------------------
    def up(self, timeout_s: float = 300.0) -> None:
        """Write the derived config and run `ray up -y` on it (head up; workers on demand)."""
        _, cluster = load_cluster_yaml(self.cluster_yaml)
        # Short: Ray's unix socket paths must fit in 107 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="rsfc-", dir="/tmp"))
        (self.root / "tmp").mkdir()
        home = self.root / "home"
        local_tokens = home / ".config" / "roadsense" / "ray-auth"
        local_tokens.mkdir(parents=True, mode=0o700)
        ports = {name: _free_port() for name in ("gcs", "objects", "dashboard", "agent")}
        bins = self.bin_dirs or [str(Path(sys.executable).parent)]
        config = derive_config(cluster, root=self.root, cluster_id=self.cluster_id,
                               bin_dirs=bins, ports=ports, max_workers=self.max_workers,
                               worker_cpus=self.worker_cpus, dataset_uri=self.dataset_uri)
        self.config_path = self.root / "cluster.yaml"
        self.config_path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        self.dashboard_url = f"http://127.0.0.1:{ports['dashboard']}"
        # docs/cloud.md: the token made once on the launching machine, mounted onto the nodes.
        subprocess.run([self._ray(), "get-auth-token", "--generate"], env=self._client_env(),
                       check=True, capture_output=True, timeout=60)
        shutil.copy2(home / ".ray" / "auth_token", local_tokens / "token")
        done = self._cli(["up", "-y", "--no-config-cache", str(self.config_path)], timeout_s)
        if done.returncode != 0:
            self.down()
            raise ConfigError(f"`ray up` failed ({done.returncode}): "
                              f"{done.stdout[-3000:]}", path=self.cluster_yaml)
        self._wait_for_dashboard(timeout_s)

    def _wait_for_dashboard(self, timeout_s: float) -> None:
        """Until the head's dashboard answers HTTP: `ray up` returns once `ray start` does, and
        on a loaded machine the dashboard's job server comes up seconds later, so a `ray job
        submit` right away fails to connect."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                urllib.request.urlopen(f"{self.dashboard_url}/api/version", timeout=5).close()
                return
            except urllib.error.HTTPError:
                return  # it answers (token auth may refuse the request)
            except OSError as exc:
                if time.monotonic() > deadline:
                    self.down()
                    raise ConfigError(f"the head's dashboard did not answer within "
                                      f"{timeout_s:.0f} s: {exc}", path=self.cluster_yaml
                                      ) from exc
                time.sleep(1.0)

    @property
    def dataset_dir(self) -> Path:
        """Where the nodes' setup commands pull `dataset_uri` to (``RS_DATASET_DIR``)."""
        assert self.root is not None, "up() first"
        return self.root / "datasets" / "train"

    def _cli(self, args: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
        """`ray ARGS` as the user launching the cluster; output also in ROOT/ray-ARG0.log."""
        assert self.root is not None
        log.info("ray %s", " ".join(args))
        done = subprocess.run([self._ray(), *args], env={**self._client_env(),
                              "RAY_FAKE_CLUSTER": "1", "TMPDIR": str(self.root / "tmp")},
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout_s)
        with open(self.root / f"ray-{args[0]}.log", "a") as out:
            out.write(done.stdout)
        return done

    def _ray(self) -> str:
        for folder in [*self.bin_dirs, str(Path(sys.executable).parent)]:
            if (Path(folder) / "ray").is_file():
                return str(Path(folder) / "ray")
        return "ray"

    def _client_env(self) -> dict[str, str]:
        """This machine's environment for Ray's CLI as a cluster user: token auth, private
        HOME (~/.ray/auth_token, the token folder to mount, ~/ray_bootstrap_config.yaml)."""
        assert self.root is not None
        path = ":".join([*self.bin_dirs, str(Path(sys.executable).parent),
                         os.environ.get("PATH", "/usr/bin:/bin")])
        return {**os.environ, **self.env, "HOME": str(self.root / "home"), "PATH": path,
                "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}

    def down(self, timeout_s: float = 180.0) -> list[int]:
        """`ray down -y` on the derived config; returns the pids of the cluster that it left
        running (none, normally), which are then ended too, and removes the cluster's files."""
        left: list[int] = []
        if self.config_path is not None and self.config_path.exists():
            try:
                done = self._cli(["down", "-y", str(self.config_path)], timeout_s)
                if done.returncode != 0:
                    log.warning("`ray down` failed (%s): %s", done.returncode,
                                done.stdout[-2000:])
            except subprocess.TimeoutExpired:
                log.warning("`ray down` ran past %.0f s", timeout_s)
        left = self._settled_processes()
        if left:
            log.warning("processes outlived `ray down`, ending them: %s",
                        "; ".join(f"{pid} ({_node(pid)}): {_cmdline(pid)}" for pid in left))
            end_processes(self.cluster_id)
        if self.root is not None and not self.processes():
            shutil.rmtree(self.root, ignore_errors=True)
        return left

    def _settled_processes(self, grace_s: float = 30.0) -> list[int]:
        """This cluster's pids once the processes that `ray down` signalled have had `grace_s`
        to leave /proc: on a loaded machine a killed process stays listed for a moment, which
        is not a process left running."""
        deadline = time.monotonic() + grace_s
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left

    def processes(self) -> list[int]:
        """Live pids of this cluster (any node)."""
        return marked_processes(self.cluster_id)

    # --- use --------------------------------------------------------------------------------
    def submit(self, entrypoint: list[str], *, timeout_s: float = 600.0,
               submission_id: str | None = None) -> subprocess.CompletedProcess[str]:
        """`ray job submit --address DASHBOARD -- ENTRYPOINT` (waits for the job's end)."""
        args = [self._ray(), "job", "submit", "--address", self.dashboard_url]
        if submission_id:
            args += ["--submission-id", submission_id]
        return subprocess.run([*args, "--", *entrypoint], env=self._client_env(),
                              capture_output=True, text=True, timeout=timeout_s)

    def job_status(self, submission_id: str) -> str:
        """`ray job status`: PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED (UNKNOWN: no answer)."""
        done = subprocess.run([self._ray(), "job", "status", "--address", self.dashboard_url,
                               submission_id], env=self._client_env(), capture_output=True,
                              text=True, timeout=60)
        text = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)  # colours
        match = (re.search(r"[Ss]tatus for job '[^']+': (\w+)", text)  # while it runs
                 or re.search(r"Job '[^']+' (succeeded|failed|stopped)", text))  # at its end
        if match is None:
            log.warning("ray job status %s: %s", submission_id, text[-500:])
            return "UNKNOWN"
        return match.group(1).upper()

    def _list(self, what: str, *extra: str) -> list[dict]:
        done = subprocess.run([self._ray(), "list", what, "--address", self.dashboard_url,
                               "--format", "json", "--limit", "10000", *extra],
                              env=self._client_env(), capture_output=True, text=True,
                              timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"ray list {what}: {done.stderr.strip()[-1000:]}")
        return json.loads(done.stdout)

    def nodes(self) -> list[dict]:
        """`ray list nodes`: every node the cluster has had (state ALIVE or DEAD)."""
        return self._list("nodes", "--detail")

    def actors(self, class_name: str | None = None) -> list[dict]:
        """`ray list actors --detail` (dead ones too), optionally of one class."""
        extra = ["--filter", f"class_name={class_name}"] if class_name else []
        return self._list("actors", "--detail", *extra)
