"""The IAM policies in iam/ match cluster.yaml (bucket, worker role, image repository), grant no
wildcards beyond what EC2 and ECR need, and IAM accepts them as docs/cloud.md creates them
(moto's server speaks the IAM API)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import boto3
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
IAM = ROOT / "iam"


@pytest.fixture(scope="module")
def variables() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())["metadata"]["roadsense_vars"]


def _statements(who: str) -> list[dict]:
    return json.loads((IAM / f"{who}-policy.json").read_text())["Statement"]


def _actions(statement: dict) -> list[str]:
    actions = statement["Action"]
    return [actions] if isinstance(actions, str) else actions


def _resources(statement: dict) -> list[str]:
    res = statement["Resource"]
    return [res] if isinstance(res, str) else res


@pytest.mark.parametrize("who", ["head", "worker"])
def test_s3_only_on_the_clusters_bucket(who: str, variables: dict):
    bucket = re.search(r"s3://([^/]+)/", variables["env_dataset"]).group(1)
    assert bucket == re.search(r"s3://([^/]+)/", variables["env_runs"]).group(1)
    s3 = [s for s in _statements(who) if any(a.startswith("s3:") for a in _actions(s))]
    assert s3
    for statement in s3:
        assert "s3:*" not in _actions(statement)
        for arn in _resources(statement):
            assert arn in (f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"), arn


@pytest.mark.parametrize("who", ["head", "worker"])
def test_ecr_pull_of_the_images_repository(who: str, variables: dict):
    account, region, repo = re.match(
        r"(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com/([^:@]+)", variables["image"]
    ).groups()
    pull = [s for s in _statements(who) if "ecr:BatchGetImage" in _actions(s)]
    assert [_resources(s) for s in pull] == [[f"arn:aws:ecr:{region}:{account}:repository/{repo}"]]
    assert any(_actions(s) == ["ecr:GetAuthorizationToken"] for s in _statements(who))


def test_only_the_head_launches_workers_and_passes_only_the_worker_role(variables: dict):
    worker = variables["worker_profile"]["Name"]
    passes = [s for s in _statements("head") if "iam:PassRole" in _actions(s)]
    (statement,) = passes
    assert all(arn.endswith(f"/{worker}") for arn in _resources(statement))
    assert not any(a.startswith(("ec2:", "iam:")) for s in _statements("worker")
                   for a in _actions(s))
    assert all(a != "*" and not a.endswith(":*") for who in ("head", "worker")
               for s in _statements(who) for a in _actions(s))


def test_docs_walkthrough_creates_the_roles_and_profiles(s3_server: str, variables: dict):
    """docs/cloud.md's `aws iam` loop, through boto3 against moto's IAM."""
    iam = boto3.client("iam")
    trust = (IAM / "trust-ec2.json").read_text()
    for who in ("head", "worker"):
        name = variables[f"{who}_profile"]["Name"]
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)
        iam.put_role_policy(RoleName=name, PolicyName="roadsense",
                            PolicyDocument=(IAM / f"{who}-policy.json").read_text())
        iam.create_instance_profile(InstanceProfileName=name)
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        assert [r["RoleName"] for r in profile["Roles"]] == [name]
        stored = iam.get_role_policy(RoleName=name, PolicyName="roadsense")["PolicyDocument"]
        assert stored["Statement"] == _statements(who)
