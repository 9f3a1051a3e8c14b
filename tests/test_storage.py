"""S3 storage against a real S3 endpoint (moto's server on 127.0.0.1, from conftest):
push/pull round trip, skip identical, interrupted upload resumes, tampered object caught."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest
from conftest import roadsense_cli

from roadsense.data import ScenarioManager
from roadsense.data.storage import (
    download_dir,
    find_datasets,
    is_s3_uri,
    split_s3_uri,
    upload_dir,
)
from roadsense.errors import DatasetError, StorageError
from scenario_factory import GeneratorSettings, generate_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("s3") / "s3-test"
    generate_dataset(GeneratorSettings(dataset_id="s3-test", seed=2, count=4), out,
                     validate=False)
    return out


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_uri_parsing():
    assert is_s3_uri("s3://b/p") and not is_s3_uri("datasets/x") and not is_s3_uri(Path("s3:"))
    assert split_s3_uri("s3://bucket/a/b/") == ("bucket", "a/b")
    with pytest.raises(StorageError):
        split_s3_uri("s3:///x")


def test_push_pull_round_trip_and_skip_identical(dataset: Path, s3_bucket: str, tmp_path: Path):
    uri = f"s3://{s3_bucket}/datasets/s3-test"
    first = upload_dir(dataset, uri)
    n = len(_files(dataset))
    assert len(first.transferred) == n and first.skipped == []
    assert first.transferred[-1] == "manifest.json"  # last: a prefix with a manifest is complete
    again = upload_dir(dataset, uri)
    assert again.transferred == [] and len(again.skipped) == n

    local = tmp_path / "pulled"
    down = download_dir(uri, local)
    assert len(down.transferred) == n
    assert _files(local) == _files(dataset)
    assert download_dir(uri, local).transferred == []

    # a locally damaged file is fetched again, and only that one
    victim = next(local.glob("scenarios/*/*.rou.xml"))
    victim.write_text("damaged")
    fixed = download_dir(uri, local)
    assert fixed.transferred == [victim.relative_to(local).as_posix()]
    assert _files(local) == _files(dataset)

    assert [m["dataset_id"] for _, m in find_datasets(f"s3://{s3_bucket}/datasets")] == ["s3-test"]


def test_interrupted_upload_resumes_with_the_rest(dataset: Path, s3_bucket: str):
    uri = f"s3://{s3_bucket}/resume"
    sent: list[str] = []
    part = upload_dir(dataset, uri, max_files=5, on_file=sent.append)
    assert part.transferred == sent and len(sent) == 5
    client = boto3.client("s3")
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert "resume/manifest.json" not in keys  # incomplete upload does not look complete
    rest = upload_dir(dataset, uri)
    assert sorted(rest.skipped) == sorted(sent)
    assert set(rest.transferred) | set(sent) == set(_files(dataset))
    assert not set(rest.transferred) & set(sent)


def test_checkpoint_marker_goes_up_after_the_files_it_vouches_for(s3_bucket: str,
                                                                  tmp_path: Path):
    """A run killed mid-sync must not leave a checkpoint whose DONE is there but not its
    files (resume would pick it and fail)."""
    ckpt = tmp_path / "run" / "checkpoints" / "iter_000003"
    (ckpt / "learner_group").mkdir(parents=True)
    (ckpt / "DONE").write_text("3")
    (ckpt / "learner_group" / "module_state.pkl").write_bytes(b"weights")
    (ckpt / "policy.pt").write_bytes(b"policy")
    uri = f"s3://{s3_bucket}/marker"
    sent: list[str] = []
    upload_dir(tmp_path / "run", uri, max_files=2, on_file=sent.append)
    assert len(sent) == 2 and not any(r.endswith("/DONE") for r in sent)
    rest = upload_dir(tmp_path / "run", uri)
    assert rest.transferred == ["checkpoints/iter_000003/DONE"]


def test_tampered_s3_object_is_caught_by_check_and_by_the_manager(
    dataset: Path, s3_bucket: str, tmp_path: Path
):
    uri = f"s3://{s3_bucket}/tamper"
    upload_dir(dataset, uri)
    proc = roadsense_cli("scenarios", "check", uri, "--cache-dir", str(tmp_path / "c0"))
    assert proc.returncode == 0, proc.stderr

    client = boto3.client("s3")
    key = next(o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket, Prefix="tamper/")
               ["Contents"] if o["Key"].endswith(".net.xml"))
    body = client.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    client.put_object(Bucket=s3_bucket, Key=key, Body=body.replace(b"<net ", b"<net  ", 1))

    proc = roadsense_cli("scenarios", "check", uri, "--cache-dir", str(tmp_path / "c1"))
    assert proc.returncode == 1
    assert "sha256 does not match the manifest" in proc.stderr
    assert Path(key).name in proc.stderr
    with pytest.raises(DatasetError, match="sha256 does not match"):
        ScenarioManager.from_dataset(uri, cache_dir=tmp_path / "c2")


def test_cli_push_pull_and_ls(dataset: Path, s3_bucket: str, tmp_path: Path):
    uri = f"s3://{s3_bucket}/cli/s3-test"
    proc = roadsense_cli("scenarios", "push", str(dataset), uri)
    assert proc.returncode == 0, proc.stderr
    assert f"{len(_files(dataset))} uploaded" in proc.stdout
    proc = roadsense_cli("scenarios", "pull", uri, str(tmp_path / "p"))
    assert proc.returncode == 0, proc.stderr
    assert _files(tmp_path / "p") == _files(dataset)
    proc = roadsense_cli("scenarios", "ls", f"s3://{s3_bucket}/cli")
    assert proc.returncode == 0, proc.stderr
    assert "s3-test" in proc.stdout


def test_missing_prefix_is_a_clear_error(s3_bucket: str, tmp_path: Path):
    with pytest.raises(StorageError, match="nothing under"):
        download_dir(f"s3://{s3_bucket}/nothing-here", tmp_path)


def test_local_destination_uses_the_same_rules(dataset: Path, tmp_path: Path):
    first = upload_dir(dataset, str(tmp_path / "copy"), max_files=3)
    assert len(first.transferred) == 3
    rest = upload_dir(dataset, str(tmp_path / "copy"))
    assert len(rest.skipped) == 3
    assert _files(tmp_path / "copy") == _files(dataset)


def test_cache_mirror_drops_files_the_bucket_no_longer_has(
    dataset: Path, s3_bucket: str, tmp_path: Path
):
    uri = f"s3://{s3_bucket}/mirror"
    upload_dir(dataset, uri)
    cache = tmp_path / "cache"
    download_dir(uri, cache, mirror=True)
    stale = cache / "scenarios" / "old" / "old.sumocfg"
    stale.parent.mkdir(parents=True)
    stale.write_text("<configuration/>")
    report = download_dir(uri, cache, mirror=True)
    assert report.deleted == ["scenarios/old/old.sumocfg"] and not stale.exists()
    assert _files(cache) == _files(dataset)


def test_generate_straight_to_s3_then_check_it(s3_bucket: str, tmp_path: Path):
    uri = f"s3://{s3_bucket}/gen/g1"
    proc = roadsense_cli("scenarios", "generate", "--id", "g1", "--count", "2", "--seed", "4",
                         "--out", uri)
    assert proc.returncode == 0, proc.stderr
    assert "uploaded" in proc.stdout
    proc = roadsense_cli("scenarios", "check", uri, "--cache-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
