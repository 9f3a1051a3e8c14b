"""ScenarioManager: the one place that selects scenarios, for training and for evaluation.

Training draws a scenario at random from the env's own generator (`pick`); evaluation walks a
fixed, versioned list by id (`get`). The manifest is verified once when the dataset is loaded
(fields, manifest hash, every file's sha256), never per episode.

>>> mgr = ScenarioManager.from_dataset("datasets/default-v1")          # doctest: +SKIP
>>> mgr.pick(np.random.default_rng(0)).sumocfg                         # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from roadsense.data.check import verify_hashes
from roadsense.data.index import index_params
from roadsense.data.manifest import INDEX_NAME
from roadsense.data.storage import cache_dir_for, download_dir, is_s3_uri
from roadsense.errors import DatasetError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scenario:
    """One scenario: its sumocfg and what the generator drew for it."""

    id: str
    sumocfg: Path
    peer_count: int
    family: str
    params: dict = field(default_factory=dict, compare=False, hash=False)


class ScenarioManager:
    """An ordered, immutable set of scenarios (picklable: env runners each get a copy)."""

    def __init__(
        self,
        scenarios: list[Scenario],
        *,
        manifest: dict | None = None,
        root: Path | None = None,
    ) -> None:
        if not scenarios:
            raise DatasetError("a ScenarioManager needs at least one scenario", path=root)
        self._scenarios = sorted(scenarios, key=lambda s: s.id)
        self._by_id = {s.id: s for s in self._scenarios}
        if len(self._by_id) != len(self._scenarios):
            raise DatasetError("duplicate scenario ids", path=root)
        self._manifest = manifest
        self.root = root

    # ---- construction ----------------------------------------------------------------------

    @classmethod
    def from_dataset(
        cls,
        path_or_uri: str | Path,
        *,
        split: str = "train",
        cache_dir: Path | None = None,
    ) -> ScenarioManager:
        """Load and verify a dataset folder (or pull an ``s3://`` one into `cache_dir` first).

        `split` must match the manifest's (``"any"`` skips the test): training on an eval
        dataset is refused. Raises DatasetError listing every problem found.
        """
        if is_s3_uri(path_or_uri):
            uri = str(path_or_uri)
            local = cache_dir_for(uri, cache_dir)
            download_dir(uri, local, mirror=True)
        else:
            local = Path(path_or_uri)
        manifest, problems = verify_hashes(local)
        if manifest is not None and split != "any" and manifest.get("split") != split:
            problems.append(
                f"{local}: dataset split is {manifest.get('split')!r}, not {split!r} "
                "(evaluation data must never be trained on)"
            )
        if problems:
            raise DatasetError(
                f"dataset {local} failed verification:\n  " + "\n  ".join(problems),
                fix="regenerate or re-pull it; `roadsense scenarios check` shows the same list",
            )
        params = index_params(local / INDEX_NAME)
        scenarios = []
        for entry in manifest["scenarios"]:
            sid = entry["id"]
            scenarios.append(Scenario(
                id=sid,
                sumocfg=(local / entry["dir"] / f"{sid}.sumocfg").resolve(),
                peer_count=int(entry["peer_count"]),
                family=entry["family"],
                params=params.get(sid, {}),
            ))
        log.info("dataset %s: %d scenarios, manifest %s", manifest.get("dataset_id"),
                 len(scenarios), manifest["manifest_hash"][:12])
        return cls(scenarios, manifest=manifest, root=local.resolve())

    @classmethod
    def single(cls, sumocfg: str | Path) -> ScenarioManager:
        """One scenario without a manifest (tests, `roadsense sim run`)."""
        path = Path(sumocfg)
        if not path.is_file():
            raise DatasetError("scenario file not found", path=path, fix="pass a .sumocfg file")
        sid = path.name.removesuffix(".sumocfg")
        return cls([Scenario(id=sid, sumocfg=path.resolve(), peer_count=-1, family="custom")],
                   root=path.parent.resolve())

    # ---- selection -------------------------------------------------------------------------

    def pick(self, rng: np.random.Generator) -> Scenario:
        """Training: a uniform draw that uses `rng` and nothing else."""
        return self._scenarios[int(rng.integers(len(self._scenarios)))]

    def get(self, scenario_id: str) -> Scenario:
        """Evaluation: the scenario with this id; DatasetError naming the dataset otherwise."""
        try:
            return self._by_id[scenario_id]
        except KeyError:
            raise DatasetError(
                f"scenario {scenario_id!r} is not in this dataset ({len(self)} scenarios)",
                path=self.root, fix="use an id from `mgr.ids` or the dataset's index.parquet",
            ) from None

    def __len__(self) -> int:
        return len(self._scenarios)

    def __iter__(self):
        return iter(self._scenarios)

    def __contains__(self, scenario_id: object) -> bool:
        return scenario_id in self._by_id

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self._scenarios]

    @property
    def manifest(self) -> dict | None:
        return self._manifest

    @property
    def manifest_hash(self) -> str | None:
        return self._manifest["manifest_hash"] if self._manifest else None

    def __repr__(self) -> str:
        h = self.manifest_hash[:12] if self.manifest_hash else "no manifest"
        return f"ScenarioManager({len(self)} scenarios from {self.root}, {h})"
