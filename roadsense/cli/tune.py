"""`roadsense tune`: Ray Tune sweeps, only after a stable Phase 1 run (or with --force).

The stability gate runs first, before anything imports Ray: a refused sweep costs nothing.
`app` is a single command (the root CLI mounts it as `roadsense tune`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console

from roadsense.cloud.gate import GateResult, StabilityCriteria, load_run_manifest, require_stable
from roadsense.errors import ConfigError

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


def app(
    storage: str = typer.Option(..., help="Results/checkpoints root: local dir or s3://..."),
    phase1: str | None = typer.Option(None, help="Phase 1 run dir or run_manifest.json."),
    force: bool = typer.Option(False, "--force", help="Sweep even if the gate refuses."),
    name: str | None = typer.Option(None, help="Sweep name (default tune-<utc time>)."),
    space: str = typer.Option("phase1", help="Search space: phase1, phase1-batch (ASHA only), "
                              "smoke (roadsense.cloud.sweep.SPACES)."),
    scheduler: str = typer.Option("asha", help="asha or pbt."),
    num_samples: int = typer.Option(8, help="Trials."),
    max_iterations: int = typer.Option(50, help="Training iterations per trial."),
    grace_period: int = typer.Option(5, help="ASHA grace period / PBT interval (iterations)."),
    metric: str = typer.Option("validation/score", help="Metric to optimise (reported at "
                               "each validation: collision + false-braking rate)."),
    mode: str = typer.Option("min", help="max or min."),
    max_runtime_minutes: float = typer.Option(240.0, help="Trials checkpoint and stop after."),
    seed: int = typer.Option(0, help="Base seed."),
    address: str | None = typer.Option(None, help="Ray address (`auto` on the cluster)."),
    fixed: Annotated[
        list[str] | None, typer.Option(
            "--set", help="KEY=JSON `roadsense train` setting (TrainSettings field) of every "
            "trial, e.g. dataset_dir, num_env_runners; repeat.")
    ] = None,
    last_k: int = typer.Option(3, help="Gate: validations compared."),
    collision_band: float = typer.Option(0.05, help="Gate: max spread of collision_rate."),
    false_brake_band: float = typer.Option(0.05, help="Gate: max spread of false_brake_rate."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the gate, print the manifest."),
) -> None:
    """Ray Tune sweep (ASHA/PBT) of `roadsense train`'s trainer, gated on Phase 1 stability."""
    criteria = StabilityCriteria(
        last_k=last_k, collision_band=collision_band, false_brake_band=false_brake_band
    )
    gate, forced = check_gate(phase1, force=force, criteria=criteria)
    phase1_manifest = load_run_manifest(phase1)[1] if phase1 is not None else None

    from roadsense.cloud.sweep import SweepSettings, run_sweep, sweep_manifest
    from roadsense.provenance import git_commit

    settings = SweepSettings(
        storage=storage,
        name=name or f"tune-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}",
        space=space,
        scheduler=scheduler,
        num_samples=num_samples,
        max_iterations=max_iterations,
        grace_period=grace_period,
        metric=metric,
        mode=mode,
        max_runtime_minutes=max_runtime_minutes,
        seed=seed,
        address=address,
        base_config=parse_settings(fixed or []),
    )
    settings.validate()
    commit = git_commit() or "unknown"
    if dry_run:
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
