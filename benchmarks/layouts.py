"""Sampling layouts end to end: `roadsense train` env steps/s of each `runners x envs per
runner` layout vs the default layout, measured in this run (method: `benchmarks.e2e`).

Layouts (`benchmarks.e2e.LAYOUTS`): 1x1, 2x1, 2x4, 3x1, 4x1, 1x4, each run as
`roadsense train --num-env-runners R --num-envs-per-env-runner E` (a runner's first env on
libsumo, the others on traci); target <= 1.0x each (the default is the fastest layout tried).
One training run per layout (six, as `benchmarks.e2e` makes them), so it runs when named
(`python -m benchmarks layouts`).
"""

from __future__ import annotations

from benchmarks import e2e


def run(quick: bool = False) -> list[dict]:
    rows = e2e.run(quick, layouts=e2e.LAYOUTS, scaling=(), sampling=False, former=False)
    for row in rows:
        row["benchmark"] = "layouts"
    return rows
