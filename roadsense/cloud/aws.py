"""Small AWS helpers shared by the cloud modules: clients, S3 URIs, one-file JSON read/write.

boto3 is imported here (the cloud path's deliberate second boto3 importer, for non-S3 services
and single manifest files; datasets go through `roadsense.data.storage`). Clients use the
standard credential chain; botocore itself honours ``AWS_ENDPOINT_URL`` (moto in tests).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from roadsense.data.storage import is_s3_uri, split_s3_uri
from roadsense.errors import StorageError

log = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"


def region_name(region: str | None = None) -> str:
    """The region: the argument, else ``AWS_REGION``/``AWS_DEFAULT_REGION``, else us-east-1."""
    return (
        region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or DEFAULT_REGION
    )


def client(service: str, region: str | None = None) -> Any:
    """A boto3 client for `service` from the standard credential chain."""
    import boto3

    return boto3.client(service, region_name=region_name(region))


def aws_error(exc: Exception, what: str, *, fix: str | None = None) -> StorageError:
    """Turn a botocore error into one readable StorageError naming the operation."""
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
    message = getattr(exc, "response", {}).get("Error", {}).get("Message", str(exc))
    return StorageError(
        f"{what} failed: {code}: {message}",
        fix=fix or "check AWS credentials, region and AWS_ENDPOINT_URL",
    )


def join_uri(base: str | Path, name: str) -> str:
    """Append one path component to a local path or an s3:// URI."""
    if is_s3_uri(base):
        return str(base).rstrip("/") + "/" + name
    return str(Path(base) / name)


def read_json(uri: str | Path) -> dict:
    """Read one JSON object from a local file or an s3:// object."""
    if is_s3_uri(uri):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3_uri(str(uri))
        try:
            body = client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NoSuchBucket"):
                raise StorageError(
                    f"{uri}: not found", fix="check the run directory URI", path=str(uri)
                ) from None
            raise aws_error(exc, f"reading {uri}") from None
        except BotoCoreError as exc:
            raise aws_error(exc, f"reading {uri}") from None
        text = body.decode("utf-8")
    else:
        path = Path(uri)
        if not path.is_file():
            raise StorageError("file not found", fix="check the run directory path", path=path)
        text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise StorageError(f"not valid JSON ({exc})", path=str(uri)) from None
    if not isinstance(data, dict):
        raise StorageError("expected a JSON object", path=str(uri))
    return data


def write_json(uri: str | Path, data: dict) -> str:
    """Write one JSON object to a local file (atomic rename) or an s3:// object; returns the URI."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    if is_s3_uri(uri):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, key = split_s3_uri(str(uri))
        try:
            client("s3").put_object(Bucket=bucket, Key=key, Body=text.encode("utf-8"))
        except (BotoCoreError, ClientError) as exc:
            raise aws_error(exc, f"writing {uri}") from None
        return str(uri)
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return str(path)


def account_id(region: str | None = None) -> str:
    """The caller's AWS account id (STS GetCallerIdentity)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return str(client("sts", region).get_caller_identity()["Account"])
    except (BotoCoreError, ClientError) as exc:
        raise aws_error(exc, "sts:GetCallerIdentity") from None
