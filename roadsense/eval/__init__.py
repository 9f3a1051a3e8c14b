"""Evaluation: run a policy or a baseline on a fixed suite; metrics and report."""

from roadsense.eval.policies import POLICY_FILE, TorchPolicy, load_policy, save_policy
from roadsense.eval.report import summarize, write_report
from roadsense.eval.runner import episode_row, run_suite

__all__ = ["POLICY_FILE", "TorchPolicy", "episode_row", "load_policy", "run_suite",
           "save_policy", "summarize", "write_report"]
