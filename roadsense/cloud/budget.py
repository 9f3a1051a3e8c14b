"""Cost guardrail: an AWS Budgets monthly cost budget with e-mail alerts.

Two notifications per budget: actual spend past `alert_percent` of the limit, and forecast
spend past 100 %. boto3 is imported lazily (the cloud path's deliberate second boto3 importer).
"""

from __future__ import annotations

import logging
import re

from roadsense.cloud.aws import account_id, aws_error, client
from roadsense.errors import ConfigError

log = logging.getLogger(__name__)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_NAME = re.compile(r"^[^:\\]{1,100}$")


def build_budget_request(
    *,
    account: str,
    name: str,
    monthly_limit_usd: float,
    email: str,
    alert_percent: float = 80.0,
) -> dict:
    """The CreateBudget request (budget + notifications with their e-mail subscriber)."""
    if not _NAME.match(name):
        raise ConfigError(
            f"budget name {name!r} is invalid", fix="1-100 characters, no ':' or '\\'"
        )
    if not monthly_limit_usd > 0:
        raise ConfigError(f"monthly limit {monthly_limit_usd} USD", fix="use a positive amount")
    if not _EMAIL.match(email):
        raise ConfigError(f"e-mail {email!r} is not an address", fix="pass --email you@example.com")
    if not 0 < alert_percent <= 1000:
        raise ConfigError(f"alert percent {alert_percent}", fix="use a percentage in (0, 1000]")
    subscriber = [{"SubscriptionType": "EMAIL", "Address": email}]
    return {
        "AccountId": account,
        "Budget": {
            "BudgetName": name,
            "BudgetLimit": {"Amount": f"{monthly_limit_usd:.2f}", "Unit": "USD"},
            "TimeUnit": "MONTHLY",
            "BudgetType": "COST",
        },
        "NotificationsWithSubscribers": [
            {
                "Notification": {
                    "NotificationType": "ACTUAL",
                    "ComparisonOperator": "GREATER_THAN",
                    "Threshold": float(alert_percent),
                    "ThresholdType": "PERCENTAGE",
                },
                "Subscribers": subscriber,
            },
            {
                "Notification": {
                    "NotificationType": "FORECASTED",
                    "ComparisonOperator": "GREATER_THAN",
                    "Threshold": 100.0,
                    "ThresholdType": "PERCENTAGE",
                },
                "Subscribers": subscriber,
            },
        ],
    }


def create_budget(request: dict) -> None:
    """Send a CreateBudget request (Budgets is a global service, served from us-east-1)."""
    from botocore.exceptions import BotoCoreError, ClientError

    name = request["Budget"]["BudgetName"]
    try:
        client("budgets", "us-east-1").create_budget(**request)
    except (BotoCoreError, ClientError) as exc:
        raise aws_error(exc, f"budgets:CreateBudget {name}") from None
    log.info("created budget %s", name)


def caller_account() -> str:
    """The account the budget belongs to (STS)."""
    return account_id("us-east-1")
