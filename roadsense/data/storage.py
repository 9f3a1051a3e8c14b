"""Dataset storage: a local folder or an ``s3://bucket/prefix``; the only boto3 user.

Sync is file by file with checksums: an object whose size and MD5 (its single-part ETag) match
the local file is skipped, so an interrupted transfer resumes where it stopped, and every
upload carries its sha256 for S3 to verify on receipt. ``manifest.json`` goes last, so a prefix
with a manifest holds a complete upload. Credentials come from the standard AWS chain and the
endpoint from ``AWS_ENDPOINT_URL`` (botocore reads both); nothing is configured here.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from roadsense.data.manifest import MANIFEST_NAME
from roadsense.errors import StorageError

log = logging.getLogger(__name__)


@dataclass
class SyncReport:
    """What a sync did: relative paths transferred, skipped (already identical), deleted."""

    transferred: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    """Local files removed because the source no longer has them (download with `mirror`)."""
    bytes: int = 0


def is_s3_uri(s: str | Path) -> bool:
    """True for ``s3://bucket[/prefix]``."""
    return isinstance(s, str) and s.startswith("s3://")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> (``bucket``, ``a/b``); StorageError for a malformed URI."""
    if not is_s3_uri(uri):
        raise StorageError(f"not an s3:// URI: {uri!r}", fix="use s3://bucket/prefix")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise StorageError(f"no bucket in {uri!r}", fix="use s3://bucket/prefix")
    return bucket, prefix.strip("/")


def _client() -> Any:
    import boto3  # imported here only: nothing else in roadsense touches boto3

    return boto3.client("s3")


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


COMPLETE_MARKER = "DONE"
"""A file that says its folder is complete (e.g. a training checkpoint): transferred after
every other file, so an interrupted sync never leaves a marked but partial folder."""


def _local_files(root: Path) -> list[str]:
    """Relative paths of the files under `root`, completion markers and then the manifest
    last, dotfiles left out."""
    rels = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    return sorted(rels, key=lambda r: (r == MANIFEST_NAME, r.rsplit("/", 1)[-1] == COMPLETE_MARKER))


def _list_objects(client: Any, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
    """relative key -> (size, ETag without quotes) of every object under the prefix."""
    from botocore.exceptions import BotoCoreError, ClientError

    base = f"{prefix}/" if prefix else ""
    out = {}
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=base):
            for obj in page.get("Contents", []):
                out[obj["Key"][len(base):]] = (obj["Size"], obj["ETag"].strip('"'))
    except (BotoCoreError, ClientError) as exc:
        raise StorageError(f"cannot list s3://{bucket}/{prefix}: {exc}") from None
    return out


def upload_dir(
    local: Path,
    uri: str,
    *,
    max_files: int | None = None,
    on_file: Callable[[str], None] | None = None,
) -> SyncReport:
    """Upload every file under `local` to `uri` (s3:// or a local folder), skipping identical ones.

    `max_files` stops after that many transfers (a deliberate interruption, for tests and for
    rate-limited links); the next call resumes with the rest.
    """
    local = Path(local)
    if not local.is_dir():
        raise StorageError("local folder does not exist", path=local)
    if not is_s3_uri(uri):
        return _copy_tree(local, Path(uri), max_files=max_files, on_file=on_file)
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3_uri(uri)
    client = _client()
    remote = _list_objects(client, bucket, prefix)
    report = SyncReport()
    for rel in _local_files(local):
        path = local / rel
        size = path.stat().st_size
        md5 = _md5(path)
        if remote.get(rel) == (size, md5):
            report.skipped.append(rel)
            continue
        if max_files is not None and len(report.transferred) >= max_files:
            log.info("upload stopped after %d files (limit)", max_files)
            break
        key = f"{prefix}/{rel}" if prefix else rel
        data = path.read_bytes()
        try:
            client.put_object(
                Bucket=bucket, Key=key, Body=data,
                ContentMD5=base64.b64encode(bytes.fromhex(md5)).decode(),
                ChecksumSHA256=base64.b64encode(hashlib.sha256(data).digest()).decode(),
            )
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"upload of {path} to s3://{bucket}/{key} failed: {exc}") from None
        report.transferred.append(rel)
        report.bytes += size
        if on_file:
            on_file(rel)
    log.info("upload %s -> %s: %d sent, %d already there",
             local, uri, len(report.transferred), len(report.skipped))
    return report


def download_dir(
    uri: str,
    local: Path,
    *,
    max_files: int | None = None,
    on_file: Callable[[str], None] | None = None,
    mirror: bool = False,
) -> SyncReport:
    """Download every object under `uri` into `local`, skipping files already identical.

    Each object is written to a temp file, its MD5 checked against the ETag, then renamed into
    place, so an interruption never leaves a partial file that looks complete. `mirror` also
    deletes local files that are not in the bucket (for caches of a changing prefix).
    """
    local = Path(local)
    if not is_s3_uri(uri):
        return _copy_tree(Path(uri), local, max_files=max_files, on_file=on_file)
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3_uri(uri)
    client = _client()
    remote = _list_objects(client, bucket, prefix)
    if not remote:
        raise StorageError(f"nothing under {uri}", fix="check the bucket and prefix (`aws s3 ls`)")
    report = SyncReport()
    for rel in sorted(remote, key=lambda r: (r == MANIFEST_NAME, r)):
        size, etag = remote[rel]
        if ".." in Path(rel).parts or rel.startswith("/"):
            raise StorageError(f"refusing object key outside the prefix: {rel!r}")
        path = local / rel
        if path.is_file() and path.stat().st_size == size and _md5(path) == etag:
            report.skipped.append(rel)
            continue
        if max_files is not None and len(report.transferred) >= max_files:
            break
        key = f"{prefix}/{rel}" if prefix else rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                body = client.get_object(Bucket=bucket, Key=key)["Body"]
                while chunk := body.read(1 << 20):
                    f.write(chunk)
            if "-" not in etag and _md5(Path(tmp)) != etag:  # multipart ETags are not MD5s
                raise StorageError(f"download of s3://{bucket}/{key} is corrupt (MD5 != ETag)",
                                   fix="run the pull again")
            os.replace(tmp, path)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"download of s3://{bucket}/{key} failed: {exc}") from None
        finally:
            Path(tmp).unlink(missing_ok=True)
        report.transferred.append(rel)
        report.bytes += size
        if on_file:
            on_file(rel)
    if mirror and (max_files is None or len(report.transferred) < max_files):
        for rel in _local_files(local):
            if rel not in remote:
                (local / rel).unlink()
                report.deleted.append(rel)
    log.info("download %s -> %s: %d fetched, %d already there",
             uri, local, len(report.transferred), len(report.skipped))
    return report


def _copy_tree(
    src: Path, dst: Path, *, max_files: int | None, on_file: Callable[[str], None] | None
) -> SyncReport:
    """Local-to-local sync with the same skip/resume rules (size + MD5)."""
    if not src.is_dir():
        raise StorageError("source folder does not exist", path=src)
    report = SyncReport()
    for rel in _local_files(src):
        s, d = src / rel, dst / rel
        if d.is_file() and d.stat().st_size == s.stat().st_size and _md5(d) == _md5(s):
            report.skipped.append(rel)
            continue
        if max_files is not None and len(report.transferred) >= max_files:
            break
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp = d.with_name(f".{d.name}.part")
        shutil.copyfile(s, tmp)
        os.replace(tmp, d)
        report.transferred.append(rel)
        report.bytes += s.stat().st_size
        if on_file:
            on_file(rel)
    return report


def cache_dir_for(uri: str, cache_root: Path | None = None) -> Path:
    """Where an s3:// dataset is mirrored locally: ``<cache_root>/s3/<bucket>/<prefix>``."""
    bucket, prefix = split_s3_uri(uri)
    root = Path(cache_root) if cache_root is not None else Path("datasets") / ".cache"
    return root / "s3" / bucket / prefix


def find_datasets(where: str | Path) -> list[tuple[str, dict]]:
    """(location, manifest) of every dataset directly under a local root or an s3:// prefix
    (the location itself counts when it is a dataset)."""
    import json

    found = []
    if not is_s3_uri(where):
        root = Path(where)
        candidates = []
        if root.is_dir():
            candidates = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
        for folder in candidates:
            path = folder / MANIFEST_NAME
            if path.is_file() and not folder.name.startswith("."):
                try:
                    found.append((str(folder), json.loads(path.read_text())))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    found.append((str(folder), {}))
        return found
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3_uri(str(where))
    client = _client()
    for rel in sorted(_list_objects(client, bucket, prefix)):
        if rel.count("/") <= 1 and rel.rsplit("/", 1)[-1] == MANIFEST_NAME:
            key = f"{prefix}/{rel}" if prefix else rel
            try:
                body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
                manifest = json.loads(body)
            except (BotoCoreError, ClientError, json.JSONDecodeError) as exc:
                raise StorageError(f"cannot read s3://{bucket}/{key}: {exc}") from None
            found.append((f"s3://{bucket}/{key.rsplit('/', 1)[0]}" if "/" in key
                          else f"s3://{bucket}", manifest))
    return found


def list_prefixes(uri: str) -> list[str]:
    """Names of the immediate "folders" under an s3:// prefix (e.g. the run ids of a runs
    prefix), sorted."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3_uri(uri)
    base = f"{prefix}/" if prefix else ""
    names: set[str] = set()
    try:
        pages = _client().get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=base, Delimiter="/")
        for page in pages:
            for entry in page.get("CommonPrefixes", []):
                names.add(entry["Prefix"][len(base):].rstrip("/"))
    except (BotoCoreError, ClientError) as exc:
        raise StorageError(f"cannot list {uri}: {exc}",
                           fix="check the bucket name and your AWS credentials") from None
    return sorted(names)
