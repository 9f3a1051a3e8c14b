"""`roadsense scenarios`: generate, check, ls, push, pull, regenerate datasets."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from roadsense.errors import ConfigError, DatasetError, StorageError

app = typer.Typer(no_args_is_help=True, add_completion=False)
console = Console()
err = Console(stderr=True)
log = logging.getLogger(__name__)

Workers = Annotated[
    int | None, typer.Option("--workers", "-j", help="Processes (default: all cores, max 4).")
]


def _workers(n: int | None) -> int:
    return n if n and n > 0 else min(4, os.cpu_count() or 1)


def _histogram(manifest: dict) -> str:
    hist = manifest.get("peer_count_histogram") or {}
    return " ".join(str(hist[k]) for k in sorted(hist, key=int))


@app.command()
def generate(
    preset: Annotated[str | None, typer.Option(
        help="A built-in dataset (default-v1, eval-v1, val-v1).")]
    = None,
    dataset_id: Annotated[str | None, typer.Option("--id", help="Dataset id (folder name).")]
    = None,
    seed: Annotated[int, typer.Option(help="Base seed.")] = 0,
    count: Annotated[int, typer.Option(help="Number of scenarios.")] = 156,
    split: Annotated[str, typer.Option(help="train or eval.")] = "train",
    families: Annotated[str, typer.Option(help="Comma-separated families.")]
    = "highway,rural,curved",
    peer_counts: Annotated[str, typer.Option(help="stratified (i mod 13) or uniform.")]
    = "stratified",
    out: Annotated[str | None, typer.Option(help="Folder or s3://bucket/prefix.")] = None,
    workers: Workers = None,
    validate: Annotated[bool, typer.Option(help="Load every new scenario in SUMO.")] = True,
    force: Annotated[bool, typer.Option(help="Replace a dataset made with other settings.")]
    = False,
) -> None:
    """Generate a dataset (incremental: identical scenarios already there are skipped)."""
    from roadsense.data.default import builtin_settings
    from roadsense.data.factory import GeneratorSettings, generate_dataset
    from roadsense.data.storage import is_s3_uri, upload_dir

    if preset:
        settings = builtin_settings().get(preset)
        if settings is None:
            raise ConfigError(f"unknown preset {preset!r}", fix=f"use {sorted(builtin_settings())}")
    elif dataset_id:
        settings = GeneratorSettings(
            dataset_id=dataset_id, seed=seed, count=count, split=split,
            families=tuple(f.strip() for f in families.split(",") if f.strip()),
            peer_counts=peer_counts,
        )
    else:
        raise ConfigError("give --preset or --id", fix="e.g. --preset default-v1")
    target = out or f"datasets/{settings.dataset_id}"
    local = Path(tempfile.mkdtemp(prefix="roadsense-gen-")) / settings.dataset_id \
        if is_s3_uri(target) else Path(target)
    with console.status(f"generating {settings.count} scenarios into {local}"):
        report = generate_dataset(settings, local, workers=_workers(workers), validate=validate,
                                  force=force)
    console.print(
        f"{settings.dataset_id}: {len(report.written)} written, {len(report.skipped)} skipped "
        f"in {report.seconds:.1f} s; manifest {report.manifest_hash}"
    )
    if is_s3_uri(target):
        try:
            sync = upload_dir(local, target)
        finally:
            shutil.rmtree(local.parent, ignore_errors=True)
        console.print(f"uploaded {len(sync.transferred)} files to {target}")


def _local_copy(target: str, cache_dir: Path | None) -> Path:
    from roadsense.data.storage import cache_dir_for, download_dir, is_s3_uri

    if not is_s3_uri(target):
        return Path(target)
    local = cache_dir_for(target, cache_dir)
    with console.status(f"pulling {target}"):
        download_dir(target, local, mirror=True)
    return local


@app.command()
def check(
    target: Annotated[str, typer.Argument(help="Dataset folder or s3://bucket/prefix.")],
    sumo: Annotated[bool, typer.Option(help="Also load every scenario in SUMO.")] = True,
    cache_dir: Annotated[Path | None, typer.Option(help="Where s3:// datasets are mirrored.")]
    = None,
) -> None:
    """Report every problem of a dataset at once; exit code 1 when there is any."""
    from roadsense.data.check import verify_dataset

    local = _local_copy(target, cache_dir)
    problems = verify_dataset(local, sumo=sumo)
    for p in problems:
        err.print(p, markup=False, highlight=False, soft_wrap=True)
    if problems:
        err.print(f"{target}: {len(problems)} problem(s)", style="red")
        raise typer.Exit(1)
    console.print(f"{target}: OK")


@app.command("ls")
def ls(
    where: Annotated[str, typer.Argument(help="A folder of datasets or an s3:// prefix.")]
    = "datasets",
) -> None:
    """List datasets and their peer-count histograms."""
    from roadsense.data.storage import find_datasets

    table = Table("dataset", "split", "scenarios", "manifest", "scenarios with 0..12 peers",
                  "location")
    for location, m in find_datasets(where):
        table.add_row(
            str(m.get("dataset_id", "?")), str(m.get("split", "?")),
            str(len(m.get("scenarios", []))), str(m.get("manifest_hash", "?"))[:12],
            _histogram(m), location,
        )
    console.print(table)


@app.command()
def push(
    local: Annotated[Path, typer.Argument(help="Dataset folder.")],
    uri: Annotated[str, typer.Argument(help="s3://bucket/prefix (or a folder).")],
) -> None:
    """Upload a dataset, skipping files already there and identical (resumable)."""
    from roadsense.data.check import verify_hashes
    from roadsense.data.storage import upload_dir

    _, problems = verify_hashes(local)
    if problems:
        raise DatasetError(f"refusing to push a dataset with {len(problems)} problem(s): "
                           f"{problems[0]}", path=local, fix="run `roadsense scenarios check`")
    report = upload_dir(local, uri)
    console.print(f"{uri}: {len(report.transferred)} uploaded ({report.bytes} bytes), "
                  f"{len(report.skipped)} already there")


@app.command()
def pull(
    uri: Annotated[str, typer.Argument(help="s3://bucket/prefix (or a folder).")],
    local: Annotated[Path, typer.Argument(help="Destination folder.")],
) -> None:
    """Download a dataset, skipping files already present and identical, then verify it."""
    from roadsense.data.check import verify_hashes
    from roadsense.data.storage import download_dir

    report = download_dir(uri, local)
    console.print(f"{local}: {len(report.transferred)} downloaded ({report.bytes} bytes), "
                  f"{len(report.skipped)} already there")
    _, problems = verify_hashes(local)
    if problems:
        for p in problems:
            err.print(p, markup=False, highlight=False, soft_wrap=True)
        raise StorageError(f"pulled dataset has {len(problems)} problem(s)", path=local)


@app.command()
def regenerate(
    what: Annotated[str, typer.Argument(help="Eval suite name/file, built-in dataset, folder.")],
    root: Annotated[Path, typer.Option(help="Where local datasets live.")] = Path("datasets"),
    workers: Workers = None,
) -> None:
    """Regenerate a dataset from its recorded seed and settings; prove it byte-identical."""
    from roadsense.data.default import builtin_settings
    from roadsense.data.factory import GeneratorSettings
    from roadsense.data.factory.regenerate import regenerate as regen
    from roadsense.data.manifest import read_manifest
    from roadsense.data.suites import load_suite, suite_path

    expected, reference = None, None
    if suite_path(what).is_file():
        suite = load_suite(what)
        name, expected = suite.dataset.name, suite.dataset.manifest_hash
        settings = builtin_settings().get(name)
        reference = root / name
        if settings is None and (reference / "manifest.json").is_file():
            settings = GeneratorSettings.from_dict(read_manifest(reference)["settings"])
    elif what in builtin_settings():
        settings, reference = builtin_settings()[what], root / what
    elif (Path(what) / "manifest.json").is_file():
        reference = Path(what)
        manifest = read_manifest(reference)
        settings, expected = GeneratorSettings.from_dict(manifest["settings"]), manifest.get(
            "manifest_hash")
    else:
        raise ConfigError(f"{what!r} is neither an eval suite, a built-in dataset nor a folder "
                          "with a manifest.json")
    if settings is None:
        raise DatasetError(f"no recorded settings for {what!r}", path=reference)
    with console.status(f"regenerating {settings.dataset_id} ({settings.count} scenarios)"):
        report = regen(settings, expected_hash=expected, reference=reference,
                       workers=_workers(workers))
    console.print(f"regenerated {report.dataset_id}: {report.files} files, "
                  f"manifest {report.manifest_hash}")
    if expected:
        console.print(f"recorded manifest hash        {expected}")
    for rel in report.differing_files[:20]:
        err.print(f"differs: {rel}", markup=False, highlight=False)
    if not report.identical:
        err.print("NOT identical to the record", style="red")
        raise typer.Exit(1)
    console.print("byte-identical to the record", style="green")
