"""A node provider that lets the literal `ray up` / `ray down` run a cluster on this machine.

Ray's ``FakeMultiNodeProvider`` (type ``fake_multinode``) is made for
``RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=...``, not for `ray up`: in the Ray
2.60 wheel `ray up` stops at its missing defaults file (providers.py:123-126 names
``fake_multi_node/example.yaml``, which the wheel does not ship), and past that the provider
registers a head without a launch hash that `ray up` then terminates (node_provider.py:410
reads ``node["node"]``, which the head entry lacks), reaches nodes over SSH at their node id as
IP address, rejects tag updates ("Readonly node provider"), keeps its nodes in one process's
memory (so `ray down` sees none), and starts workers in-process instead of running
``worker_start_ray_commands``.

``LocalNodeProvider`` is that provider with those five parts filled in, named in a cluster
config as ``provider: {type: external, module: roadsense.cloud.fake_provider.LocalNodeProvider}``:

- Nodes live in a JSON state file (``provider.state_dir``) shared by `ray up`, the head's
  autoscaler and `ray down`, with the tags Ray's node updater sets.
- Creating a node starts nothing: Ray's own updater then runs the config's commands on it (the
  head's through `ray up`, each worker's through the autoscaler's Ray installer), exactly as on
  EC2, through ``LocalCommandRunner``: the command runs in a login shell on this machine, as
  Ray's SSH runner runs it on the node.
- Every process of a node carries two environment variables (cluster id, node id); `ray stop`
  on a node and terminating a node end exactly those processes, and the end of `ray down`
  (``cleanup_cluster_resources``) ends whatever of the cluster is left. (The real `ray stop`
  ends every Ray process of the user on the machine, other clusters included.)
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ray.autoscaler._private.command_runner import (
    _with_environment_variables,
    _with_interactive,
)
from ray.autoscaler._private.fake_multi_node.node_provider import (
    FAKE_HEAD_NODE_ID,
    FakeMultiNodeProvider,
)
from ray.autoscaler._private.subprocess_output_util import ProcessRunnerError
from ray.autoscaler.command_runner import CommandRunnerInterface
from ray.autoscaler.tags import NODE_KIND_HEAD, TAG_RAY_NODE_KIND, TAG_RAY_NODE_NAME

log = logging.getLogger(__name__)

CLUSTER_MARKER = "RS_FAKE_CLUSTER_ID"
"""Environment variable every process of one local cluster carries (its id)."""
NODE_MARKER = "RS_FAKE_NODE_ID"
"""Environment variable every process of one node carries (its node id)."""
_RAY_STOP = re.compile(r"\s*(export [^;]*;\s*)*ray stop(\s[^;]*)?;?\s*")


def marked_processes(cluster_id: str, node_id: str | None = None) -> list[int]:
    """Live pids (not this one) whose environment names this cluster (and node, if given)."""
    wanted = [f"{CLUSTER_MARKER}={cluster_id}".encode()]
    if node_id is not None:
        wanted.append(f"{NODE_MARKER}={node_id}".encode())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            if not all(w in environ for w in wanted):
                continue
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            found.append(int(entry))
    return found


def end_processes(cluster_id: str, node_id: str | None = None, grace_s: float = 10.0,
                  kill_wait_s: float = 20.0) -> list[int]:
    """SIGTERM the marked processes, SIGKILL what is left after `grace_s`; returns the pids
    still alive at the end (none, normally)."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, kill_wait_s)):
        for pid in marked_processes(cluster_id, node_id):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while marked_processes(cluster_id, node_id) and time.monotonic() < deadline:
            time.sleep(0.2)
    return marked_processes(cluster_id, node_id)


class LocalCommandRunner(CommandRunnerInterface):
    """Runs a node's commands on this machine the way Ray's SSH runner runs them on the node:
    environment variables exported first, then ``bash --login -c -i`` (so /etc/profile resets
    PATH, as on the image), output to the node's log file. `ray stop` ends the node's own
    processes (see the module docstring)."""

    def __init__(self, node_id: str, provider_config: dict[str, Any]) -> None:
        self.node_id = node_id
        self.cluster_id = str(provider_config["cluster_id"])
        self.env = {str(k): str(v) for k, v in (provider_config.get("env") or {}).items()}
        self.log_path = Path(provider_config["state_dir"]) / "logs" / f"{node_id}.log"

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self.env, CLUSTER_MARKER: self.cluster_id,
                NODE_MARKER: self.node_id, "RAY_FAKE_CLUSTER": "1"}

    def run(self, cmd: str | None = None, timeout: int = 120, exit_on_fail: bool = False,
            port_forward: Any = None, with_output: bool = False,
            environment_variables: dict[str, object] | None = None, run_env: str = "auto",
            ssh_options_override_ssh_key: str = "", shutdown_after_run: bool = False,
            silent: bool = False) -> Any:
        if not cmd:
            return b"" if with_output else 0
        if _RAY_STOP.fullmatch(cmd):
            left = end_processes(self.cluster_id, self.node_id)
            log.info("ray stop on %s: ended its processes (left: %s)", self.node_id, left)
            return b"" if with_output else 0
        if environment_variables:
            cmd = _with_environment_variables(cmd, environment_variables)
        shell = " ".join(_with_interactive(cmd))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            out.write(f"\n$ {cmd}\n".encode())
            out.flush()
            done = subprocess.run(shell, shell=True, env=self._env(), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE if with_output else out, stderr=out)
        if done.returncode != 0:
            raise ProcessRunnerError("Command failed", "ssh_command_failed",
                                     code=done.returncode, command=cmd)
        return done.stdout if with_output else 0

    def run_rsync_up(self, source: str, target: str, options: Any = None) -> None:
        self._copy(source, target)

    def run_rsync_down(self, source: str, target: str, options: Any = None) -> None:
        self._copy(source, target)

    def _copy(self, source: str, target: str) -> None:
        src = Path(os.path.expanduser(source))
        dst = Path(os.path.expanduser(target))
        if dst.exists() and src.samefile(dst):
            return  # a worker's mount of the head's copy, on one machine: already there
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)

    def remote_shell_command_str(self) -> str:
        return "bash --login\n"


class LocalNodeProvider(FakeMultiNodeProvider):
    """Ray's fake multi-node provider for `ray up` (module docstring). Provider config:
    ``state_dir`` (state file and node logs), ``cluster_id`` (process marker), ``env``
    (exported in every node command), ``head_node_id`` (Ray's fake head id by default)."""

    def __init__(self, provider_config: dict[str, Any], cluster_name: str) -> None:
        super().__init__(provider_config, cluster_name)
        self._state_dir = Path(provider_config["state_dir"])
        self._state_dir.mkdir(parents=True, exist_ok=True)
        self._cluster_id = str(provider_config["cluster_id"])
        self._load()

    # --- state shared between `ray up`, the head's autoscaler and `ray down` ----------------
    @contextmanager
    def _state(self) -> Iterator[dict[str, Any]]:
        """The state file, locked across processes; changes to the yielded dict are saved."""
        with self.lock, open(self._state_dir / "nodes.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = self._state_dir / "nodes.json"
            state = json.loads(path.read_text()) if path.exists() else {"next": 0, "nodes": {}}
            before = json.dumps(state, sort_keys=True)
            yield state
            if json.dumps(state, sort_keys=True) != before:
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(state, indent=1))
                tmp.replace(path)
            self._nodes = {k: {"tags": v} for k, v in state["nodes"].items()}

    def _load(self) -> None:
        with self._state():
            pass

    def non_terminated_nodes(self, tag_filters: dict[str, str]) -> list[str]:
        self._load()
        return [node_id for node_id, node in self._nodes.items()
                if all(node["tags"].get(k) == v for k, v in tag_filters.items())]

    def is_running(self, node_id: str) -> bool:
        self._load()
        return node_id in self._nodes

    def is_terminated(self, node_id: str) -> bool:
        return not self.is_running(node_id)

    def node_tags(self, node_id: str) -> dict[str, str]:
        self._load()
        return self._nodes[node_id]["tags"]

    def set_node_tags(self, node_id: str, tags: dict[str, str]) -> None:
        with self._state() as state:
            state["nodes"][node_id].update(tags)

    # --- nodes ---------------------------------------------------------------------------------
    def create_node_with_resources_and_labels(self, node_config: dict, tags: dict, count: int,
                                              resources: dict, labels: dict) -> None:
        """Registers `count` nodes (one head: Ray's fake head id); Ray's updater starts them."""
        with self._state() as state:
            for _ in range(count):
                if tags.get(TAG_RAY_NODE_KIND) == NODE_KIND_HEAD:
                    node_id = self._head_node_id
                else:
                    state["next"] += 1
                    node_id = FAKE_HEAD_NODE_ID[:-5] + str(state["next"]).zfill(5)
                state["nodes"][node_id] = {TAG_RAY_NODE_NAME: node_id, **tags}
                log.info("node %s registered (%s)", node_id, tags)

    def create_node(self, node_config: dict, tags: dict, count: int) -> None:
        self.create_node_with_resources_and_labels(node_config, tags, count, {}, {})

    def terminate_node(self, node_id: str) -> None:
        left = end_processes(self._cluster_id, node_id)
        if left:
            log.warning("node %s: processes %s outlived SIGKILL", node_id, left)
        with self._state() as state:
            state["nodes"].pop(node_id, None)

    def terminate_nodes(self, node_ids: list[str]) -> None:
        for node_id in node_ids:
            self.terminate_node(node_id)

    def cleanup_cluster_resources(self) -> None:
        """The end of `ray down`: every process of the cluster still alive, on any node, ends
        here, as nothing survives the instances of a torn-down EC2 cluster. Under load two
        worker nodes' dashboard and runtime-env agents once outlived their raylets and the
        nodes' termination (agents report their raylet's death to the GCS before they exit,
        and the head's GCS is gone by then)."""
        left = end_processes(self._cluster_id)
        if left:
            log.warning("processes %s of the cluster outlived SIGKILL", left)

    def get_command_runner(self, log_prefix: str, node_id: str, auth_config: dict,
                           cluster_name: str, process_runner: Any, use_internal_ip: bool,
                           docker_config: dict | None = None) -> LocalCommandRunner:
        return LocalCommandRunner(node_id, self.provider_config)
