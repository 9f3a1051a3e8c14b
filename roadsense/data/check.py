"""Dataset checks: every problem at once, each naming the file at fault.

`verify_dataset` is what ``roadsense scenarios check`` runs: manifest fields and hash, missing
and modified files (sha256 against the manifest), unlisted files, the index, and per scenario the
ego contract (``V001`` present, departing at t=0, last of its convoy) and whether SUMO loads it.
`verify_hashes` is the quick part (no XML, no SUMO) that ScenarioManager runs once per load.
"""

from __future__ import annotations

import logging
import os
import re
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from roadsense import EGO_ID
from roadsense.data.manifest import (
    INDEX_NAME,
    file_problems,
    manifest_problems,
    read_manifest,
    unlisted_files,
)
from roadsense.errors import DatasetError

log = logging.getLogger(__name__)

_PEER_ID = re.compile(r"V\d{3}")


def verify_hashes(directory: Path) -> tuple[dict | None, list[str]]:
    """Manifest fields, manifest hash and per-file sha256; returns (manifest or None, problems)."""
    directory = Path(directory)
    try:
        manifest = read_manifest(directory)
    except DatasetError as exc:
        return None, [str(exc)]
    where = directory / "manifest.json"
    problems = manifest_problems(manifest, where)
    files = manifest.get("files")
    if isinstance(files, dict):
        problems += file_problems(directory, files)
        problems += unlisted_files(directory, files)
    index = directory / INDEX_NAME
    if not index.is_file():
        problems.append(f"{index}: file is missing")
    elif "index_sha256" in manifest:
        from roadsense.data.index import index_content_hash, read_index

        try:
            if index_content_hash(index) != manifest["index_sha256"]:
                problems.append(f"{index}: rows do not match the manifest (file was modified)")
        except DatasetError as exc:
            problems.append(str(exc))
        else:
            ids = set(read_index(index).column("scenario_id").to_pylist())
            if isinstance(manifest.get("scenarios"), list) and ids != {
                e.get("id") for e in manifest["scenarios"]
            }:
                problems.append(f"{index}: scenario ids differ from the manifest's")
    return manifest, problems


def scenario_problems(sumocfg: Path) -> list[str]:
    """Structural problems of one scenario: files, XML, and the ego contract."""
    sumocfg = Path(sumocfg)
    if not sumocfg.is_file():
        return [f"{sumocfg}: sumocfg is missing"]
    try:
        cfg = ET.parse(sumocfg).getroot()
    except ET.ParseError as exc:
        return [f"{sumocfg}: sumocfg is not valid XML ({exc})"]
    problems = []
    inputs = {}
    for key in ("net-file", "route-files"):
        node = cfg.find(f"input/{key}")
        if node is None or not node.get("value"):
            problems.append(f"{sumocfg}: sumocfg has no <{key}>")
            continue
        inputs[key] = [sumocfg.parent / v.strip() for v in node.get("value").split(",")]
    for path in inputs.get("net-file", []):
        if not path.is_file():
            problems.append(f"{path}: network file named by {sumocfg.name} is missing")
    ego_found = False
    for path in inputs.get("route-files", []):
        if not path.is_file():
            problems.append(f"{path}: route file named by {sumocfg.name} is missing")
            continue
        try:
            routes = ET.parse(path).getroot()
        except ET.ParseError as exc:
            problems.append(f"{path}: route file is not valid XML ({exc})")
            continue
        found, route_problems = _ego_problems(path, routes)
        ego_found |= found
        problems += route_problems
    if "route-files" in inputs and not ego_found and not any("route file" in p for p in problems):
        problems.append(f"{sumocfg}: no vehicle '{EGO_ID}' (the ego) in its route files")
    return problems


def _ego_problems(path: Path, routes: ET.Element) -> tuple[bool, list[str]]:
    vehicles = routes.findall("vehicle")
    ego = next((v for v in vehicles if v.get("id") == EGO_ID), None)
    if ego is None:
        return False, []
    problems = []
    try:
        depart = float(ego.get("depart", "nan"))
    except ValueError:
        depart = float("nan")
    if depart != 0.0:
        problems.append(f"{path}: {EGO_ID} departs at {ego.get('depart')!r}, not at t=0")
    lane, pos = ego.get("departLane"), _float(ego.get("departPos"))
    for v in vehicles:
        vid = v.get("id", "")
        if vid == EGO_ID or not _PEER_ID.fullmatch(vid) or v.get("departLane") != lane:
            continue
        if pos is not None and (p := _float(v.get("departPos"))) is not None and p <= pos:
            problems.append(f"{path}: peer {vid} starts behind {EGO_ID}; the ego must be last")
    return True, problems


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def sumo_problems(sumocfgs: list[Path], *, workers: int | None = None) -> list[str]:
    """Whether SUMO loads each scenario (through the SUMO layer); [] when it is unavailable."""
    try:
        import roadsense.sim as sim
    except ImportError:
        log.warning("roadsense.sim is not available: SUMO load checks skipped")
        return []
    batch = getattr(sim, "validate_scenarios", None)
    if batch is not None:  # one SUMO loading every scenario in turn, when the layer offers it
        found = batch(sumocfgs)
        return [p if str(cfg) in p else f"{cfg}: {p}"
                for cfg, ps in zip(sumocfgs, found, strict=True) for p in ps]
    validate_scenario = sim.validate_scenario
    # Each check runs a SUMO subprocess, so threads overlap them without a GIL bottleneck.
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = list(pool.map(validate_scenario, sumocfgs))
    return [p if str(cfg) in p else f"{cfg}: {p}" for cfg, ps in zip(sumocfgs, found, strict=True)
            for p in ps]


def verify_dataset(directory: Path, *, sumo: bool = True) -> list[str]:
    """Every problem of a local dataset folder; an empty list means it is intact."""
    directory = Path(directory)
    manifest, problems = verify_hashes(directory)
    if manifest is None:
        return problems
    scenarios = manifest.get("scenarios")
    if not isinstance(scenarios, list):
        return problems
    loadable = []
    for entry in scenarios:
        sid = entry.get("id", "?")
        cfg = directory / entry.get("dir", f"scenarios/{sid}") / f"{sid}.sumocfg"
        found = scenario_problems(cfg)
        problems += found
        if not found:
            loadable.append(cfg)
    if sumo:
        problems += sumo_problems(loadable)
    return problems
