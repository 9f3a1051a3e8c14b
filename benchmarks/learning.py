"""The learning bar: within 60 minutes of `roadsense train` on this 2-core machine, the trained
policy (the checkpoint validation picks) on `standard-v1` / `no-hazard-v1` collides never and
no more than `v2v_rule`, false-brakes no more than it, is gentler than it (fewer braking steps
per hazard episode, lower mean peak deceleration), keeps a median minimum time-to-collision at
least the rule's, and on the real recordings replayed in the final report brakes on at most 2%
of the rows with no brake longer than 2 s. One row more, not judged, sets the speed the trained
policy's braking takes off beside the rule's: the time-to-collision row's cost (README,
"Braking trade-off"). Not part of the default `make bench` (it takes an
hour): run `python -m benchmarks learning` (`ROADSENSE_LEARNING_SEED=N` for seed N, or
`--quick` for a 5-minute smoke of the same path).

Writes the run (checkpoints, manifest, eval report, learning curve) under
benchmarks/results/learning/ and returns the comparison rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
OUT = HERE / "results" / "learning"


def _row(metric: str, value: float | None, baseline: float | None, target: str,
         ok: bool) -> dict:
    v = float("nan") if value is None else value
    b = float("nan") if baseline is None else baseline
    ratio = v / b if b and b == b and v == v else float("nan")
    return {"benchmark": "learning", "metric": metric, "value": v, "baseline": b,
            "ratio": ratio, "target": target, "pass": bool(ok), "unit": ""}


def run(quick: bool = False, budget_minutes: float | None = None) -> list[dict]:
    budget = budget_minutes or (5.0 if quick else 60.0)
    OUT.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "roadsense", "train", "--budget-minutes", str(budget),
           "--storage", str(OUT), "--seed", os.environ.get("ROADSENSE_LEARNING_SEED", "0")]
    subprocess.run(cmd, check=True, cwd=HERE.parent)
    run_dir = max((p for p in OUT.iterdir() if (p / "run_manifest.json").is_file()),
                  key=lambda p: p.stat().st_mtime)
    return bar_rows(run_dir)


def bar_rows(run_dir: Path) -> list[dict]:
    """The learning bar's rows from a finished run's manifest."""
    manifest = json.loads((run_dir / "run_manifest.json").read_text())
    final = manifest["final_eval"]
    name = next(k for k in final if k.startswith("trained"))
    trained, none, rule = final[name], final["no_assist"], final["v2v_rule"]
    rows = [_row(f"collision rate, trained vs no_assist ({run_dir.name})",
                 trained["collision_rate"], none["collision_rate"], "<= 0.5x",
                 trained["collision_rate"] <= 0.5 * none["collision_rate"])]
    for key, label, target, ok in (
            ("collision_rate", "collision rate", "0 and <= v2v_rule",
             lambda t, r: t == 0 and t <= r),
            ("false_brake_rate", "false-braking rate", "<= v2v_rule", lambda t, r: t <= r),
            ("brake_steps_per_hazard_episode", "braking steps per hazard episode",
             "< v2v_rule", lambda t, r: t < r),
            ("peak_decel_mps2_mean", "mean peak deceleration m/s^2", "< v2v_rule",
             lambda t, r: t < r),
            ("min_ttc_s_median", "median min TTC s", ">= v2v_rule", lambda t, r: t >= r)):
        t, r = trained.get(key), rule.get(key)
        rows.append(_row(f"{label}, trained vs v2v_rule", t, r, target,
                         t is not None and r is not None and ok(t, r)))
    if "brake_dv_mps_mean" in trained:  # what the TTC row costs (runs before it lack it)
        rows.append(_row("speed braked off per hazard episode m/s, trained vs v2v_rule",
                         trained["brake_dv_mps_mean"], rule["brake_dv_mps_mean"],
                         "(comparison)", True))
    for rec, by_policy in (manifest.get("final_replay") or {}).items():
        got = by_policy[name]
        rows.append(_row(f"real replay {rec}: rows braking, trained vs v2v_rule",
                         got["brake_share"], by_policy["v2v_rule"]["brake_share"], "<= 2%",
                         got["brake_share"] <= 0.02))
        rows.append(_row(f"real replay {rec}: longest brake s", got["longest_brake_s"], 2.0,
                         "<= 2 s", got["longest_brake_s"] <= 2.0))
    gating = (manifest.get("final_gating") or {}).get(name)
    if gating is not None:
        rows.append(_row("gating probe: brakes for hard brakes ahead in lane",
                         gating["ahead_braked"], 1.0, "1.0", gating["ahead_braked"] == 1.0))
        rows.append(_row("gating probe: brakes for hard brakes behind/beside",
                         gating["elsewhere_braked"], 0.0, "0", gating["elsewhere_braked"] == 0.0))
    return rows
