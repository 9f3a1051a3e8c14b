"""The parts of the `ray up` rehearsal that need no Ray cluster: the config derived from
cluster.yaml passes Ray's own checks and keeps the file's start commands (with only the documented
substitutions), and the local provider shares its nodes between processes, runs node commands in
a login shell and ends exactly one node's processes on `ray stop` or termination."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from ray.autoscaler._private.subprocess_output_util import ProcessRunnerError
from ray.autoscaler.tags import (
    NODE_KIND_HEAD,
    NODE_KIND_WORKER,
    STATUS_UP_TO_DATE,
    TAG_RAY_NODE_KIND,
    TAG_RAY_NODE_STATUS,
    TAG_RAY_USER_NODE_TYPE,
)

from roadsense.cloud.cluster import load_cluster_yaml, ray_checks
from roadsense.cloud.fake_cluster import PROVIDER_MODULE, derive_config
from roadsense.cloud.fake_provider import (
    FAKE_HEAD_NODE_ID,
    LocalNodeProvider,
    end_processes,
    marked_processes,
)

ROOT = Path(__file__).resolve().parents[1]
PORTS = {"gcs": 41001, "objects": 41002, "dashboard": 41003, "agent": 41004}


def _derived(tmp_path: Path) -> tuple[dict, dict]:
    _, cluster = load_cluster_yaml(ROOT / "cluster.yaml")
    config = derive_config(cluster, root=tmp_path, cluster_id="abc", bin_dirs=["/x/bin"],
                           ports=PORTS, max_workers=3, worker_cpus=2)
    return cluster, config


def test_derived_config_passes_rays_checks_and_keeps_the_start_commands(tmp_path: Path):
    cluster, config = _derived(tmp_path)
    assert ray_checks(config) == []
    assert config["provider"]["module"] == PROVIDER_MODULE
    assert set(config["available_node_types"]) == set(cluster["available_node_types"])
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    workers = [t for n, t in config["available_node_types"].items() if n != "ray.head.default"]
    assert all(t["resources"]["CPU"] == 2 and t["max_workers"] <= 3 for t in workers)
    assert {t["priority"] for t in workers} == {10, 1}

    def undo(command: str) -> str:
        """The derived command with the documented substitutions reversed."""
        command = command.replace("/x/bin", "/opt/venv/bin")
        command = command.replace(str(tmp_path / "ray-auth"), "/home/ray/ray-auth")
        command = command.replace(f":{PORTS['gcs']}", ":6379")
        command = command.replace(f"--port={PORTS['gcs']}", "--port=6379")
        return command.replace(f"--object-manager-port={PORTS['objects']}",
                               "--object-manager-port=8076")

    head_cmds = config["head_start_ray_commands"]
    assert len(head_cmds) == len(cluster["head_start_ray_commands"])
    for derived, original in zip(head_cmds, cluster["head_start_ray_commands"], strict=True):
        extra = (f" --temp-dir={tmp_path / 't'} --dashboard-port={PORTS['dashboard']}"
                 f" --dashboard-agent-listen-port={PORTS['agent']}")
        assert undo(derived) in (original, original + extra)
    worker_cmds = config["worker_start_ray_commands"]
    assert len(worker_cmds) == len(cluster["worker_start_ray_commands"])
    extra = " --min-worker-port=0 --max-worker-port=0 --dashboard-agent-listen-port=0"
    for derived, original in zip(worker_cmds, cluster["worker_start_ray_commands"], strict=True):
        original = re.sub(r"\s*--object-manager-port[= ]\d+", "", original)
        assert undo(derived) in (original, original + extra)
    assert any(f"--address=$RAY_HEAD_IP:{PORTS['gcs']}" in c for c in worker_cmds)
    joined = " ".join(head_cmds + worker_cmds)
    assert "/opt/venv/bin" not in joined and "6379" not in joined
    assert config["file_mounts"] == {str(tmp_path / "ray-auth"): "~/.config/roadsense/ray-auth"}


@pytest.fixture
def providers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Two providers on one state folder, as `ray up` and the head's autoscaler hold them; a
    cluster id of their own, so that test sessions running side by side never end each
    other's processes."""
    monkeypatch.setenv("RAY_FAKE_CLUSTER", "1")
    config = {"type": "external", "module": PROVIDER_MODULE, "state_dir": str(tmp_path),
              "cluster_id": "t" + uuid.uuid4().hex[:12], "env": {"RS_TEST_VAR": "on-the-node"}}
    first, second = LocalNodeProvider(config, "c"), LocalNodeProvider(config, "c")
    yield first, second
    end_processes(config["cluster_id"], grace_s=2)


def test_provider_state_is_shared_and_tags_persist(providers):
    up, autoscaler = providers
    assert up.non_terminated_nodes({}) == []
    up.create_node({}, {TAG_RAY_NODE_KIND: NODE_KIND_HEAD, "ray-node-name": "ray-c-head"}, 1)
    assert autoscaler.non_terminated_nodes({TAG_RAY_NODE_KIND: NODE_KIND_HEAD}) == [
        FAKE_HEAD_NODE_ID]
    up.set_node_tags(FAKE_HEAD_NODE_ID, {TAG_RAY_NODE_STATUS: STATUS_UP_TO_DATE})
    assert autoscaler.node_tags(FAKE_HEAD_NODE_ID)[TAG_RAY_NODE_STATUS] == STATUS_UP_TO_DATE
    assert autoscaler.node_tags(FAKE_HEAD_NODE_ID)["ray-node-name"] == "ray-c-head"
    autoscaler.create_node_with_resources_and_labels(
        {}, {TAG_RAY_NODE_KIND: NODE_KIND_WORKER, TAG_RAY_USER_NODE_TYPE: "w"}, 2, {"CPU": 1}, {})
    workers = up.non_terminated_nodes({TAG_RAY_NODE_KIND: NODE_KIND_WORKER})
    assert sorted(workers) == [FAKE_HEAD_NODE_ID[:-1] + "1", FAKE_HEAD_NODE_ID[:-1] + "2"]
    up.terminate_nodes(workers)
    assert autoscaler.non_terminated_nodes({}) == [FAKE_HEAD_NODE_ID]
    assert autoscaler.is_terminated(workers[0]) and autoscaler.is_running(FAKE_HEAD_NODE_ID)


def test_runner_runs_node_commands_and_ray_stop_ends_only_that_node(providers):
    provider, _ = providers
    cluster_id = provider.provider_config["cluster_id"]
    a = provider.get_command_runner("", "node-a", {}, "c", None, True)
    b = provider.get_command_runner("", "node-b", {}, "c", None, True)
    out = a.run("echo $RS_TEST_VAR $FOO", with_output=True, environment_variables={"FOO": 7})
    assert out.decode().split()[-2:] == ["on-the-node", "7"]
    with pytest.raises(ProcessRunnerError):
        a.run("exit 3")
    for runner in (a, b):
        runner.run("nohup sleep 300 >/dev/null 2>&1 &")
    assert marked_processes(cluster_id, "node-a") and marked_processes(cluster_id, "node-b")
    a.run("export PATH=/x/bin:$PATH; ray stop")  # cluster.yaml's form
    assert marked_processes(cluster_id, "node-a") == []
    assert marked_processes(cluster_id, "node-b")
    provider.terminate_node("node-b")
    assert marked_processes(cluster_id) == []
