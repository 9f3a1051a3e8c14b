"""The learning bar (issue 6): within 60 minutes of `roadsense train` on this 2-core machine,
the trained policy on `standard-v1` has at most half the no-assist driver's collision rate and
no more than `v2v_rule`'s, with a false-braking rate on `no-hazard-v1` no worse than
`v2v_rule`'s. Not part of the default `make bench` (it takes an hour): run
`python -m benchmarks learning` (or `--quick` for a 5-minute smoke of the same path).

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
    final = json.loads((run_dir / "run_manifest.json").read_text())["final_eval"]
    trained = next(v for k, v in final.items() if k.startswith("trained"))
    none, rule = final["no_assist"], final["v2v_rule"]
    tc, nc, rc = trained["collision_rate"], none["collision_rate"], rule["collision_rate"]
    tf, rf = trained["false_brake_rate"], rule["false_brake_rate"]
    return [
        _row(f"collision rate, trained vs no_assist ({run_dir.name})", tc, nc, "<= 0.5x",
             tc <= 0.5 * nc),
        _row("collision rate, trained vs v2v_rule", tc, rc, "<= v2v_rule", tc <= rc),
        _row("false-braking rate, trained vs v2v_rule", tf, rf, "<= v2v_rule", tf <= rf),
    ]
