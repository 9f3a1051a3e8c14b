"""Built-in datasets: generated on first use from recorded settings, reused, repaired."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from roadsense.data import DEFAULT_TRAIN_DATASET, ScenarioManager, ensure_dataset
from roadsense.errors import DatasetError


@pytest.mark.slow
def test_default_training_dataset_is_made_once_and_covers_every_peer_count(tmp_path: Path):
    start = time.perf_counter()
    results: list[Path] = []
    # two concurrent first uses (as two env runners would) generate it once
    threads = [threading.Thread(target=lambda: results.append(ensure_dataset(root=tmp_path)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    assert results == [tmp_path / DEFAULT_TRAIN_DATASET] * 2
    assert elapsed < 60, f"built-in training set took {elapsed:.0f} s"
    mgr = ScenarioManager.from_dataset(results[0])
    hist = mgr.manifest["peer_count_histogram"]
    assert set(hist) == {str(k) for k in range(13)} and min(hist.values()) >= 10
    assert {s.family for s in mgr} == {"highway", "rural", "curved"}
    assert len(mgr) >= 100

    # reuse: a verified dataset is returned without touching its files
    manifest = (results[0] / "manifest.json").read_bytes()
    assert ensure_dataset(root=tmp_path) == results[0]
    assert (results[0] / "manifest.json").read_bytes() == manifest

    # repair: a damaged file is rewritten, and the dataset verifies again
    rou = next(results[0].glob("scenarios/*/*.rou.xml"))
    original = rou.read_bytes()
    rou.write_bytes(b"garbage")
    ensure_dataset(root=tmp_path)
    assert rou.read_bytes() == original
    assert ScenarioManager.from_dataset(results[0]).manifest_hash == mgr.manifest_hash


def test_unknown_dataset_name_lists_the_built_in_ones(tmp_path: Path):
    with pytest.raises(DatasetError, match="default-v1"):
        ensure_dataset("no-such-dataset", tmp_path)
