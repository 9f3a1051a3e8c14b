"""Scenario families and the drawing of one scenario's parameters.

A family fixes the road (lanes, speed limit, straight or curved) and the convoy's speed range;
`draw_params` draws one concrete scenario from a numpy Generator, and `render` turns the drawn
parameters into SUMO input files (text only; netconvert builds the network later).

Convoy layout (the contract): ``V001`` (the ego) departs at t=0 and drives last on lane 0;
``V002`` is its direct leader, ``V003`` the next, ... Background cars ``BG001``... have no radio:
on the other lanes of a multi-lane road, or one obstacle ahead of the convoy head on lane 0.
Every car departs at t=0 with a few cm more than the equilibrium gap (minGap + tau*v) to the
car ahead, because SUMO silently refuses an insertion at exactly that gap.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass

import numpy as np

from roadsense import EGO_ID
from roadsense.data.factory.settings import FAMILY_NAMES, MAX_PEERS, GeneratorSettings, Ranges
from roadsense.provenance import canonical_json

AHEAD_M = 2500.0
"""Road left ahead of the convoy head at least: 60 s at 33 m/s (about 2 km) plus margin."""
ROAD_LENGTH_M = 5000.0
"""Every road's length: the longest convoy (12 peers, an obstacle) starts within 1.6 km."""
START_MARGIN_M = (30.0, 80.0)
"""Road behind the ego's back bumper."""
_LAYOUT_KEY = 0x5CE9E
"""Spawn-key tag of the curved road layouts' streams (scenario streams have 1-element keys)."""


@dataclass(frozen=True)
class Family:
    """A road type: its geometry and the speeds driven on it."""

    name: str
    lanes: tuple[int, int]
    speed_limit_mps: float
    convoy_speed_mps: tuple[float, float]
    curve_radius_m: tuple[float, float] | None = None
    """Arc radii of a curved road; None for a straight one."""
    curve_turn_deg: tuple[float, float] = (20.0, 90.0)
    straight_m: tuple[float, float] = (150.0, 500.0)
    """Straight pieces between arcs of a curved road."""
    layouts: int = 1
    """Distinct road layouts per lane count (curved roads reuse a few, so netconvert runs a
    few times per dataset, not once per scenario)."""

    def spec_hash(self) -> str:
        """sha256 of the family definition (the manifest's base scenario hash)."""
        return hashlib.sha256(canonical_json(asdict(self))).hexdigest()


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("highway", lanes=(2, 3), speed_limit_mps=36.11, convoy_speed_mps=(22.0, 33.0)),
        Family("rural", lanes=(1, 1), speed_limit_mps=27.78, convoy_speed_mps=(14.0, 25.0)),
        Family(
            "curved", lanes=(1, 2), speed_limit_mps=27.78, convoy_speed_mps=(14.0, 25.0),
            curve_radius_m=(250.0, 900.0), layouts=6,
        ),
    )
}
if tuple(FAMILIES) != FAMILY_NAMES:  # settings validates family names without this table
    raise RuntimeError(f"FAMILIES {tuple(FAMILIES)} != settings.FAMILY_NAMES {FAMILY_NAMES}")


def scenario_rng(seed: int, index: int) -> np.random.Generator:
    """Scenario `index`'s own stream: independent of every other scenario (parallel == serial)."""
    return np.random.default_rng(np.random.SeedSequence(entropy=seed, spawn_key=(index,)))


def _u(rng: np.random.Generator, bounds: tuple[float, float], digits: int = 3) -> float:
    lo, hi = bounds
    return round(float(rng.uniform(lo, hi)) if hi > lo else float(lo), digits)


def _driver(rng: np.random.Generator, r: Ranges, vid: str, speed: float, max_speed: float) -> dict:
    return {
        "id": vid,
        "lane": 0,
        "pos_m": 0.0,
        "speed_mps": round(speed, 3),
        "max_speed_mps": round(max_speed, 3),
        "tau_s": _u(rng, r.tau_s),
        "sigma": _u(rng, r.sigma),
        "action_step_s": round(_u(rng, r.action_step_s), 1),
        "accel_mps2": _u(rng, r.accel_mps2),
        "decel_mps2": _u(rng, r.decel_mps2),
        "emergency_decel_mps2": _u(rng, r.emergency_decel_mps2),
        "length_m": _u(rng, r.length_m),
        "min_gap_m": _u(rng, r.min_gap_m),
    }


def _place_ahead(follower: dict, leader: dict, speed: float, extra_m: float) -> None:
    """Put `leader`'s front so that its back is minGap + tau*v + extra ahead of `follower`."""
    gap = follower["min_gap_m"] + follower["tau_s"] * speed + extra_m
    # Round up so the rounded positions never lose the few cm that make insertion succeed.
    leader["pos_m"] = math.ceil((follower["pos_m"] + gap + leader["length_m"]) * 100) / 100


def draw_params(index: int, settings: GeneratorSettings) -> dict:
    """All parameters of scenario `index`, drawn from its own stream only."""
    rng = scenario_rng(settings.seed, index)
    r = settings.ranges
    lo, hi = r.peer_count
    if settings.peer_counts == "stratified":
        span = hi - lo + 1
        peers = lo + index % span
        family = FAMILIES[settings.families[(index // span) % len(settings.families)]]
    else:
        peers = int(rng.integers(lo, hi + 1))
        family = FAMILIES[settings.families[int(rng.integers(len(settings.families)))]]
    lanes = int(rng.integers(family.lanes[0], family.lanes[1] + 1))
    speed = _u(rng, family.convoy_speed_mps, 2)

    convoy = [_driver(rng, r, EGO_ID, speed, speed * _u(rng, r.speed_factor))]
    convoy[0]["pos_m"] = round(_u(rng, START_MARGIN_M, 2) + convoy[0]["length_m"], 2)
    for k in range(1, peers + 1):
        factor = 1.0 if k == peers else _u(rng, r.speed_factor)
        car = _driver(rng, r, f"V{k + 1:03d}", speed, speed * factor)
        _place_ahead(convoy[-1], car, speed, _u(rng, r.extra_gap_m))
        convoy.append(car)

    background: list[dict] = []
    head = convoy[-1]
    p_obstacle = r.obstacle_ahead_prob_alone if peers == 0 else r.obstacle_ahead_prob
    if rng.random() < p_obstacle:
        car = _driver(rng, r, "", speed, speed * _u(rng, (1.0, 1.05)))
        _place_ahead(head, car, speed, _u(rng, r.obstacle_extra_gap_m))
        background.append(car)
    if lanes > 1 and rng.random() < r.background_prob:
        n = int(rng.integers(r.background_count[0], r.background_count[1] + 1))
        lane_of = sorted(int(rng.integers(1, lanes)) for _ in range(n))
        for lane in sorted(set(lane_of)):
            lane_speed = _u(rng, (0.6 * family.speed_limit_mps, 0.95 * family.speed_limit_mps), 2)
            prev = None
            for _ in range(lane_of.count(lane)):
                car = _driver(rng, r, "", lane_speed, lane_speed)
                car["lane"] = lane
                if prev is None:
                    back = _u(rng, (20.0, head["pos_m"] + 300.0), 2)
                    car["pos_m"] = round(back + car["length_m"], 2)
                else:
                    _place_ahead(prev, car, lane_speed, _u(rng, (10.0, 200.0)))
                background.append(car)
                prev = car
    for i, car in enumerate(background, start=1):
        car["id"] = f"BG{i:03d}"

    layout = int(rng.integers(family.layouts))
    if family.curve_radius_m is not None:
        shape, radii, turns = curve_layout(settings.seed, family, layout)
    else:
        shape, radii, turns = [(0.0, 0.0), (ROAD_LENGTH_M, 0.0)], [], []
    road = f"{family.name}-{lanes}lane" + (f"-layout{layout}" if family.layouts > 1 else "")
    ahead_lane0 = sorted((v for v in convoy[1:] + background if v["lane"] == 0),
                         key=lambda v: v["pos_m"])
    return {
        "index": index,
        "family": family.name,
        "lanes": lanes,
        "speed_limit_mps": family.speed_limit_mps,
        "convoy_speed_mps": speed,
        "road": road,
        "road_length_m": round(_polyline_length(shape), 2),
        "shape": [[round(x, 2), round(y, 2)] for x, y in shape],
        "curve_radii_m": radii,
        "curve_turn_deg": turns,
        "peer_count": peers,
        "convoy": convoy,
        "background": background,
        "ahead_ids": [v["id"] for v in ahead_lane0],
    }


def curve_layout(
    seed: int, family: Family, layout: int
) -> tuple[list[tuple[float, float]], list[float], list[float]]:
    """Curved road `layout` of a dataset: straights and arcs (alternating left and right),
    at least `ROAD_LENGTH_M` long; returns (polyline, arc radii, signed arc angles)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_LAYOUT_KEY, layout)))
    needed_m = ROAD_LENGTH_M
    x, y, heading, total = 0.0, 0.0, 0.0, 0.0
    points = [(x, y)]
    radii, turns = [], []
    sign = 1.0 if rng.random() < 0.5 else -1.0
    while total < needed_m:
        straight = _u(rng, family.straight_m, 1)
        x, y = x + straight * math.cos(heading), y + straight * math.sin(heading)
        points.append((x, y))
        total += straight
        if total >= needed_m:
            break
        radius = _u(rng, family.curve_radius_m, 1)
        turn = _u(rng, family.curve_turn_deg, 1)
        radii.append(radius)
        turns.append(turn * sign)
        n = max(2, math.ceil(radius * math.radians(turn) / 10.0))  # a point every <= 10 m
        # Arc around a centre to the left (sign +1) or right (-1) of the current heading.
        cx = x - sign * radius * math.sin(heading)
        cy = y + sign * radius * math.cos(heading)
        start = heading - sign * math.pi / 2
        for j in range(1, n + 1):
            a = start + sign * math.radians(turn) * j / n
            points.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
        x, y = points[-1]
        heading += sign * math.radians(turn)
        total += radius * math.radians(turn)
        sign = -sign
    return [(round(px, 2), round(py, 2)) for px, py in points], radii, turns


def _polyline_length(points: list[tuple[float, float]]) -> float:
    return sum(math.dist(a, b) for a, b in zip(points, points[1:], strict=False))


_XML = '<?xml version="1.0" encoding="UTF-8"?>\n'


def render(scenario_id: str, params: dict) -> dict[str, bytes]:
    """SUMO input files of one scenario: name -> bytes (``.net.xml`` is built from nod/edg)."""
    shape = params["shape"]
    (x0, y0), (x1, y1) = shape[0], shape[-1]
    nod = (
        f"{_XML}<nodes>\n"
        f'    <node id="start" x="{x0:.2f}" y="{y0:.2f}" type="priority"/>\n'
        f'    <node id="end" x="{x1:.2f}" y="{y1:.2f}" type="priority"/>\n'
        "</nodes>\n"
    )
    shape_attr = ""
    if len(shape) > 2:
        shape_attr = ' shape="' + " ".join(f"{x:.2f},{y:.2f}" for x, y in shape) + '"'
    edg = (
        f"{_XML}<edges>\n"
        f'    <edge id="road" from="start" to="end" numLanes="{params["lanes"]}" '
        f'speed="{params["speed_limit_mps"]:.2f}" priority="1"{shape_attr}/>\n'
        "</edges>\n"
    )
    cars = sorted(params["convoy"] + params["background"], key=lambda v: -v["pos_m"])
    lines = [f"{_XML}<routes>"]
    for v in cars:
        # Lane changes off: the convoy order (and so every hazard rank) stays as drawn.
        lines.append(
            f'    <vType id="t_{v["id"]}" vClass="passenger" carFollowModel="Krauss" '
            f'sigma="{v["sigma"]:.3f}" tau="{v["tau_s"]:.3f}" accel="{v["accel_mps2"]:.3f}" '
            f'decel="{v["decel_mps2"]:.3f}" apparentDecel="{v["decel_mps2"]:.3f}" '
            f'emergencyDecel="{v["emergency_decel_mps2"]:.3f}" length="{v["length_m"]:.3f}" '
            f'minGap="{v["min_gap_m"]:.3f}" maxSpeed="{v["max_speed_mps"]:.3f}" '
            f'actionStepLength="{v["action_step_s"]:.1f}" lcStrategic="-1" lcCooperative="0" '
            f'lcSpeedGain="0" lcKeepRight="0"/>'
        )
    lines.append('    <route id="r_road" edges="road"/>')
    for v in cars:
        lines.append(
            f'    <vehicle id="{v["id"]}" type="t_{v["id"]}" route="r_road" depart="0" '
            f'departLane="{v["lane"]}" departPos="{v["pos_m"]:.2f}" '
            f'departSpeed="{v["speed_mps"]:.2f}"/>'
        )
    lines.append("</routes>\n")
    cfg = (
        f"{_XML}<configuration>\n"
        "    <input>\n"
        f'        <net-file value="{scenario_id}.net.xml"/>\n'
        f'        <route-files value="{scenario_id}.rou.xml"/>\n'
        "    </input>\n"
        "    <time>\n"
        '        <begin value="0"/>\n'
        "    </time>\n"
        "</configuration>\n"
    )
    return {
        f"{scenario_id}.nod.xml": nod.encode(),
        f"{scenario_id}.edg.xml": edg.encode(),
        f"{scenario_id}.rou.xml": "\n".join(lines).encode(),
        f"{scenario_id}.sumocfg": cfg.encode(),
    }


def check_convoy(params: dict) -> list[str]:
    """Contract checks on drawn parameters: V001 at t=0, last of its convoy, peers in order."""
    problems = []
    convoy = params["convoy"]
    if not convoy or convoy[0]["id"] != EGO_ID:
        return [f"first convoy car must be {EGO_ID}"]
    ego = convoy[0]
    for k, car in enumerate(convoy[1:], start=2):
        if car["id"] != f"V{k:03d}" or car["lane"] != ego["lane"]:
            problems.append(f"{car['id']}: peer out of order or off the ego's lane")
        if car["pos_m"] <= convoy[k - 2]["pos_m"]:
            problems.append(f"{car['id']}: not ahead of {convoy[k - 2]['id']}")
    if any(v["lane"] == ego["lane"] and v["pos_m"] <= ego["pos_m"] for v in params["background"]):
        problems.append(f"a background car is behind {EGO_ID} on its lane")
    if not 0 <= params["peer_count"] <= MAX_PEERS or len(convoy) != params["peer_count"] + 1:
        problems.append("peer count does not match the convoy")
    front = max(v["pos_m"] for v in convoy + params["background"] if v["lane"] == ego["lane"])
    if params["road_length_m"] - front < AHEAD_M:
        problems.append(f"only {params['road_length_m'] - front:.0f} m of road ahead")
    return problems
