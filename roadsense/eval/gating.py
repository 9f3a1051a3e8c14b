"""Gating probe: whether a policy brakes for a hard-braking car ahead in its lane and only there.

Most cases are one synthetic observation: the ego cruising, a calm peer 25 m ahead in its lane,
and one peer reporting a hard brake (7.5 m/s^2 below its running mean) at a given place in the
ego's frame. A driver brakes for the car ahead in the lane and for no car behind or beside
(beyond the spread that GPS errors give a car of the ego's lane, `CASES`); the convoy scenarios
only ever show the first kind, so this probe measures what simulation
scores cannot: what the policy does with a hard brake where training never put one. The
"calm peer alone" cases hold one peer that does not brake, behind or beside the ego and nothing
ahead; the "calm cars behind" cases hold a hard brake ahead in the lane while the other cars
read behind and to the side, and nothing else ahead. GPS error puts the cars of a real drive
there, and the convoys (the ego drives last) never do. Every case is asked at two ego speeds
(10 and 25 m/s); a case counts as braked when the larger command is above the brake threshold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from roadsense.envs.observation import (
    EGO_SCALE,
    PEER_DIM,
    PEER_INDEX,
    PEER_SCALE,
)

HARD_BRAKE_MPS2 = 7.5
SPEEDS_MPS = (10.0, 25.0)
CALM_PEER_M = (25.0, 0.0)


class Case(NamedTuple):
    """One probe case: a peer at (`long_m` ahead (+) / behind (-), `lat_m` left (+)) reporting
    `accel_mps2` against its running mean, beside the calm peer ahead unless `alone`, and calm
    peers at the places `others`."""

    name: str
    long_m: float
    lat_m: float
    should_brake: bool | None
    """What a driver does (None: either answer is defensible; reported, not judged)."""
    accel_mps2: float = -HARD_BRAKE_MPS2
    alone: bool = False
    others: tuple[tuple[float, float], ...] = ()


def _calm_alone(name: str, long_m: float, lat_m: float) -> Case:
    return Case(f"calm peer alone, {name}", long_m, lat_m, False, 0.0, True)


def _calm_behind(name: str, long_m: float, others: tuple[tuple[float, float], ...]) -> Case:
    return Case(f"ahead {long_m:.0f} m, in lane; calm cars behind: {name}", long_m, 0.0, True,
                -HARD_BRAKE_MPS2, True, others)


CASES: tuple[Case, ...] = tuple(Case(*c) for c in (
    # name, ahead (+) / behind (-) m, left (+) m, a driver brakes (None: either answer)
    ("ahead 15 m, in lane", 15.0, 0.0, True),
    ("ahead 40 m, in lane", 40.0, 0.0, True),
    ("ahead 80 m, in lane", 80.0, 0.0, True),
    ("ahead 30 m, 4 m left (GPS error)", 30.0, 4.0, True),
    ("behind 15 m", -15.0, 0.0, False),
    ("behind 40 m", -40.0, 0.0, False),
    ("beside 35 m left", 5.0, 35.0, False),
    ("beside 45 m right", 10.0, -45.0, False),
    ("ahead 30 m, 40 m left", 30.0, 40.0, False),
    ("no hard brake (calm peer only)", float("nan"), float("nan"), False),
    ("beside 15 m left (GPS spread of the lane)", 5.0, 15.0, None),
    ("beside 20 m right (GPS spread of the lane)", 10.0, -20.0, None),
)) + (
    _calm_alone("behind 15 m", -15.0, 0.0),
    _calm_alone("behind 40 m, 28 m left", -40.0, 28.0),
    _calm_alone("behind 75 m, 28 m right", -75.0, -28.0),
    _calm_alone("beside 30 m right", 10.0, -30.0),
    _calm_behind("8 m back 16 m left, 7 m back 13 m left", 30.0, ((-8.0, 16.0), (-7.0, 13.0))),
    _calm_behind("12 m back 18 m right", 50.0, ((-12.0, -18.0),)),
)
"""The probe's cases. The 4 m case stands for a same-lane car seen through GPS error. The last
two are reported, not judged: GPS and heading errors put the cars of the ego's own lane a median
5-10 m and a 90th percentile 14-23 m to the side (the real drive shows 13-19 m; see
`roadsense.rllib.warm_start.BESIDE_M`), so a hard brake read 15-20 m aside may well be the car
ahead, and braking for it is as defensible as not."""


VALIDATION_CASES: tuple[Case, ...] = tuple(Case(*c) for c in (
    ("ahead 20 m, in lane", 20.0, 0.0, True),
    ("ahead 60 m, 3 m right (GPS error)", 60.0, -3.0, True),
    ("behind 25 m", -25.0, 0.0, False),
    ("beside 32 m right", 8.0, -32.0, False),
    ("beside 40 m left", 0.0, 40.0, False),
    ("ahead 20 m, 50 m right", 20.0, -50.0, False),
)) + (
    _calm_alone("behind 50 m, 20 m right", -50.0, -20.0),
    _calm_alone("behind 30 m, 35 m left", -30.0, 35.0),
    _calm_behind("10 m back 15 m right, 5 m back 19 m left", 25.0,
                 ((-10.0, -15.0), (-5.0, 19.0))),
)
"""Cases of the same kinds at other places, for checkpoint selection
(`roadsense.rllib.validation`): the report's `CASES` stay out of it, so the probe in the final
report is not a score the selection tuned."""


def _peer(long_m: float, lat_m: float, accel_mps2: float) -> np.ndarray:
    row = np.zeros(PEER_DIM)
    row[PEER_INDEX["long_offset"]] = long_m
    row[PEER_INDEX["lat_offset"]] = lat_m
    row[PEER_INDEX["accel"]] = accel_mps2
    row[PEER_INDEX["age"]] = 0.05
    return (row / PEER_SCALE).astype(np.float32)


def observation(long_m: float, lat_m: float, speed_mps: float,
                accel_mps2: float = -HARD_BRAKE_MPS2, alone: bool = False,
                others: Sequence[tuple[float, float]] = ()) -> dict[str, np.ndarray]:
    """The probe's observation for one case: the calm peer ahead (unless `alone`), a peer at
    the case's place reporting `accel_mps2` (NaN place: none) and calm peers at `others`."""
    rows = [] if alone else [_peer(*CALM_PEER_M, 0.0)]
    if long_m == long_m:
        rows.append(_peer(long_m, lat_m, accel_mps2))
    rows += [_peer(lo, la, 0.0) for lo, la in others]
    ego = (np.array([speed_mps, 0.0]) / EGO_SCALE).astype(np.float32)
    peers = np.stack(rows) if rows else np.zeros((0, PEER_DIM), np.float32)
    return {"ego": ego, "peers": peers}


def gating_probe(policy: Callable[[dict[str, np.ndarray]], Any], *,
                 brake_threshold: float = 0.1,
                 speeds: Sequence[float] = SPEEDS_MPS,
                 cases: Sequence[Case] = CASES
                 ) -> dict[str, Any]:
    """The policy's brake per case of `cases` (the larger over `speeds`) and the summary: the
    share of "brake" cases it brakes on and of "no brake" cases it brakes on ("either" cases
    count in neither), and `failed`, the judged cases it answers unlike a driver. Stateful
    baselines are reset before each observation."""
    results = []
    for c in cases:
        brakes = []
        for v in speeds:
            if hasattr(policy, "reset"):
                policy.reset()
            obs = observation(c.long_m, c.lat_m, v, c.accel_mps2, c.alone, c.others)
            brakes.append(float(np.asarray(policy(obs)).ravel()[0]))
        brake = max(brakes)
        results.append({"case": c.name, "should_brake": c.should_brake, "brake": brake,
                        "braked": brake > brake_threshold})
    want = [c for c in results if c["should_brake"] is True]
    avoid = [c for c in results if c["should_brake"] is False]
    failed = sum(c["braked"] != c["should_brake"] for c in want + avoid)
    return {"cases": results,
            "ahead_braked": sum(c["braked"] for c in want) / len(want),
            "elsewhere_braked": sum(c["braked"] for c in avoid) / len(avoid),
            "failed": failed, "judged": len(want) + len(avoid), "passed": failed == 0}


def markdown(results: dict[str, dict[str, Any]]) -> str:
    """A table of `gating_probe` results, one column per policy."""
    names = list(results)
    lines = ["| case | driver | " + " | ".join(names) + " |",
             "|---|---|" + "---|" * len(names)]
    for i, c in enumerate(CASES):
        cells = [f"{results[n]['cases'][i]['brake']:.2f}" for n in names]
        driver = "either" if c.should_brake is None else "brake" if c.should_brake else "no brake"
        lines.append(f"| {c.name} | {driver} | " + " | ".join(cells)
                     + " |")
    lines.append("| **passed** | | " + " | ".join(
        "yes" if results[n]["passed"] else "no" for n in names) + " |")
    return "\n".join(lines) + "\n"


def write_report(results: dict[str, dict[str, Any]], out_dir: str | Path) -> Path:
    """`gating.md` in `out_dir`: `markdown(results)` with what the probe asks."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "gating.md"
    path.write_text(
        f"# Gating probe\n\nBrake command for one peer reporting a {HARD_BRAKE_MPS2} m/s^2 hard "
        f"brake at each place, with a calm peer {CALM_PEER_M[0]:.0f} m ahead; in the \"calm peer "
        "alone\" cases one peer that does not brake and nothing else, and in the \"calm cars "
        "behind\" cases the hard brake ahead with calm peers behind and to the side instead of "
        f"the one ahead. The ego cruises at {' and '.join(f'{v:.0f}' for v in SPEEDS_MPS)} m/s "
        "and the larger command counts (`roadsense.eval.gating`).\n\n" + markdown(results))
    return path
