"""Regenerate a dataset from its recorded settings and prove it byte-identical.

Eval datasets must be reproducible: the suites record a manifest hash, the manifest records the
generator settings, and `regenerate` rebuilds the dataset in a scratch folder and compares every
file's sha256 and the manifest hash against the record (and a local copy, when one exists).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from roadsense.data.factory.generator import generate_dataset
from roadsense.data.factory.settings import GeneratorSettings
from roadsense.data.index import index_content_hash
from roadsense.data.manifest import INDEX_NAME, SCENARIO_DIR, read_manifest, sha256_file


@dataclass
class RegenerateReport:
    """Outcome of a regeneration."""

    dataset_id: str
    manifest_hash: str
    expected_hash: str | None
    files: int
    differing_files: list[str] = field(default_factory=list)
    """Relative paths whose sha256 differs from the reference copy (or exist on one side only)."""

    @property
    def identical(self) -> bool:
        hash_ok = self.expected_hash is None or self.expected_hash == self.manifest_hash
        return hash_ok and not self.differing_files


def regenerate(
    settings: GeneratorSettings,
    *,
    expected_hash: str | None = None,
    reference: Path | None = None,
    workers: int = 1,
    keep: Path | None = None,
) -> RegenerateReport:
    """Generate `settings` from nothing and compare it with `expected_hash` and `reference`.

    The fresh copy is deleted afterwards unless `keep` names a folder to move it to.
    """
    scratch = Path(tempfile.mkdtemp(prefix="roadsense-regen-"))
    try:
        out = scratch / settings.dataset_id
        gen = generate_dataset(settings, out, workers=workers)
        fresh = read_manifest(out)
        differing: list[str] = []
        if reference is not None and reference.is_dir():
            differing = _compare_copy(reference, fresh)
        report = RegenerateReport(
            dataset_id=settings.dataset_id, manifest_hash=gen.manifest_hash,
            expected_hash=expected_hash, files=len(fresh["files"]), differing_files=differing,
        )
        if keep is not None:
            shutil.move(str(out), str(keep))
        return report
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _compare_copy(reference: Path, fresh: dict) -> list[str]:
    """Files of the local copy whose bytes differ from the fresh build (or exist on one side)."""
    on_disk = {
        p.relative_to(reference).as_posix(): sha256_file(p)
        for p in (reference / SCENARIO_DIR).rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }
    new = fresh["files"]
    differing = sorted(r for r in set(on_disk) | set(new) if on_disk.get(r) != new.get(r))
    index = reference / INDEX_NAME
    if not index.is_file() or index_content_hash(index) != fresh["index_sha256"]:
        differing.append(INDEX_NAME)
    if (reference / "manifest.json").is_file():
        if read_manifest(reference).get("manifest_hash") != fresh["manifest_hash"]:
            differing.append("manifest.json")
    return differing
