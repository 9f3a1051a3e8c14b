"""`roadsense cloud validate`: the shipped cluster.yaml passes Ray's checks and ours; broken
variants are each caught with a message naming the rule."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from roadsense.cli.cloud import app
from roadsense.cloud.cluster import image_pinned, validate_cluster_config
from roadsense.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "cluster.yaml"


@pytest.fixture(scope="module")
def shipped() -> dict:
    return yaml.safe_load(SHIPPED.read_text())


def _write(tmp_path: Path, config: dict, name: str = "variant.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_shipped_cluster_yaml_passes():
    report = validate_cluster_config(SHIPPED)
    assert report.problems == []
    assert report.ok
    # The only remarks: the placeholder account in the image URI and the placeholder AMI.
    assert report.warnings and all("placeholder" in w for w in report.warnings)


def test_shipped_cluster_yaml_has_the_required_parts(shipped: dict):
    types = shipped["available_node_types"]
    spot = [
        t
        for n, t in types.items()
        if n != shipped["head_node_type"]
        and t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") == "spot"
    ]
    assert spot, "spot worker type"
    assert shipped["idle_timeout_minutes"] > 0 and shipped["max_workers"] > 0
    assert shipped["provider"]["region"] and shipped["provider"]["availability_zone"]
    head = " ".join(shipped["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "RAY_AUTH_MODE=token" in head
    assert "RAY_AUTH_MODE=token" in " ".join(shipped["worker_start_ray_commands"])
    assert image_pinned(shipped["docker"]["image"])
    assert any("roadsense scenarios pull" in c for c in shipped["setup_commands"])


def _no_spot(c: dict) -> None:
    for t in c["available_node_types"].values():
        t["node_config"].pop("InstanceMarketOptions", None)


def _set(path: str, value) -> Callable[[dict], None]:
    def apply(c: dict) -> None:
        node = c
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        if value is _DELETE:
            node.pop(last)
        else:
            node[last] = value

    return apply


_DELETE = object()


def _spot_head(c: dict) -> None:
    head = c["available_node_types"][c["head_node_type"]]
    head["node_config"]["InstanceMarketOptions"] = {"MarketType": "spot"}


def _ondemand_preferred(c: dict) -> None:
    c["available_node_types"]["ray.worker.ondemand"]["priority"] = 50


BROKEN = {
    "no spot workers": (_no_spot, "no spot worker node type"),
    "idle timeout missing": (_set("idle_timeout_minutes", _DELETE), "idle_timeout_minutes"),
    "idle timeout zero": (_set("idle_timeout_minutes", 0), "idle_timeout_minutes"),
    "dashboard open": (
        _set(
            "head_start_ray_commands",
            ["ray stop", "export RAY_AUTH_MODE=token; ray start --head --dashboard-host=0.0.0.0"],
        ),
        "--dashboard-host=0.0.0.0",
    ),
    "no token auth": (
        _set("worker_start_ray_commands", ["ray start --address=$RAY_HEAD_IP:6379"]),
        "RAY_AUTH_MODE=token",
    ),
    "image latest": (_set("docker.image", "rayproject/ray:latest"), "not pinned"),
    "image untagged": (_set("docker.image", "rayproject/ray"), "not pinned"),
    "no image": (_set("docker", {"container_name": "x"}), "docker.image is missing"),
    "no lifetime cap": (_set("initialization_commands", []), "node lifetime cap"),
    "spot head": (_spot_head, "head node type"),
    "on-demand preferred": (_ondemand_preferred, "spot must be preferred"),
    "ports open to the internet": (
        _set(
            "provider.security_group",
            {
                "IpPermissions": [
                    {
                        "FromPort": 8265,
                        "ToPort": 8265,
                        "IpProtocol": "tcp",
                        "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
                    }
                ]
            },
        ),
        "to the internet",
    ),
    "ray schema: unknown key": (_set("not_a_ray_field", 1), "Ray schema"),
    "ray validate: bad head type": (_set("head_node_type", "nope"), "Ray validate_config"),
}


def _worker_without_profile(c: dict) -> None:
    c["available_node_types"]["ray.worker.spot"]["node_config"].pop("IamInstanceProfile")


def _head_start(extra: str) -> Callable[[dict], None]:
    def apply(c: dict) -> None:
        c["head_start_ray_commands"][-1] += f" {extra}"

    return apply


def _single_spot_type(c: dict) -> None:
    for name in [n for n in c["available_node_types"] if n.startswith("ray.worker.spot.")]:
        del c["available_node_types"][name]


def _no_ami(c: dict) -> None:
    c["available_node_types"]["ray.worker.ondemand"]["node_config"].pop("ImageId")


def _head_offers_cpus(c: dict) -> None:
    c["available_node_types"]["ray.head.default"]["resources"] = {}


def _head_stops(c: dict) -> None:
    c["available_node_types"]["ray.head.default"]["node_config"].pop(
        "InstanceInitiatedShutdownBehavior"
    )


# The runtime defects that Ray's own checks pass (issue: ray up on day one), one case each.
RUNTIME_DEFECTS = {
    "1 ray not on PATH in the login shell": (
        _set("head_start_ray_commands", [
            "ray stop",
            "export RAY_AUTH_MODE=token; ray start --head --dashboard-host=127.0.0.1",
        ]),
        "resets PATH",
    ),
    "1 roadsense not on PATH in the login shell": (
        _set("setup_commands", ['roadsense scenarios pull "$RS_DATASET_URI" /tmp/d']),
        "calls `roadsense` by name",
    ),
    "2 no ECR login before the pull": (
        _set("initialization_commands", ["sudo shutdown -h +780"]), "logs docker in"
    ),
    "3 worker without an instance profile": (_worker_without_profile, "IamInstanceProfile"),
    "4 dashboard (job server) off": (
        _head_start("--include-dashboard=false"), "turns off the job server"
    ),
    "4 ray without the default extra": (
        _set("setup_commands", ['pip install "ray[rllib,tune]==2.60.0"']), "`default` extra"
    ),
    "8 env runners on the head": (_head_offers_cpus, "CPU: 0"),
    "9 no pinned AMI": (_no_ami, "no ImageId"),
    "9 one spot instance type": (_single_spot_type, "one instance type"),
    "9 head stopped, not terminated": (_head_stops, "InstanceInitiatedShutdownBehavior"),
    "9 stopped nodes cached": (_set("provider.cache_stopped_nodes", True), "cache_stopped_nodes"),
}
BROKEN.update({f"defect {k}": v for k, v in RUNTIME_DEFECTS.items()})


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("region: *region", "region: eu-west-1", "region eu-west-1 outside"),
        (
            "- -e RS_DATASET_DIR=/home/ray/datasets/train",
            "- -e RS_DATASET_DIR=/home/ray/datasets/train\n    - -e X=s3://other-bucket/x",
            "bucket s3://other-bucket outside",
        ),
    ],
    ids=["9 region outside the variables", "9 bucket outside the variables"],
)
def test_region_and_bucket_only_in_the_variables(old: str, new: str, expected: str,
                                                 tmp_path: Path):
    text = SHIPPED.read_text()
    assert old in text
    path = tmp_path / "cluster.yaml"
    path.write_text(text.replace(old, new))
    report = validate_cluster_config(path)
    assert any(expected in p for p in report.problems), report.problems


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_variants_are_caught(case: str, shipped: dict, tmp_path: Path):
    edit, expected = BROKEN[case]
    config = copy.deepcopy(shipped)
    edit(config)
    report = validate_cluster_config(_write(tmp_path, config))
    assert not report.ok
    assert any(expected in p for p in report.problems), report.problems


@pytest.mark.parametrize(
    "line, what",
    [
        ("AKIAABCDEFGHIJKLMNOP", "access key id"),
        ("AWS_SECRET_ACCESS_KEY=abc", "secret key"),
        ("RAY_AUTH_TOKEN=0123456789abcdef", "Ray auth token"),
    ],
)
def test_secrets_in_the_file_are_caught(line: str, what: str, shipped: dict, tmp_path: Path):
    config = copy.deepcopy(shipped)
    config["setup_commands"] = [f"export {line}"] + config["setup_commands"]
    report = validate_cluster_config(_write(tmp_path, config))
    assert any(what in p and "line" in p for p in report.problems), report.problems


def test_every_problem_is_reported_at_once(shipped: dict, tmp_path: Path):
    config = copy.deepcopy(shipped)
    _no_spot(config)
    config["idle_timeout_minutes"] = 0
    config["docker"]["image"] = "rayproject/ray:latest"
    report = validate_cluster_config(_write(tmp_path, config))
    assert len(report.problems) >= 3


def test_malformed_and_missing_files(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster_name: [unclosed\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        validate_cluster_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        validate_cluster_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "image, pinned",
    [
        ("repo/img:1.2.3", True),
        ("123.dkr.ecr.us-east-1.amazonaws.com/roadsense:0.1.0-abc", True),
        ("repo/img@sha256:" + "a" * 64, True),
        ("localhost:5000/img", False),
        ("repo/img:latest", False),
        ("repo/img", False),
    ],
)
def test_image_pinned(image: str, pinned: bool):
    assert image_pinned(image) is pinned


def test_cli_validate_ok_and_broken(shipped: dict, tmp_path: Path):
    runner = CliRunner()
    ok = runner.invoke(app, ["validate", str(SHIPPED)])
    assert ok.exit_code == 0, ok.output
    config = copy.deepcopy(shipped)
    config["idle_timeout_minutes"] = -1
    broken = runner.invoke(app, ["validate", str(_write(tmp_path, config))])
    assert isinstance(broken.exception, ConfigError)
    assert "problem(s) in the cluster config" in str(broken.exception)
    assert "idle_timeout_minutes" in broken.output


def test_cli_exit_code_and_one_line_error(shipped: dict, tmp_path: Path):
    config = copy.deepcopy(shipped)
    _no_spot(config)
    path = _write(tmp_path, config)
    env = dict(os.environ)
    env.pop("ROADSENSE_DEBUG", None)
    done = subprocess.run(
        [sys.executable, "-m", "roadsense", "cloud", "validate", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 1
    assert "no spot worker node type" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: ")
