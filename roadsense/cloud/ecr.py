"""Pushing the training image to ECR: repository creation and the docker commands.

`ensure_repository` creates (or finds) the repository with immutable tags, so a pinned tag
always means the same image. `push_commands` lists the docker build/tag/push steps; they are
run when a working docker engine is found, otherwise printed for the operator. The registry
password never appears in a printed command (`docker login --password-stdin`).

boto3 is imported lazily (the cloud path's deliberate second boto3 importer).
"""

from __future__ import annotations

import base64
import logging
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from roadsense.cloud.aws import aws_error, client, region_name
from roadsense.errors import ConfigError, StorageError
from roadsense.provenance import git_commit

log = logging.getLogger(__name__)

DOCKERFILE = "docker/Dockerfile"


@dataclass(frozen=True)
class PushPlan:
    """What to build and where to push it."""

    repository_uri: str
    """``ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME``."""
    tag: str
    region: str
    git_commit: str = "unknown"

    @property
    def registry(self) -> str:
        return self.repository_uri.split("/", 1)[0]

    @property
    def image_uri(self) -> str:
        return f"{self.repository_uri}:{self.tag}"


def ensure_repository(name: str, region: str | None = None) -> str:
    """Create the ECR repository (immutable tags, scan on push) or find it; returns its URI."""
    from botocore.exceptions import BotoCoreError, ClientError

    ecr = client("ecr", region)
    try:
        response = ecr.create_repository(
            repositoryName=name,
            imageTagMutability="IMMUTABLE",
            imageScanningConfiguration={"scanOnPush": True},
            tags=[{"Key": "project", "Value": "roadsense"}],
        )
        uri = response["repository"]["repositoryUri"]
        log.info("created ECR repository %s", uri)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "RepositoryAlreadyExistsException":
            raise aws_error(exc, f"ecr:CreateRepository {name}") from None
        try:
            found = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
        except (BotoCoreError, ClientError) as exc2:
            raise aws_error(exc2, f"ecr:DescribeRepositories {name}") from None
        uri = found["repositoryUri"]
    except BotoCoreError as exc:
        raise aws_error(exc, f"ecr:CreateRepository {name}") from None
    return str(uri)


def push_commands(plan: PushPlan, context: str | Path = ".") -> list[list[str]]:
    """docker build, tag and push of the pinned image (login is separate: `login_command_text`)."""
    local = f"{plan.repository_uri.rsplit('/', 1)[-1]}:{plan.tag}"
    return [
        [
            "docker", "build", "-f", str(Path(context) / DOCKERFILE),
            "--build-arg", f"GIT_COMMIT={plan.git_commit}",
            "-t", local, str(context),
        ],
        ["docker", "tag", local, plan.image_uri],
        ["docker", "push", plan.image_uri],
    ]  # fmt: skip


def login_command_text(plan: PushPlan) -> str:
    """The login step as an operator would type it (the AWS CLI fetches the password)."""
    return (
        f"aws ecr get-login-password --region {shlex.quote(plan.region)} | "
        f"docker login --username AWS --password-stdin {shlex.quote(plan.registry)}"
    )


def format_commands(plan: PushPlan, context: str | Path = ".") -> list[str]:
    """All steps (login, build, push) as shell lines."""
    return [login_command_text(plan)] + [shlex.join(c) for c in push_commands(plan, context)]


def docker_engine_available(timeout_s: float = 10.0) -> bool:
    """True when a docker client is installed and its engine answers `docker info`."""
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(
            ["docker", "info"], capture_output=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def registry_password(region: str | None = None) -> str:
    """The ECR registry password (GetAuthorizationToken); never logged or printed."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        data = client("ecr", region).get_authorization_token()["authorizationData"][0]
    except (BotoCoreError, ClientError) as exc:
        raise aws_error(exc, "ecr:GetAuthorizationToken") from None
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    if user != "AWS" or not password:
        raise StorageError("ECR returned an unexpected authorization token")
    return password


def run_push(plan: PushPlan, context: str | Path = ".") -> None:
    """Log in, build and push with the local docker engine; StorageError on the first failure."""
    login = ["docker", "login", "--username", "AWS", "--password-stdin", plan.registry]
    steps: list[tuple[list[str], str | None]] = [(login, registry_password(plan.region))]
    steps += [(cmd, None) for cmd in push_commands(plan, context)]
    for cmd, stdin in steps:
        log.info("running %s", shlex.join(cmd))
        done = subprocess.run(cmd, input=stdin, text=True, check=False)
        if done.returncode != 0:
            raise StorageError(
                f"`{shlex.join(cmd[:3])} ...` failed with exit code {done.returncode}",
                fix="check the docker engine and the ECR permissions",
            )


def default_tag(version: str, git_commit: str | None) -> str:
    """``<version>-<short commit>``, or the version alone outside a git checkout."""
    if git_commit and git_commit != "unknown":
        return f"{version}-{git_commit[:12]}"
    return version


def make_plan(
    name: str, *, region: str | None, tag: str | None, context: str | Path = "."
) -> PushPlan:
    """Create/find the repository and decide the tag; `latest` is refused (tags are pins)."""
    if tag == "latest":
        raise ConfigError(
            "tag 'latest' is not a pin", fix="use a version tag (default: version-commit)"
        )
    from roadsense import __version__

    commit = git_commit(context) or "unknown"
    uri = ensure_repository(name, region)
    return PushPlan(
        repository_uri=uri,
        tag=tag or default_tag(__version__, commit),
        region=region_name(region),
        git_commit=commit,
    )
