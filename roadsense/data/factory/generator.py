"""Write a dataset: scenario folders, ``index.parquet`` and ``manifest.json`` (last).

Scenario i is drawn from its own seed stream, so the output does not depend on the number of
workers or their order. Drawing and rendering take well under a millisecond per scenario; the
work is in netconvert (once per distinct road) and in SUMO loading each new scenario, both
child processes, of which `workers` run at once. Re-running with the same settings into the
same folder skips every scenario whose files are already present and identical (by sha256).
netconvert writes the build time into a header comment; it is stripped so that networks are
byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from roadsense.data.check import scenario_problems, sumo_problems
from roadsense.data.factory.families import FAMILIES, check_convoy, draw_params, render
from roadsense.data.factory.settings import GENERATOR_VERSION, MAX_PEERS, GeneratorSettings
from roadsense.data.index import index_content_hash, row_from_params, write_index
from roadsense.data.manifest import (
    FORMAT,
    INDEX_NAME,
    MANIFEST_NAME,
    SCENARIO_DIR,
    atomic_write_bytes,
    emulator_params_version,
    histogram,
    read_manifest,
    sha256_file,
    sumo_version,
    write_manifest,
)
from roadsense.errors import DatasetError, ScenarioError
from roadsense.provenance import git_commit
from roadsense.sim import build_network as sim_build_network

log = logging.getLogger(__name__)

_NET_HEADER = re.compile(rb"<!-- generated on .*?-->\s*", re.S)


@dataclass
class GenerateReport:
    """What a generation run did."""

    directory: Path
    manifest_hash: str
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def scenario_id(index: int, family: str) -> str:
    """Stable id of scenario `index`: ``s0042-highway``."""
    return f"s{index:04d}-{family}"


def build_network(nod: Path, edg: Path, net: Path) -> None:
    """netconvert nod+edg into `net` (through the SUMO layer), header comment stripped."""
    sim_build_network(nod, edg, net)
    atomic_write_bytes(net, _NET_HEADER.sub(b"", net.read_bytes(), count=1))


def _plan(index: int, settings: GeneratorSettings, out: Path, old_files: dict | None) -> dict:
    """Draw and render scenario `index`; mark it skipped when its files are there and identical."""
    params = draw_params(index, settings)
    sid = scenario_id(index, params["family"])
    problems = check_convoy(params)
    if problems:  # a generator bug, never bad input: stop loudly
        raise ScenarioError(f"generator broke the convoy contract: {problems}", path=sid)
    rel = f"{SCENARIO_DIR}/{sid}"
    folder = out / rel
    texts = render(sid, params)
    net = folder / f"{sid}.net.xml"
    same = net.is_file() and all(
        (folder / name).is_file() and (folder / name).read_bytes() == data
        for name, data in texts.items()
    )
    if same and old_files is not None:
        same = old_files.get(f"{rel}/{net.name}") == sha256_file(net)
    return {"id": sid, "index": index, "params": params, "dir": rel, "texts": texts,
            "status": "skipped" if same else "written"}


def _build_road(task: tuple[bytes, bytes, str]) -> bytes:
    """netconvert one road (nod, edg bytes) in a scratch folder; returns the network's bytes."""
    nod, edg, scratch = task
    folder = Path(tempfile.mkdtemp(dir=scratch))
    (folder / "road.nod.xml").write_bytes(nod)
    (folder / "road.edg.xml").write_bytes(edg)
    build_network(folder / "road.nod.xml", folder / "road.edg.xml", folder / "road.net.xml")
    return (folder / "road.net.xml").read_bytes()


def _build_roads(
    roads: dict[str, tuple[bytes, bytes]], out: Path, workers: int
) -> dict[str, bytes]:
    """Networks of the roads the written scenarios use, netconvert runs in parallel."""
    if not roads:
        return {}
    scratch = tempfile.mkdtemp(prefix=".roads-", dir=out)
    try:
        keys = sorted(roads)
        tasks = [(*roads[k], scratch) for k in keys]
        if workers <= 1 or len(tasks) == 1:
            nets = [_build_road(t) for t in tasks]
        else:
            # netconvert runs as a child process: threads keep `workers` of them busy at once
            # without the start-up cost (and fork hazards) of a Python process pool.
            with ThreadPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
                nets = list(pool.map(_build_road, tasks))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return dict(zip(keys, nets, strict=True))


def generate_dataset(
    settings: GeneratorSettings,
    out: Path,
    *,
    workers: int = 1,
    validate: bool = True,
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> GenerateReport:
    """Generate (or complete) the dataset `settings` describes into folder `out`.

    Scenarios on the same road share one netconvert run; `workers` processes build the roads
    and load scenarios in SUMO (`validate`). A folder holding a dataset made with other
    settings is refused unless `force`, which replaces it. ``manifest.json`` is written last,
    so a folder with a manifest is always complete.
    """
    start = time.perf_counter()
    out = Path(out)
    old = _old_manifest(out)
    settings_dict = json.loads(json.dumps(settings.to_dict()))  # tuples -> lists, as stored
    if old is not None and old.get("settings") != settings_dict:
        if not force:
            raise DatasetError(
                "folder holds a dataset made with other settings",
                path=out, fix="choose another output folder, or pass --force to replace it",
            )
        old = None
        shutil.rmtree(out / SCENARIO_DIR, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    same_sumo = old is not None and old.get("sumo_version") == sumo_version()
    old_files = old.get("files") if same_sumo else None
    results = [_plan(i, settings, out, old_files) for i in range(settings.count)]
    todo = [r for r in results if r["status"] == "written"]
    roads = {}
    for r in todo:
        texts = r["texts"]
        roads[r["params"]["road"]] = (texts[f"{r['id']}.nod.xml"], texts[f"{r['id']}.edg.xml"])
    nets = _build_roads(roads, out, workers)
    road_hashes = {k: hashlib.sha256(v).hexdigest() for k, v in nets.items()}
    for i, r in enumerate(todo):
        folder = out / r["dir"]
        for name, data in r["texts"].items():
            atomic_write_bytes(folder / name, data)
        atomic_write_bytes(folder / f"{r['id']}.net.xml", nets[r["params"]["road"]])
        if progress:
            progress(i + 1, len(todo))
    problems = []
    for r in results:
        names = [*r["texts"], f"{r['id']}.net.xml"]
        r["files"] = {f"{r['dir']}/{n}": sha256_file(out / r["dir"] / n) for n in names}
        road_hashes.setdefault(r["params"]["road"], r["files"][f"{r['dir']}/{r['id']}.net.xml"])
        problems += scenario_problems(out / r["dir"] / f"{r['id']}.sumocfg")
    if validate:
        written = [out / r["dir"] / f"{r['id']}.sumocfg" for r in todo]
        problems += sumo_problems(written, workers=max(1, workers))
    if problems:
        listing = "\n  ".join(problems)
        raise ScenarioError(f"generated scenarios are invalid:\n  {listing}", path=out)

    report = GenerateReport(directory=out, manifest_hash="")
    keep = {r["id"] for r in results}
    if old is not None:
        for entry in old.get("scenarios", []):
            if entry.get("id") not in keep:
                folder = out / entry.get("dir", f"{SCENARIO_DIR}/{entry['id']}")
                shutil.rmtree(folder, ignore_errors=True)
                report.removed.append(entry["id"])
    write_index(out / INDEX_NAME, [row_from_params(r["id"], r["params"]) for r in results])
    files = {k: v for r in results for k, v in r["files"].items()}
    manifest = write_manifest(out, {
        "format": FORMAT,
        "dataset_id": settings.dataset_id,
        "generator_version": GENERATOR_VERSION,
        "seed": settings.seed,
        "split": settings.split,
        "count": settings.count,
        "settings": settings_dict,
        "parameter_ranges": asdict(settings.ranges),
        "families": {name: asdict(FAMILIES[name]) for name in settings.families},
        "base_scenario_hashes": {
            **{f"family/{n}": FAMILIES[n].spec_hash() for n in settings.families},
            **{f"road/{k}": v for k, v in sorted(road_hashes.items())},
        },
        "scenarios": [
            {"id": r["id"], "dir": r["dir"], "family": r["params"]["family"],
             "peer_count": r["params"]["peer_count"]}
            for r in results
        ],
        "files": files,
        "index_sha256": index_content_hash(out / INDEX_NAME),
        "peer_count_histogram": histogram((r["params"]["peer_count"] for r in results), MAX_PEERS),
        "sumo_version": sumo_version(),
        "emulator_params_version": emulator_params_version(),
        "git_commit": git_commit(),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    report.manifest_hash = manifest["manifest_hash"]
    report.written = [r["id"] for r in results if r["status"] == "written"]
    report.skipped = [r["id"] for r in results if r["status"] == "skipped"]
    report.seconds = time.perf_counter() - start
    log.info(
        "dataset %s: %d written, %d skipped, %d removed in %.1f s (manifest %s)",
        out, len(report.written), len(report.skipped), len(report.removed), report.seconds,
        report.manifest_hash[:12],
    )
    return report


def _old_manifest(out: Path) -> dict | None:
    if not (out / MANIFEST_NAME).is_file():
        return None
    try:
        return read_manifest(out)
    except DatasetError:
        return None  # unreadable: regenerate and overwrite it
