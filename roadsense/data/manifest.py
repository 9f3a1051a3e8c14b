"""Dataset manifests: what a dataset holds and exactly how it was made.

A dataset is a folder (or an ``s3://`` prefix mirroring one)::

    <dataset>/manifest.json        this file's subject
    <dataset>/index.parquet        one row per scenario (see `roadsense.data.index`)
    <dataset>/scenarios/<id>/      <id>.sumocfg, .net.xml, .rou.xml, .nod.xml, .edg.xml

The manifest lists every file with its sha256, the generator settings (seed and parameter
ranges), the peer-count histogram, and the versions of everything that shaped the files.
``index.parquet`` is not in ``files``: its ``index_sha256`` hashes its rows, not its bytes,
because a parquet file names the version of the library that wrote it.

**Manifest hash.** ``manifest_hash`` is the sha256 of the manifest's canonical JSON (sorted keys,
no whitespace) *without* the fields in `UNHASHED_FIELDS`: ``created_utc`` and ``git_commit``
(when and from which checkout it was made, not what it holds), ``emulator_params_version``
(the radio parameters are applied at run time, not baked into any scenario file; run
manifests record them) and ``manifest_hash`` itself. Identical content therefore gives the same
hash on every machine, which is what eval suites record.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from roadsense.comms.params import params_version
from roadsense.errors import DatasetError
from roadsense.provenance import canonical_json

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
INDEX_NAME = "index.parquet"
SCENARIO_DIR = "scenarios"
FORMAT = "roadsense-dataset/1"

UNHASHED_FIELDS = ("created_utc", "git_commit", "emulator_params_version", "manifest_hash")
"""Provenance fields left out of the manifest hash (see the module docstring)."""

REQUIRED_FIELDS = (
    "format",
    "dataset_id",
    "generator_version",
    "seed",
    "split",
    "settings",
    "parameter_ranges",
    "base_scenario_hashes",
    "scenarios",
    "files",
    "index_sha256",
    "peer_count_histogram",
    "sumo_version",
    "emulator_params_version",
    "git_commit",
    "created_utc",
    "manifest_hash",
)
"""Every field a valid manifest carries (``git_commit`` may be null outside a git checkout)."""

SPLITS = ("train", "eval")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def manifest_hash(manifest: dict) -> str:
    """sha256 of the manifest's deterministic content (all fields but `UNHASHED_FIELDS`)."""
    content = {k: v for k, v in manifest.items() if k not in UNHASHED_FIELDS}
    return hashlib.sha256(canonical_json(content)).hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_manifest(directory: Path, manifest: dict) -> dict:
    """Stamp the manifest hash and write ``manifest.json`` atomically; returns the manifest."""
    manifest = dict(manifest)
    manifest["manifest_hash"] = manifest_hash(manifest)
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    atomic_write_bytes(directory / MANIFEST_NAME, text.encode())
    return manifest


def read_manifest(directory: Path) -> dict:
    """Load ``manifest.json`` from a dataset folder; DatasetError when missing or not JSON."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise DatasetError(
            "no manifest.json: not a dataset folder",
            path=path,
            fix="generate one with `roadsense scenarios generate` or pull it from S3",
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"manifest is not valid JSON ({exc})", path=path) from None
    if not isinstance(data, dict):
        raise DatasetError("manifest must be a JSON object", path=path)
    return data


def manifest_problems(manifest: dict, where: Path | str) -> list[str]:
    """Problems with the manifest itself: missing fields, a hash that does not match."""
    problems = [
        f"{where}: manifest field '{name}' is missing"
        for name in REQUIRED_FIELDS
        if name not in manifest
    ]
    if manifest.get("format", FORMAT) != FORMAT:
        problems.append(f"{where}: unknown format {manifest.get('format')!r} (expected {FORMAT})")
    if "split" in manifest and manifest["split"] not in SPLITS:
        problems.append(f"{where}: split {manifest['split']!r} is not one of {SPLITS}")
    if "manifest_hash" in manifest:
        actual = manifest_hash(manifest)
        if actual != manifest["manifest_hash"]:
            problems.append(
                f"{where}: manifest content was changed (manifest_hash "
                f"{manifest['manifest_hash'][:12]} recorded, {actual[:12]} computed)"
            )
    return problems


def file_problems(directory: Path, files: dict[str, str]) -> list[str]:
    """Missing files and sha256 mismatches (tampering) against the manifest's file list."""
    problems = []
    for rel, expected in sorted(files.items()):
        path = directory / rel
        if not path.is_file():
            problems.append(f"{path}: file listed in the manifest is missing")
        elif sha256_file(path) != expected:
            problems.append(f"{path}: sha256 does not match the manifest (file was modified)")
    return problems


def unlisted_files(directory: Path, files: dict[str, str]) -> list[str]:
    """Files under ``scenarios/`` that the manifest does not list (dotfiles are ignored)."""
    root = directory / SCENARIO_DIR
    if not root.is_dir():
        return []
    listed = set(files)
    extra = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            rel = path.relative_to(directory).as_posix()
            if rel not in listed:
                extra.append(f"{path}: file is not listed in the manifest")
    return extra


def histogram(values: Iterable[int], upto: int) -> dict[str, int]:
    """Counts of each value 0..upto (string keys, as JSON needs), zeros included."""
    counts = {str(k): 0 for k in range(upto + 1)}
    for v in values:
        counts[str(v)] = counts.get(str(v), 0) + 1
    return counts


def sumo_version() -> str:
    """SUMO's version, e.g. ``1.28.0``: the installed wheel's, else the SUMO layer's answer."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("eclipse-sumo")
    except PackageNotFoundError:  # SUMO installed outside pip (e.g. a system package)
        from roadsense.sim import sumo_version as sim_version

        return sim_version()


def emulator_params_version() -> str:
    """Content hash of the radio emulator's parameter files (`roadsense.comms.params_version`)."""
    return params_version()
