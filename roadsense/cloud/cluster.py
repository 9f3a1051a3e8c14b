"""Offline validation of the EC2 Ray cluster config (`cluster.yaml`).

Two layers, neither of which touches AWS:
1. Ray's own checks: `prepare_config` (merges the provider's defaults.yaml, checks the docker
   section, fills per-type worker limits: all local file reads) and `validate_config` (Ray's
   JSON schema plus its head-type/min-workers rules), from ``ray.autoscaler._private.util``.
   The provider's `bootstrap_config` (which creates IAM roles, key pairs and security groups) is
   deliberately not called: it needs an AWS account.
2. Our rules, applied to the file as written (before Ray's defaults fill gaps): spot workers
   present and preferred, idle timeout and worker cap set, the dashboard and every port kept
   inside the cluster, Ray token auth on, the image pinned, a node lifetime cap (auto-stop),
   and no secrets in the file. And the rules of the runtime path, which Ray's checks pass but a
   real `ray up` trips over: the image's venv on PATH in every container command (Ray runs them
   in a login shell, whose /etc/profile resets PATH), an ECR login before a private image is
   pulled, an instance profile on every node type, the dashboard (and so the job server) on,
   the head kept free of env runners (CPU 0), a pinned AMI, spot over several instance types,
   nodes that terminate rather than stop, and region and bucket only in the variables block.
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from roadsense.errors import ConfigError

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
OPEN_CIDRS = ("0.0.0.0/0", "::/0")
SECRET_PATTERNS = (
    (re.compile(r"\b(AKIA|ASIA|A3T[A-Z0-9])[A-Z0-9]{16}\b"), "an AWS access key id"),
    (re.compile(r"aws_secret_access_key|AWS_SECRET_ACCESS_KEY"), "an AWS secret key setting"),
    (re.compile(r"AWS_SESSION_TOKEN\s*="), "an AWS session token"),
    (re.compile(r"RAY_AUTH_TOKEN\s*=", re.IGNORECASE), "a literal Ray auth token"),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"), "a private key"),
    (re.compile(r"password\s*[:=]", re.IGNORECASE), "a password"),
)
PLACEHOLDER_ACCOUNT = "000000000000"
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_SHUTDOWN = re.compile(r"shutdown\s+(-h|-P|--poweroff)\s+\+(\d+)")
VENV_BIN = "/opt/venv/bin"
"""Where the training image (docker/Dockerfile) installs `ray` and `roadsense`."""
CONTAINER_COMMANDS = (
    "setup_commands", "head_setup_commands", "worker_setup_commands",
    "head_start_ray_commands", "worker_start_ray_commands",
)  # fmt: skip
_BARE_CALL = re.compile(r"(?:^|[;&|(]|\bthen|\bdo)\s*(ray|roadsense)(?=\s|$)")
_VENV_ON_PATH = re.compile(r"\bPATH=\S*" + re.escape(VENV_BIN))
_ECR = re.compile(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com/")
_AMI = re.compile(r"^ami-[0-9a-f]{8}([0-9a-f]{9})?$")
_REGION = re.compile(r"\b(?:us|eu|ap|sa|ca|me|af|il|mx)-(?:gov-)?[a-z]+-\d\b")
_S3_URI = re.compile(r"s3://[a-z0-9][a-z0-9.-]+")


@dataclass
class ClusterReport:
    """Everything found wrong (problems) or worth a look (warnings) in one cluster config."""

    path: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def load_cluster_yaml(path: str | Path) -> tuple[str, dict]:
    """Read a cluster config; ConfigError naming the file for a missing or malformed one."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            "cluster config not found", fix="pass the path to cluster.yaml", path=path
        )
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed YAML: {exc}".replace("\n", " "), path=path) from None
    if not isinstance(data, dict):
        raise ConfigError("a cluster config must be a YAML mapping", path=path)
    return text, data


def ray_checks(config: dict) -> list[str]:
    """Ray's own prepare_config + validate_config; one problem line per failure (offline)."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    ray_log = logging.getLogger("ray.autoscaler._private.util")
    level = ray_log.level
    ray_log.setLevel(logging.WARNING)  # prepare_config logs routine defaults at INFO
    try:
        prepared = prepare_config(copy.deepcopy(config))
        validate_config(prepared)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "<top level>"
        return [f"Ray schema: {where}: {exc.message}"]
    except (ValueError, AssertionError, RuntimeError, KeyError, TypeError) as exc:
        return [f"Ray validate_config: {type(exc).__name__}: {exc}"]
    finally:
        ray_log.setLevel(level)
    return []


def _is_spot(node_type: dict) -> bool:
    market = node_type.get("node_config", {}).get("InstanceMarketOptions", {}) or {}
    return str(market.get("MarketType", "")).lower() == "spot"


def _int(value: object) -> int:
    # Ray's schema reports wrongly typed fields; here they just must not crash our rules.
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _check_nodes(config: dict, problems: list[str]) -> None:
    types = config.get("available_node_types")
    head = config.get("head_node_type")
    if not isinstance(types, dict) or not types:
        problems.append("available_node_types is missing: declare a head and a spot worker type")
        return
    workers = {name: t for name, t in types.items() if name != head and isinstance(t, dict)}
    spot = {n: t for n, t in workers.items() if _is_spot(t) and _int(t.get("max_workers", 1)) > 0}
    if not spot:
        problems.append(
            "no spot worker node type: give a worker type node_config.InstanceMarketOptions"
            ".MarketType: spot (spot by default for workers)"
        )
    if head in types and isinstance(types[head], dict) and _is_spot(types[head]):
        problems.append(f"head node type {head!r} is spot: a spot interruption kills the cluster")
    on_demand = {n: t for n, t in workers.items() if n not in spot}
    if spot and on_demand:
        top_demand = max(_int(t.get("priority", 0)) for t in on_demand.values())
        low_spot = min(_int(t.get("priority", 0)) for t in spot.values())
        if low_spot <= top_demand:
            problems.append(
                f"on-demand worker types {sorted(on_demand)} have priority >= the spot types' "
                f"({top_demand} >= {low_spot}): spot must be preferred, on-demand the fallback"
            )


def _check_limits(config: dict, problems: list[str]) -> None:
    idle = config.get("idle_timeout_minutes")
    if isinstance(idle, bool) or not isinstance(idle, int | float) or idle <= 0:
        problems.append(
            f"idle_timeout_minutes must be set to a positive number (found {idle!r}): idle "
            "workers must be terminated"
        )
    max_workers = config.get("max_workers")
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers <= 0:
        problems.append(f"max_workers must be set to a positive integer (found {max_workers!r})")
    init = [str(c) for c in config.get("initialization_commands", []) or []]
    for t in (config.get("available_node_types") or {}).values():
        if isinstance(t, dict):
            init += [f"{c}" for c in t.get("initialization_commands", []) or []]
    if not any(_SHUTDOWN.search(c) for c in init):
        problems.append(
            "no node lifetime cap: add `sudo shutdown -h +MINUTES` to initialization_commands "
            "(head auto-stop; the cost guardrail behind the runs' max runtime)"
        )


def _start_commands(config: dict) -> list[tuple[str, list[str]]]:
    return [
        (key, [str(c) for c in config.get(key, []) or []])
        for key in ("head_start_ray_commands", "worker_start_ray_commands")
    ]


def _check_security(config: dict, problems: list[str]) -> None:
    for key, cmds in _start_commands(config):
        if not any("ray start" in c for c in cmds):
            problems.append(f"{key} has no `ray start` command")
        for c in cmds:
            for host in re.findall(r"--dashboard-host[= ](\S+)", c):
                if host.strip("'\"") not in LOCAL_HOSTS:
                    problems.append(
                        f"{key}: --dashboard-host={host} exposes the dashboard; bind it to "
                        "127.0.0.1 and use `ray dashboard cluster.yaml` (SSH tunnel)"
                    )
            if "ray start" in c and not re.search(r"RAY_AUTH_MODE=token\b", c):
                problems.append(
                    f"{key}: `ray start` without RAY_AUTH_MODE=token in the same command: "
                    "Ray token authentication must be on"
                )
            if re.search(r"RAY_AUTH_MODE=disabled", c):
                problems.append(f"{key}: RAY_AUTH_MODE=disabled turns token authentication off")
    rules = (config.get("provider", {}) or {}).get("security_group", {}) or {}
    for rule in rules.get("IpPermissions", []) or []:
        cidrs = [r.get("CidrIp") for r in rule.get("IpRanges", []) or []]
        cidrs += [r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", []) or []]
        if any(c in OPEN_CIDRS for c in cidrs):
            ports = (rule.get("FromPort"), rule.get("ToPort"))
            if ports != (22, 22):
                problems.append(
                    f"provider.security_group opens ports {ports[0]}-{ports[1]} to the internet "
                    f"({', '.join(c for c in cidrs if c in OPEN_CIDRS)}): only the cluster "
                    "itself may reach Ray's ports"
                )
    docker = config.get("docker", {}) or {}
    for opt in docker.get("run_options", []) or []:
        if re.match(r"\s*(-p|--publish)\b", str(opt)):
            problems.append(
                f"docker.run_options publishes a port ({opt}): not needed with host net"
            )


def image_pinned(image: str) -> bool:
    """True when a docker image reference has a digest or an explicit tag other than latest."""
    if _DIGEST.search(image):
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    tag = last.rsplit(":", 1)[1]
    return bool(tag) and tag != "latest"


def _check_images(config: dict, problems: list[str], warnings: list[str]) -> None:
    docker = config.get("docker")
    if not isinstance(docker, dict) or not (docker.get("image") or docker.get("head_image")):
        problems.append("docker.image is missing: the cluster must run the training image")
        return
    images = {k: docker[k] for k in ("image", "head_image", "worker_image") if docker.get(k)}
    for name, t in (config.get("available_node_types") or {}).items():
        if isinstance(t, dict) and (t.get("docker") or {}).get("worker_image"):
            images[f"available_node_types.{name}.docker.worker_image"] = t["docker"]["worker_image"]
    for key, image in images.items():
        if not image_pinned(str(image)):
            problems.append(
                f"docker {key} {image!r} is not pinned: use an exact tag (not latest) or @sha256"
            )
        if PLACEHOLDER_ACCOUNT in str(image):
            warnings.append(
                f"docker {key} uses the placeholder account {PLACEHOLDER_ACCOUNT}: replace it "
                "with the URI printed by `roadsense cloud sagemaker push-image`"
            )


def _check_secrets(text: str, problems: list[str]) -> None:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("#"):
            continue
        for pattern, what in SECRET_PATTERNS:
            if pattern.search(line):
                problems.append(f"line {lineno} holds {what}: no secrets in the cluster file")


def _commands(config: dict, key: str) -> list[str]:
    found = [str(c) for c in config.get(key, []) or []]
    for t in (config.get("available_node_types") or {}).values():
        if isinstance(t, dict):
            found += [str(c) for c in t.get(key, []) or []]
    return found


def _check_path(config: dict, problems: list[str]) -> None:
    """Every container command that calls `ray` or `roadsense` by name puts the venv on PATH."""
    if not isinstance(config.get("docker"), dict):
        return  # commands run on the host: its own PATH
    for key in CONTAINER_COMMANDS:
        for c in _commands(config, key):
            for call in _BARE_CALL.finditer(c):
                if not _VENV_ON_PATH.search(c[: call.start(1)]):
                    problems.append(
                        f"{key}: `{c.strip()[:60]}` calls `{call.group(1)}` by name, but Ray "
                        f"runs container commands in a login shell whose /etc/profile resets "
                        f"PATH: start the command with `export PATH={VENV_BIN}:$PATH;`"
                    )
                    break


def _images(config: dict) -> dict[str, str]:
    docker = config.get("docker")
    if not isinstance(docker, dict):
        return {}
    images = {k: str(docker[k]) for k in ("image", "head_image", "worker_image") if docker.get(k)}
    for name, t in (config.get("available_node_types") or {}).items():
        if isinstance(t, dict) and (t.get("docker") or {}).get("worker_image"):
            images[f"available_node_types.{name}.docker.worker_image"] = str(
                t["docker"]["worker_image"]
            )
    return images


def _check_ecr_login(config: dict, problems: list[str]) -> None:
    """A private ECR image is pulled only after `docker login` to its registry on the host."""
    init = " ".join(_commands(config, "initialization_commands"))
    for key, image in _images(config).items():
        match = _ECR.match(image)
        if not match:
            continue
        registry = image.split("/", 1)[0]
        login = re.search(
            r"aws ecr get-login-password\b[^|]*\|\s*docker login\b[^;&|]*"
            + re.escape(registry), init
        )
        if not login:
            problems.append(
                f"docker {key} is in the private ECR registry {registry} but no "
                "initialization command logs docker in: add `aws ecr get-login-password "
                f"--region {match.group(2)} | docker login --username AWS --password-stdin "
                f"{registry}` to initialization_commands"
            )


def _check_profiles(config: dict, problems: list[str]) -> None:
    """Every node type has an instance profile: workers pull images and write checkpoints."""
    for name, t in (config.get("available_node_types") or {}).items():
        if not isinstance(t, dict):
            continue
        profile = (t.get("node_config") or {}).get("IamInstanceProfile")
        if not isinstance(profile, dict) or not (profile.get("Arn") or profile.get("Name")):
            problems.append(
                f"available_node_types.{name}.node_config has no IamInstanceProfile "
                "(Name or Arn): its node cannot pull the image or reach the bucket; create "
                "the profiles from iam/*.json (docs/cloud.md)"
            )


def _check_dashboard(config: dict, problems: list[str]) -> None:
    """The dashboard runs the job server that `ray job submit` talks to."""
    for c in _commands(config, "head_start_ray_commands"):
        if re.search(r"--include-dashboard[= ](false|False|0)\b", c):
            problems.append(
                "head_start_ray_commands: --include-dashboard=false turns off the job server: "
                "`ray job submit` and `ray dashboard` cannot work"
            )
    for key in ("initialization_commands", *CONTAINER_COMMANDS):
        for c in _commands(config, key):
            for spec in re.findall(r"pip3? install[^;&|]*?['\"]?(ray\[[^\]]*\])", c):
                if "default" not in spec:
                    problems.append(
                        f"{key}: installs {spec} without the `default` extra: no dashboard, so "
                        "no job server for `ray job submit`; install ray[default,...]"
                    )


def _check_head_cpus(config: dict, problems: list[str]) -> None:
    """The head offers no CPU to Ray, so SUMO env runners all go to the workers."""
    head = config.get("head_node_type")
    types = config.get("available_node_types") or {}
    if not isinstance(types.get(head), dict):
        return
    cpus = (types[head].get("resources") or {}).get("CPU")
    starts = " ".join(_commands(config, "head_start_ray_commands"))
    if cpus != 0 and not re.search(r"--num-cpus[= ]0\b", starts):
        problems.append(
            f"available_node_types.{head}.resources has no CPU: 0: env runners (one SUMO "
            "each) land on the head beside the driver and learner; set resources: {CPU: 0}"
        )


def _check_ec2(config: dict, text: str, problems: list[str], warnings: list[str]) -> None:
    """Pinned AMI, spot over several types, terminate on shutdown, variables in one place."""
    provider = config.get("provider") or {}
    if provider.get("type") != "aws":
        return
    types = {n: t for n, t in (config.get("available_node_types") or {}).items()
             if isinstance(t, dict)}
    for name, t in types.items():
        node = t.get("node_config") or {}
        ami = node.get("ImageId")
        if not ami:
            problems.append(
                f"available_node_types.{name}.node_config has no ImageId: Ray falls back to "
                "its own, outdated default AMI; pin an AMI (docs/cloud.md says how to find it)"
            )
        elif not _AMI.match(str(ami)):
            problems.append(f"available_node_types.{name}.node_config.ImageId {ami!r} is not "
                            "an AMI id (ami-...)")
        elif set(str(ami)[4:]) == {"0"}:
            warnings.append(f"available_node_types.{name} uses the placeholder AMI {ami}: "
                            "replace it with the region's current id (docs/cloud.md)")
        if str(node.get("InstanceInitiatedShutdownBehavior", "stop")) != "terminate":
            problems.append(
                f"available_node_types.{name}.node_config: the lifetime cap's shutdown stops "
                "the instance (still billed for its disk) instead of ending it; set "
                "InstanceInitiatedShutdownBehavior: terminate"
            )
    head = config.get("head_node_type")
    spot_types = {str((t.get("node_config") or {}).get("InstanceType"))
                  for n, t in types.items() if n != head and _is_spot(t)}
    if len(spot_types) == 1:
        problems.append(
            f"spot workers use one instance type ({spot_types.pop()}): a shortage of that type "
            "stops the cluster from growing; add spot node types of other instance types"
        )
    if provider.get("cache_stopped_nodes", True):
        problems.append("provider.cache_stopped_nodes is not false: `ray down` stops nodes "
                        "instead of terminating them")
    region = str(provider.get("region", ""))
    for lineno, line in _outside_variables(text):
        for found in _REGION.findall(line):
            problems.append(f"line {lineno}: region {found} outside metadata.roadsense_vars: "
                            "use the variables block (one place to change the region)")
        for found in _S3_URI.findall(line):
            problems.append(f"line {lineno}: bucket {found} outside metadata.roadsense_vars: "
                            "use the variables block")
    variables = "\n".join(line for n, line in enumerate(text.splitlines(), start=1)
                          if n not in dict(_outside_variables(text)))
    for found in sorted(set(_REGION.findall(variables))):
        if region and not found.startswith(region):
            problems.append(f"metadata.roadsense_vars mentions region {found} but "
                            f"provider.region is {region}: one region throughout")


def _outside_variables(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every non-comment line outside the top-level `metadata:` block."""
    out, inside = [], False
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line and not line[0].isspace() and not line.startswith("#"):
            inside = line.startswith("metadata:")
        if not inside and not line.lstrip().startswith("#"):
            out.append((lineno, line.split(" #", 1)[0]))
    return out


def validate_cluster_config(path: str | Path) -> ClusterReport:
    """Every problem found in a cluster config (Ray's checks + ours); offline, no AWS calls."""
    text, config = load_cluster_yaml(path)
    report = ClusterReport(path=str(path))
    report.problems += ray_checks(config)
    _check_nodes(config, report.problems)
    _check_limits(config, report.problems)
    _check_security(config, report.problems)
    _check_images(config, report.problems, report.warnings)
    _check_secrets(text, report.problems)
    _check_path(config, report.problems)
    _check_ecr_login(config, report.problems)
    _check_profiles(config, report.problems)
    _check_dashboard(config, report.problems)
    _check_head_cpus(config, report.problems)
    _check_ec2(config, text, report.problems, report.warnings)
    for problem in report.problems:
        log.debug("%s: %s", path, problem)
    return report
