"""The Phase 1 stability gate: sweeps (Tune, SageMaker tuning) only after a stable training run.

The design review's rule is that hyperparameter sweeps start only once Phase 1 training is
stable. The evidence is the Phase 1 run manifest (`run_manifest.json`): the run must have
finished, and its last K validations must agree within a band (collision and false-brake rates
on the validation suite, the ``validations`` that `roadsense train` records; not the training
rollouts' rates, which swing with each iteration's few episodes), so the sweep tunes a working
setup instead of a moving one. `--force` overrides the gate; the
sweep's own manifest then records ``"forced": true`` together with the gate's verdict.

Nothing here imports Ray: the CLI checks the gate before it starts any sweep machinery.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from roadsense.cloud.aws import is_s3_uri, join_uri, read_json
from roadsense.errors import ConfigError

log = logging.getLogger(__name__)

MANIFEST_NAME = "run_manifest.json"
FINISHED_STATUSES = ("finished", "completed", "done")


@dataclass(frozen=True)
class StabilityCriteria:
    """What a Phase 1 run must show before a sweep may start."""

    last_k: int = 3
    """How many of the latest validations are compared (at least 2)."""
    collision_band: float = 0.05
    """Largest allowed max-min spread of collision_rate over those validations."""
    false_brake_band: float = 0.05
    """Largest allowed max-min spread of false_brake_rate over those validations."""
    require_finished: bool = True
    """The run must be recorded as finished (``status`` or ``finished_utc`` in the manifest)."""

    def __post_init__(self) -> None:
        if self.last_k < 2:
            raise ConfigError(f"last_k={self.last_k} is too small", fix="use last_k >= 2")
        for name in ("collision_band", "false_brake_band"):
            value = getattr(self, name)
            if not (0.0 <= value <= 1.0):
                raise ConfigError(f"{name}={value} is out of range", fix="use a rate in [0, 1]")


@dataclass
class GateResult:
    """The gate's verdict on one Phase 1 run manifest."""

    passed: bool
    manifest_uri: str
    run_id: str | None
    failures: list[str] = field(default_factory=list)
    """One line per failed criterion, with the numbers."""
    stats: dict = field(default_factory=dict)
    """The figures the verdict rests on (spreads, ranges, evaluation count)."""
    criteria: StabilityCriteria = field(default_factory=StabilityCriteria)

    def to_dict(self) -> dict:
        """JSON-ready form, recorded in the sweep's run manifest."""
        return {
            "passed": self.passed,
            "manifest_uri": self.manifest_uri,
            "run_id": self.run_id,
            "failures": list(self.failures),
            "stats": dict(self.stats),
            "criteria": asdict(self.criteria),
        }

    def message(self) -> str:
        """One paragraph saying which criteria failed and how to proceed anyway."""
        what = f"Phase 1 run {self.run_id or '?'} ({self.manifest_uri})"
        if self.passed:
            return f"{what} is stable: {self.stats}"
        return (
            f"{what} is not stable enough for a sweep: "
            + "; ".join(self.failures)
            + ". Train until it is stable, or pass --force to sweep anyway"
            " (the sweep's manifest will record forced=true)"
        )


def manifest_uri(run: str | Path) -> str:
    """The manifest inside a run directory, or `run` itself when it names a .json file."""
    text = str(run)
    if text.endswith(".json"):
        return text
    if not is_s3_uri(text) and Path(text).is_file():
        return text
    return join_uri(text, MANIFEST_NAME)


def load_run_manifest(run: str | Path) -> tuple[str, dict]:
    """Read a run manifest from a run directory / manifest file, local or s3://."""
    uri = manifest_uri(run)
    return uri, read_json(uri)


def _rates(evals: list, key: str) -> tuple[list[float], str | None]:
    values = []
    for i, ev in enumerate(evals):
        value = ev.get(key) if isinstance(ev, dict) else None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return [], f"validation {i} of the last {len(evals)} has no numeric {key}"
        if not math.isfinite(value):
            return [], f"validation {i} of the last {len(evals)} has {key}={value}"
        values.append(float(value))
    return values, None


def check_stability(
    manifest: dict, criteria: StabilityCriteria | None = None, *, uri: str = "<manifest>"
) -> GateResult:
    """Judge one Phase 1 run manifest against the criteria; every failed criterion is listed."""
    criteria = criteria or StabilityCriteria()
    failures: list[str] = []
    stats: dict = {}
    run_id = manifest.get("run_id")

    kind = manifest.get("kind")
    if kind != "train":
        failures.append(f"manifest kind is {kind!r}, not 'train' (point the gate at a Phase 1 run)")

    if criteria.require_finished:
        status = str(manifest.get("status", "")).lower()
        finished = status in FINISHED_STATUSES or bool(manifest.get("finished_utc"))
        stats["status"] = manifest.get("status")
        if not finished:
            failures.append(
                f"the run is not recorded as finished (status={manifest.get('status')!r},"
                f" finished_utc={manifest.get('finished_utc')!r})"
            )

    evals = manifest.get("validations")
    if not isinstance(evals, list):
        evals = []
    stats["validations"] = len(evals)
    if len(evals) < criteria.last_k:
        failures.append(
            f"only {len(evals)} validations recorded, {criteria.last_k} needed (the gate "
            "judges the validation suite's results: train Phase 1 with --validation-suite)"
        )
    else:
        last = evals[-criteria.last_k :]
        stats["iterations"] = [ev.get("iteration") for ev in last if isinstance(ev, dict)]
        for key, band in (
            ("collision_rate", criteria.collision_band),
            ("false_brake_rate", criteria.false_brake_band),
        ):
            values, problem = _rates(last, key)
            if problem:
                failures.append(problem)
                continue
            spread = max(values) - min(values)
            stats[f"{key}_range"] = [min(values), max(values)]
            stats[f"{key}_spread"] = spread
            # A tiny epsilon keeps a spread of exactly the band (0.15 - 0.10) from failing on
            # binary rounding.
            if spread > band + 1e-12:
                failures.append(
                    f"last {criteria.last_k} validations have {key} "
                    f"{min(values):.3f}..{max(values):.3f} (spread {spread:.3f} > band {band:.3f})"
                )
    return GateResult(
        passed=not failures,
        manifest_uri=uri,
        run_id=run_id,
        failures=failures,
        stats=stats,
        criteria=criteria,
    )


def require_stable(
    run: str | Path, criteria: StabilityCriteria | None = None, *, force: bool = False
) -> GateResult:
    """Load and judge a Phase 1 run; raise ConfigError unless it passes or `force` is set.

    With `force`, a failed verdict is returned (and logged) instead of raised; callers record it
    with ``forced=True``. A manifest that cannot be read always raises, forced or not.
    """
    uri, manifest = load_run_manifest(run)
    result = check_stability(manifest, criteria, uri=uri)
    if not result.passed:
        if not force:
            raise ConfigError(result.message(), path=uri)
        log.warning("gate overridden with --force: %s", result.message())
    return result
