"""A local rehearsal of `cluster.yaml` on Ray's own fake multi-node provider.

What `ray up cluster.yaml` does on EC2, done on this machine: the cluster config is derived from
`cluster.yaml` (same node type names, the head's resources, the spot and on-demand worker types
and their priorities; EC2 node configs, docker, file mounts and host commands dropped, worker
CPUs scaled down), written where `ray up` puts it (``~/ray_bootstrap_config.yaml``, with HOME
pointing at a private folder), and the file's own `head_start_ray_commands` run in bash with the
environment `ray up`'s updater gives them (the head type's resources in RAY_OVERRIDE_RESOURCES).
The head's autoscaler then launches worker "nodes" (local raylets) through Ray's
``FakeMultiNodeProvider`` as resource demand asks for them, the same path that launches EC2
instances. Jobs go in with `ray job submit` to the dashboard's job server, as in docs/cloud.md.

Differences from a real `ray up`, each for a reason:
- ``ray stop`` commands are skipped: on a shared machine `ray stop` ends every Ray on it.
  `down()` ends exactly the processes of this cluster instead: every one of them inherits a
  marker variable from the head start command (raylets, workers, the autoscaler's nodes, jobs
  and the SUMO processes they start).
- Ports (GCS, object manager, dashboard, its agent) are free ones instead of Ray's defaults, and
  the venv and token paths point at this machine's: several rehearsals and other Ray instances
  can share the machine.
- The provider is named as ``type: external`` with Ray's FakeMultiNodeProvider as its module:
  the ``fake_multinode`` type loads an ``example.yaml`` of defaults that the Ray 2.60 wheel does
  not ship.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roadsense.cloud.cluster import VENV_BIN, load_cluster_yaml
from roadsense.errors import ConfigError

log = logging.getLogger(__name__)

FAKE_PROVIDER = "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider"
FAKE_HEAD_NODE_ID = "fffffffffffffffffffffffffffffffffffffffffffffffffff00000"
"""The id Ray's fake provider gives the head (ray.autoscaler._private.fake_multi_node)."""
MARKER = "RS_FAKE_CLUSTER_ID"
"""Environment variable every process of one rehearsal inherits; `down()` ends those."""
TOKEN_DIR = "/home/ray/ray-auth"
"""cluster.yaml's token directory on the nodes (file_mounts)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def derive_config(cluster: dict, *, max_workers: int, worker_cpus: int = 1,
                  idle_timeout_minutes: float = 1.0) -> dict:
    """The fake-provider config for `cluster` (cluster.yaml as loaded): its head and worker
    node types with the head's resources kept, each worker offering `worker_cpus` CPUs, at
    most `max_workers` workers in all; EC2-only parts dropped."""
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
    return {
        "cluster_name": f"{cluster.get('cluster_name', 'roadsense')}-rehearsal",
        "max_workers": max_workers,
        "upscaling_speed": cluster.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": idle_timeout_minutes,
        "provider": {"type": "external", "module": FAKE_PROVIDER, "launch_multiple": True,
                     "head_node_id": FAKE_HEAD_NODE_ID},
        "auth": {"ssh_user": "ray"},
        "head_node_type": head,
        "available_node_types": types,
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


@dataclass
class FakeCluster:
    """One rehearsal cluster: `up()`, `submit()`, `nodes()`, `actors()`, `down()`."""

    cluster_yaml: str | Path
    max_workers: int = 2
    worker_cpus: int = 1
    bin_dirs: list[str] = field(default_factory=list)
    """Put first on the nodes' PATH in place of the image's venv (where `ray` and `roadsense`
    are); default: this interpreter's bin folder."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment of every process of the cluster (e.g. AWS_ENDPOINT_URL)."""
    root: Path | None = None
    dashboard_url: str = ""

    def __post_init__(self) -> None:
        self.cluster_id = uuid.uuid4().hex[:12]

    # --- lifecycle ------------------------------------------------------------------------
    def up(self, timeout_s: float = 120.0) -> None:
        """Write the derived config as `ray up` does and run the head start commands."""
        _, cluster = load_cluster_yaml(self.cluster_yaml)
        # Short: Ray's unix socket paths must fit in 107 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="rsfc-", dir="/tmp"))
        home = self.root / "home"
        (home / ".ray").mkdir(parents=True)
        tokens = self.root / "ray-auth"
        tokens.mkdir(mode=0o700)
        ports = {name: _free_port() for name in ("gcs", "objects", "dashboard", "agent")}
        config = derive_config(cluster, max_workers=self.max_workers,
                               worker_cpus=self.worker_cpus)
        # The provider's nodes join the head's GCS at this address (its default: port 6379).
        from ray._private.services import get_node_ip_address

        config["provider"]["gcs_address"] = f"{get_node_ip_address()}:{ports['gcs']}"
        (home / "ray_bootstrap_config.yaml").write_text(json.dumps(config, indent=1))
        self.dashboard_url = f"http://127.0.0.1:{ports['dashboard']}"
        subprocess.run([self._ray(), "get-auth-token", "--generate"], env=self._client_env(),
                       check=True, capture_output=True, timeout=60)
        shutil.copy2(home / ".ray" / "auth_token", tokens / "token")
        head_resources = config["available_node_types"][config["head_node_type"]]["resources"]
        env = {**self._client_env(), MARKER: self.cluster_id, "RAY_FAKE_CLUSTER": "1",
               "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID}
        extra = (f" --temp-dir={self.root / 't'} --dashboard-port={ports['dashboard']}"
                 f" --dashboard-agent-listen-port={ports['agent']}")
        # `ray up` hands the head type's resources over in RAY_OVERRIDE_RESOURCES; here they
        # are flags, because the fake provider starts worker nodes inside the head's autoscaler
        # process, which would pass that variable on to them.
        if "CPU" in head_resources:
            extra += f" --num-cpus={int(head_resources['CPU'])}"
        others = {k: v for k, v in head_resources.items() if k not in ("CPU", "GPU")}
        if others:
            extra += f" --resources='{json.dumps(others)}'"
        started = False
        for command in cluster.get("head_start_ray_commands", []):
            command = self._localize(str(command), ports, tokens)
            if re.fullmatch(r"(export [^;]*;\s*)?ray stop\b.*", command.strip()):
                continue  # see the module docstring
            if "ray start" in command:
                command += extra
                started = True
            log.info("head start command: %s", command)
            done = subprocess.run(["bash", "-c", command], env=env, capture_output=True,
                                  text=True, timeout=timeout_s)
            if done.returncode != 0:
                self.down()
                raise ConfigError(f"head start command failed ({done.returncode}): "
                                  f"{done.stderr.strip()[-2000:]}", path=self.cluster_yaml)
        if not started:
            self.down()
            raise ConfigError("head_start_ray_commands has no `ray start`",
                              path=self.cluster_yaml)

    def _localize(self, command: str, ports: dict[str, int], tokens: Path) -> str:
        path = ":".join(self.bin_dirs or [str(Path(sys.executable).parent)])
        command = command.replace(VENV_BIN, path).replace(TOKEN_DIR, str(tokens))
        command = re.sub(r"--port[= ]\d+", f"--port={ports['gcs']}", command)
        return re.sub(r"--object-manager-port[= ]\d+",
                      f"--object-manager-port={ports['objects']}", command)

    def _ray(self) -> str:
        for folder in [*self.bin_dirs, str(Path(sys.executable).parent)]:
            if (Path(folder) / "ray").is_file():
                return str(Path(folder) / "ray")
        return "ray"

    def _client_env(self) -> dict[str, str]:
        """This machine's environment for Ray's CLI as a cluster user: token auth, private
        HOME (~/.ray/auth_token, ~/ray_bootstrap_config.yaml)."""
        assert self.root is not None
        path = ":".join([*self.bin_dirs, str(Path(sys.executable).parent),
                         os.environ.get("PATH", "/usr/bin:/bin")])
        return {**os.environ, **self.env, "HOME": str(self.root / "home"), "PATH": path,
                "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}

    def down(self, wait_s: float = 30.0) -> list[int]:
        """End every process of this cluster (SIGTERM, then SIGKILL) and remove its files;
        returns the pids still alive at the end (none, normally)."""
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, wait_s)):
            for pid in self.processes():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while self.processes() and time.monotonic() < deadline:
                time.sleep(0.2)
        left = self.processes()
        if self.root is not None and not left:
            shutil.rmtree(self.root, ignore_errors=True)
        return left

    def processes(self) -> list[int]:
        """Live pids whose environment carries this cluster's marker."""
        marker = f"{MARKER}={self.cluster_id}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                if marker not in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    continue
                state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state != "Z":
                found.append(int(entry))
        return found

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
