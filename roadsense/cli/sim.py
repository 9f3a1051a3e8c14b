"""`roadsense sim`: run a scenario directly in SUMO and say what happened."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True)


def resolve_scenario(scenario: str) -> Path:
    """`base` -> the built-in convoy; anything else is a path to a .sumocfg."""
    from roadsense.sim import base_scenario

    return base_scenario() if scenario == "base" else Path(scenario)


@app.command("run")
def run(
    scenario: Annotated[str, typer.Argument(help="'base' or a path to a .sumocfg")] = "base",
    steps: Annotated[int, typer.Option(min=1, help="Steps of 0.1 s to simulate")] = 600,
    seed: Annotated[int, typer.Option(min=0, help="SUMO's --seed")] = 0,
    gui: Annotated[bool, typer.Option(help="Watch it in sumo-gui (uses traci)")] = False,
    backend: Annotated[str, typer.Option(help="libsumo or traci")] = "libsumo",
) -> None:
    """Run SCENARIO for STEPS steps under the default driver model and print a summary."""
    from roadsense.sim import SumoProcess

    cfg = resolve_scenario(scenario)
    seen: set[str] = set()
    collisions = []
    min_gap = float("inf")
    started = time.perf_counter()
    with SumoProcess(cfg, backend=backend, gui=gui) as sim:
        states = sim.reset(seed)
        done = 1
        for _ in range(steps - 1):
            if not len(states):
                break
            seen.update(states.ids)
            gaps = states.leader_gap_m[~_isnan(states.leader_gap_m)]
            if gaps.size:
                min_gap = min(min_gap, float(gaps.min()))
            collisions.extend(sim.collisions)
            states = sim.step()
            done += 1
        sim_time = states.time_s
    wall = time.perf_counter() - started

    table = Table(title=f"{cfg.name} (seed {seed}, {sim.backend})")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("steps", str(done))
    table.add_row("simulated time (s)", f"{sim_time:.1f}")
    table.add_row("vehicles seen", str(len(seen)))
    table.add_row("vehicles at the end", str(len(states)))
    table.add_row("collisions", str(len(collisions)))
    table.add_row("min bumper gap (m)", "-" if min_gap == float("inf") else f"{min_gap:.1f}")
    table.add_row("wall time (s)", f"{wall:.2f}")
    table.add_row("steps / s", f"{done / wall:,.0f}")
    console = Console()
    console.print(table)
    for c in collisions:
        console.print(f"collision at {c.time_s:.1f} s: {c.collider} hit {c.victim} ({c.kind})")


def _isnan(a):  # small indirection keeps numpy out of the CLI's import time
    import numpy as np

    return np.isnan(a)
