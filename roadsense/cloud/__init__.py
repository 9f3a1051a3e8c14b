"""The cloud path: cluster config validation, the Phase 1 stability gate, Tune sweeps, SageMaker
jobs, ECR image pushes and AWS Budgets guardrails.

This package is the second, deliberate importer of boto3 (after `roadsense.data`): it talks to
non-S3 AWS services (SageMaker, ECR, Budgets, STS) and reads/writes single small JSON files on
S3 (run manifests). Datasets themselves move only through `roadsense.data.storage`. Credentials
and the endpoint come from the standard AWS chain (plus ``AWS_ENDPOINT_URL``); none live in code
or config. Every submodule imports boto3 and Ray lazily, so importing this package is cheap.
"""

from roadsense.cloud.gate import (
    GateResult,
    StabilityCriteria,
    check_stability,
    load_run_manifest,
    require_stable,
)

__all__ = [
    "GateResult",
    "StabilityCriteria",
    "check_stability",
    "load_run_manifest",
    "require_stable",
]
