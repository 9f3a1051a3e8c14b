"""`roadsense tune`: Ray Tune sweeps, only after a stable Phase 1 run (or with --force).

The stability gate runs first, before anything imports Ray: a refused sweep costs nothing.
`app` is a single command (the root CLI mounts it as `roadsense tune`); its options come from
`SweepSettings`, `GateChoice` and `StabilityCriteria` (`roadsense.cli.options`), so each default
lives in its dataclass.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Any

import typer
from rich.console import Console

from roadsense.cli.options import plain_option, settings_options, values_for, with_options
from roadsense.cloud.gate import GateResult, StabilityCriteria, load_run_manifest, require_stable
from roadsense.cloud.sweep import SweepSettings
from roadsense.errors import ConfigError
from roadsense.options import option

console = Console(stderr=True, soft_wrap=True)


def check_gate(
    phase1: str | None, *, force: bool, criteria: StabilityCriteria | None = None
) -> tuple[GateResult | None, bool]:
    """Apply the stability gate; returns (verdict or None, forced). Raises ConfigError on refusal.

    `forced` is True when the sweep goes ahead only because of --force (the gate failed or no
    Phase 1 run was given); the sweep's manifest records it.
    """
    if phase1 is None:
        if not force:
            raise ConfigError(
                "no Phase 1 run given: sweeps start only after a stable Phase 1 training run",
                fix="pass --phase1 RUN_DIR (local or s3://, holding run_manifest.json), "
                "or --force to sweep anyway",
            )
        console.print("[yellow]--force[/yellow]: sweeping without a Phase 1 stability check")
        return None, True
    result = require_stable(phase1, criteria, force=force)
    if not result.passed:
        console.print(f"[yellow]--force[/yellow]: {result.message()}", highlight=False)
    return result, not result.passed


def parse_settings(items: list[str]) -> dict:
    """``["num_env_runners=4", 'env_id="x"']`` -> {"num_env_runners": 4, "env_id": "x"}.

    Values are JSON; anything that is not valid JSON is taken as a plain string.
    """
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ConfigError(f"bad --set {item!r}", fix="write KEY=VALUE, e.g. num_env_runners=4")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


GATE_CRITERIA_HELP = {
    "last_k": "Gate: validations compared.",
    "collision_band": "Gate: max spread of collision_rate.",
    "false_brake_band": "Gate: max spread of false_brake_rate.",
}
"""The `StabilityCriteria` fields offered as options (their defaults stay in the dataclass)."""


@dataclass
class GateChoice:
    """Which Phase 1 run the stability gate reads, and whether its refusal may be overridden."""

    phase1: str | None = option(None, help="Phase 1 run dir or run_manifest.json.")
    force: bool = option(False, flags=("--force",), help="Go ahead even if the gate refuses.")


def gate_options() -> list[inspect.Parameter]:
    """The gate's options of every gated command: `GateChoice` and the criteria."""
    return (settings_options(GateChoice)
            + settings_options(StabilityCriteria, help=GATE_CRITERIA_HELP))


def check_gate_options(values: dict[str, Any]) -> tuple[GateResult | None, bool]:
    """`check_gate` on the values of `gate_options`."""
    choice = GateChoice(**values_for(GateChoice, values))
    criteria = StabilityCriteria(**{k: values[k] for k in GATE_CRITERIA_HELP})
    return check_gate(choice.phase1, force=choice.force, criteria=criteria)


@with_options(
    settings_options(SweepSettings),
    gate_options(),
    [plain_option("fixed", list[str] | None, None, "KEY=JSON `roadsense train` setting "
                  "(TrainSettings field) of every trial, e.g. dataset_dir, num_env_runners; "
                  "repeat.", "--set"),
     plain_option("dry_run", bool, False, "Check the gate, print the manifest.", "--dry-run")],
)
def app(**values: Any) -> None:
    """Ray Tune sweep (ASHA/PBT) of `roadsense train`'s trainer, gated on Phase 1 stability."""
    gate, forced = check_gate_options(values)
    phase1 = values["phase1"]
    phase1_manifest = load_run_manifest(phase1)[1] if phase1 is not None else None

    from roadsense.cloud.sweep import run_sweep, sweep_manifest
    from roadsense.provenance import git_commit

    settings = SweepSettings(**values_for(SweepSettings, values),
                             base_config=parse_settings(values["fixed"] or []))
    settings.validate()
    commit = git_commit() or "unknown"
    if values["dry_run"]:
        manifest = sweep_manifest(
            settings, gate=gate, forced=forced, phase1=phase1_manifest, git_commit=commit
        )
        typer.echo(json.dumps(manifest, indent=2, sort_keys=True))
        return
    manifest = run_sweep(
        settings, gate=gate, forced=forced, phase1=phase1_manifest, git_commit=commit
    )
    console.print(
        f"sweep {settings.name}: {manifest.get('trials')} trials, best {manifest.get('best')}",
        highlight=False,
    )
