"""ESP-NOW emulator cost per step, as a ratio to one libsumo step of the base scenario.

Baselines, measured in the same run, on the 7-car base scenario:
- the target's: one raw libsumo step with the state reads ConvoyEnv makes every step
  (`benchmarks.sim.raw_step_reads`, the baseline of the `sim` and `env` benchmarks too: time,
  collisions, and per vehicle position, leader, speed, acceleration, angle, lane, odometer);
- a lighter one, shown for comparison: position, speed, acceleration, angle and lane index only.

Emulator: one `step` plus the views the caller reads, with precomputed moving-convoy states.

Rows:
- 9 vehicles, receivers=[ego], step + view(ego) (what the env does): target ratio <= 0.5;
  the same against the lighter baseline: shown, no target.
- 64 vehicles, receivers=[ego]: shown, no target.
- 64 vehicles, every vehicle a receiver, step + 64 views: shown, no target.

Timing: blocks of steps, SUMO and emulator blocks interleaved so all see the same machine
load; the figure is the median over blocks of the mean time per step.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import numpy as np

from benchmarks.sim import raw_statics, raw_step_reads

BLOCK = 100  # steps per timed block
SUMO_ARGS = ["--step-length", "0.1", "--no-step-log", "true", "--no-warnings", "true"]


class _SumoBaseline:
    """The base scenario in libsumo; `block(light)` times BLOCK steps with the env's state
    reads (`raw_step_reads`), or with the lighter set when `light`."""

    def __init__(self):
        from roadsense.sim import base_scenario, sumo_binary
        from roadsense.sim.binary import import_libsumo

        self.libsumo = import_libsumo()
        self.args = ["-c", str(base_scenario()), *SUMO_ARGS]
        self.libsumo.start([str(sumo_binary()), *self.args])
        self._fresh()

    def _fresh(self) -> None:
        self.libsumo.load(self.args)
        for _ in range(10):  # skip the insertion steps
            self.libsumo.simulationStep()
        self.statics = raw_statics(self.libsumo)
        self.left = 1300  # the 7 cars stay on the road for ~1390 steps

    def block(self, light: bool = False) -> float:
        if self.left < BLOCK:
            self._fresh()
        ls, v = self.libsumo, self.libsumo.vehicle
        depart, min_gap = self.statics
        started = time.perf_counter()
        if light:
            for _ in range(BLOCK):
                ls.simulationStep()
                for vid in v.getIDList():
                    v.getPosition(vid)
                    v.getSpeed(vid)
                    v.getAcceleration(vid)
                    v.getAngle(vid)
                    v.getLaneIndex(vid)
        else:
            for _ in range(BLOCK):
                raw_step_reads(ls, depart, min_gap)
        self.left -= BLOCK
        return (time.perf_counter() - started) / BLOCK

    def close(self) -> None:
        self.libsumo.close()


class _EmulatorCase:
    """A moving convoy of n cars; `block()` times BLOCK steps + the receivers' views."""

    def __init__(self, n: int, all_receivers: bool, seed: int = 0):
        from roadsense.comms import EspNowEmulator, load_params

        self.ids = [f"V{i + 1:03d}" for i in range(n)]
        self.receivers = list(self.ids) if all_receivers else ["V001"]
        self.emu = EspNowEmulator(load_params())
        self.emu.reset(np.random.default_rng(seed), self.ids,
                       receivers=None if all_receivers else ["V001"])
        self.n = n
        self.t = 0
        rng = np.random.default_rng(seed)
        self.speed = 25.0 + rng.normal(0, 1, n)
        self.x0 = np.arange(n) * 20.0
        self.zeros = np.zeros(n)
        self.heading = np.full(n, 90.0)

    def block(self) -> float:
        # inputs for the block are made before timing: the env has them from SUMO already
        states = []
        for k in range(self.t, self.t + BLOCK):
            t = k * 0.1
            states.append((t, self.x0 + self.speed * t, self.zeros, self.speed,
                           self.zeros, self.heading, self.zeros))
        self.t += BLOCK
        emu, ids, receivers = self.emu, self.ids, self.receivers
        started = time.perf_counter()
        for t, x, y, v, a, h, w in states:
            emu.step(t, ids, x, y, v, a, h, w)
            for r in receivers:
                emu.view(r)
        return (time.perf_counter() - started) / BLOCK


def _libsumo_in_use() -> bool:
    mod = sys.modules.get("libsumo")
    return bool(mod is not None and mod.isLoaded())


def run(quick: bool = False) -> list[dict]:
    """Rows {benchmark, metric, value, baseline, ratio, target, pass, unit}."""
    if _libsumo_in_use():  # libsumo is one simulation per process: measure in a fresh one
        code = ("import json, sys; from benchmarks.emulator import run; "
                f"sys.stdout.write('@@' + json.dumps(run(quick={quick})))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True)
        import json

        return json.loads(out.stdout.rsplit("@@", 1)[1])
    blocks = 12 if quick else 40
    sumo = _SumoBaseline()
    try:
        cases = {
            "step_us_9veh_ego": _EmulatorCase(9, False),
            "step_us_64veh_ego": _EmulatorCase(64, False),
            "step_us_64veh_all_receivers": _EmulatorCase(64, True),
        }
        times: dict[str, list[float]] = {"sumo": [], "sumo_light": [], **{k: [] for k in cases}}
        for _ in range(3):  # warm-up: first blocks pay for imports, refills, plan sizing
            for case in cases.values():
                case.block()
            sumo.block()
            sumo.block(light=True)
        for i in range(blocks):
            times["sumo"].append(sumo.block())
            times["sumo_light"].append(sumo.block(light=True))
            for name, case in cases.items():
                if name.endswith("all_receivers") and i % 4:
                    continue  # the slow case needs fewer blocks
                times[name].append(case.block())
    finally:
        sumo.close()
    base_us = statistics.median(times["sumo"]) * 1e6
    light_us = statistics.median(times["sumo_light"]) * 1e6

    def row(metric: str, value: float, baseline: float, target: str) -> dict:
        ratio = value / baseline
        return {"benchmark": "emulator", "metric": metric, "value": round(value, 2),
                "baseline": round(baseline, 2), "ratio": round(ratio, 3), "target": target,
                "pass": bool(ratio <= 0.5) if target != "none" else True, "unit": "us/step"}

    us = {name: statistics.median(t) * 1e6 for name, t in times.items() if name in cases}
    return [
        row("step_us_9veh_ego", us["step_us_9veh_ego"], base_us, "<= 0.5"),
        row("step_us_9veh_ego vs the lighter reads", us["step_us_9veh_ego"], light_us, "none"),
        row("step_us_64veh_ego", us["step_us_64veh_ego"], base_us, "none"),
        row("step_us_64veh_all_receivers", us["step_us_64veh_all_receivers"], base_us, "none"),
    ]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
