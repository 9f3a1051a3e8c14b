"""Scenario files: the built-in base convoy, building networks, and the sanity check.

A scenario is a `.sumocfg` plus the network and route files it names. The contract
(ARCHITECTURE.md): the ego `V001` departs at t=0 in every scenario.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from roadsense import EGO_ID
from roadsense.errors import ScenarioError
from roadsense.sim.binary import sumo_binary, sumo_version

BASE_SCENARIO_SOURCES = Path(__file__).parent / "base_scenario"
_BASE_FILES = ("convoy.nod.xml", "convoy.edg.xml", "convoy.rou.xml", "convoy.sumocfg")


def cache_root() -> Path:
    """Where generated artefacts of built-in sources go (`ROADSENSE_CACHE` overrides)."""
    env = os.environ.get("ROADSENSE_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "roadsense"


def build_network(nod: Path, edg: Path, out: Path) -> Path:
    """Build `out` (a .net.xml) from plain node/edge files with netconvert, atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".net.xml", delete=False) as tmp:
        tmp_path = Path(tmp.name)
    try:
        proc = subprocess.run(
            [
                str(sumo_binary("netconvert")),
                "--node-files", str(nod),
                "--edge-files", str(edg),
                "--output-file", str(tmp_path),
                "--no-turnarounds", "true",
                "--offset.disable-normalization", "true",
                "--no-warnings", "true",
            ],
            capture_output=True, text=True, timeout=120,
        )
        if proc.returncode != 0:
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            raise ScenarioError(
                f"netconvert failed: {' | '.join(msg[-3:]) or 'no output'}",
                path=nod,
                fix="check the node/edge files",
            )
        os.replace(tmp_path, out)
    finally:
        tmp_path.unlink(missing_ok=True)
    return out


def base_scenario() -> Path:
    """The built-in convoy scenario (7 cars, V001 last); its network is built on first use.

    The build goes to a cache folder keyed by the sources' hash and the SUMO version, so editing
    the sources or upgrading SUMO rebuilds it, and concurrent first uses do not clash.
    """
    digest = hashlib.sha256(sumo_version().encode())
    for name in _BASE_FILES:
        digest.update((BASE_SCENARIO_SOURCES / name).read_bytes())
    target = cache_root() / "base_scenario" / digest.hexdigest()[:16]
    cfg = target / "convoy.sumocfg"
    if cfg.is_file():
        return cfg
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".build-"))
    try:
        for name in _BASE_FILES:
            shutil.copy2(BASE_SCENARIO_SOURCES / name, staging / name)
        build_network(staging / "convoy.nod.xml", staging / "convoy.edg.xml",
                      staging / "convoy.net.xml")
        try:
            os.rename(staging, target)
        except OSError:  # another process built it first: theirs is identical
            if not cfg.is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cfg


def _parse(path: Path, problems: list[str], what: str) -> ET.Element | None:
    if not path.is_file():
        problems.append(f"{path}: {what} is missing")
        return None
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        problems.append(f"{path}: malformed XML ({exc})")
        return None


def sumocfg_inputs(cfg: Path, root: ET.Element) -> tuple[list[Path], list[Path]]:
    """(net files, route files) a sumocfg names, resolved relative to it."""
    def files(tag: str) -> list[Path]:
        node = root.find(f"./input/{tag}")
        if node is None or not node.get("value"):
            return []
        return [cfg.parent / v.strip() for v in node.get("value", "").split(",") if v.strip()]

    return files("net-file"), files("route-files")


def validate_scenario(sumocfg: str | Path, *, load_check: bool = True) -> list[str]:
    """Every problem with a scenario at once (an empty list means it is fine).

    Checks: the sumocfg and the files it names exist and are well-formed XML; `V001` is defined
    and departs at t=0; and (with `load_check`) SUMO itself loads it and inserts `V001`.
    """
    cfg = Path(sumocfg)
    problems: list[str] = []
    root = _parse(cfg, problems, "sumocfg")
    if root is None:
        return problems
    nets, routes = sumocfg_inputs(cfg, root)
    if not nets:
        problems.append(f"{cfg}: no <input><net-file value=...> entry")
    if not routes:
        problems.append(f"{cfg}: no <input><route-files value=...> entry")
    for net in nets:
        _parse(net, problems, "net-file")
    ego_depart: str | None = None
    for route_file in routes:
        rroot = _parse(route_file, problems, "route file")
        if rroot is None:
            continue
        for veh in rroot.iter("vehicle"):
            if veh.get("id") == EGO_ID:
                ego_depart = veh.get("depart", "")
    if routes and ego_depart is None and not any(p.endswith("missing") or "malformed" in p
                                                 for p in problems):
        problems.append(f"{cfg}: ego vehicle {EGO_ID} is not defined in its route files")
    elif ego_depart is not None:
        try:
            depart_ok = float(ego_depart) == 0.0
        except ValueError:
            depart_ok = False
        if not depart_ok:
            problems.append(f"{cfg}: ego {EGO_ID} departs at {ego_depart!r}; it must depart at 0")
    if load_check and not problems:
        problems.extend(_load_problems(cfg))
    return problems


def validate_scenarios(sumocfgs: list[str | Path]) -> list[list[str]]:
    """`validate_scenario` for many scenarios, with one SUMO loading each in turn (~5 ms each
    instead of a new SUMO process per scenario). Problems per scenario, in order."""
    from roadsense.errors import RoadSenseError
    from roadsense.sim.process import SumoProcess

    out: list[list[str]] = []
    sim: SumoProcess | None = None
    try:
        for cfg in map(Path, sumocfgs):
            problems = validate_scenario(cfg, load_check=False)
            if not problems:
                if sim is None:  # traci: works whatever libsumo simulation this process runs
                    sim = SumoProcess(cfg, backend="traci")
                try:
                    sim.reset(0, cfg)
                except RoadSenseError as exc:
                    problems.append(f"{cfg}: SUMO cannot load it: {exc.message}")
            out.append(problems)
    finally:
        if sim is not None:
            sim.close()
    return out


def _load_problems(cfg: Path) -> list[str]:
    """Let the real SUMO load the scenario for one step and report what it refuses."""
    proc = subprocess.run(
        [
            str(sumo_binary()), "-c", str(cfg), "--begin", "0", "--end", "0.2",
            "--step-length", "0.1", "--no-step-log", "true", "--no-warnings", "true",
            "--duration-log.disable", "true", "--vehroute-output", os.devnull,
            "--vehroute-output.write-unfinished", "true",
        ],
        capture_output=True, text=True, timeout=120,
    )
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        detail = " | ".join(lines[-3:]) or f"exit code {proc.returncode}"
        return [f"{cfg}: SUMO cannot load it: {detail}"]
    return []


def write_convoy(folder: str | Path, n_peers: int, *, spacing_m: float = 45.0,
                 speed_mps: float = 25.0, tau_s: float = 1.2, action_step_s: float = 1.0) -> Path:
    """Write a straight-road convoy scenario: `V001` last, `n_peers` radio cars ahead of it.

    The network is the base scenario's 5 km two-lane road. For tests and benchmarks that need a
    given peer count; datasets come from the scenario factory.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base = base_scenario().parent
    shutil.copy2(base / "convoy.net.xml", folder / "convoy.net.xml")
    if spacing_m - 5.0 <= 2.5 + tau_s * speed_mps + 0.05:  # SUMO would refuse to insert them
        raise ScenarioError(f"spacing {spacing_m} m is below the equilibrium gap at "
                            f"{speed_mps} m/s", fix="use a larger spacing or a lower speed")
    head = 100.0 + n_peers * spacing_m
    if head + 1500 > 5000:
        raise ScenarioError(f"{n_peers} peers at {spacing_m} m do not fit the 5 km road",
                            fix="use fewer peers or a smaller spacing")
    cars = "\n".join(
        f'    <vehicle id="V{i + 1:03d}" type="driver" route="r" depart="0" departLane="0" '
        f'departPos="{100.0 + i * spacing_m:.2f}" departSpeed="{speed_mps}"/>'
        for i in reversed(range(n_peers + 1)))
    (folder / "convoy.rou.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<routes>\n'
        f'    <vType id="driver" carFollowModel="Krauss" sigma="0" tau="{tau_s}" accel="2.6" '
        'decel="4.5" apparentDecel="4.5" emergencyDecel="9.0" length="5.0" minGap="2.5" '
        f'maxSpeed="33.33" actionStepLength="{action_step_s}"/>\n'
        '    <route id="r" edges="road"/>\n' + cars + "\n</routes>\n")
    shutil.copy2(BASE_SCENARIO_SOURCES / "convoy.sumocfg", folder / "convoy.sumocfg")
    return folder / "convoy.sumocfg"
