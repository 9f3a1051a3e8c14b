"""Eval suites: versioned, fixed lists of (scenario, seed, hazard plan, radio level).

A suite file (``roadsense/data/eval_suites/<name>.json``, package data) names the dataset it
was drawn for by name and manifest hash; `EvalSuite.open` refuses to run when the dataset's hash
differs, so an episode id always means the same episode. Files are written by
``scenario_factory/make_suites.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from roadsense.errors import EvalSuiteError

SUITES_DIR = Path(__file__).with_name("eval_suites")
"""The built-in suites: package data next to this module (installed with the package)."""
_HAZARD_KEYS = {"rank", "onset_s", "decel_mps2", "duration_s", "to_stop"}


@dataclass(frozen=True)
class EvalEpisode:
    """One evaluation episode: ``reset(seed=seed, options={...})`` of ConvoyEnv."""

    scenario_id: str
    seed: int
    hazard: dict | None
    radio: dict

    def reset_options(self) -> dict:
        """The ``options`` dict for ``ConvoyEnv.reset``."""
        return {"scenario_id": self.scenario_id, "hazard": self.hazard, "radio": dict(self.radio)}


@dataclass(frozen=True)
class SuiteDataset:
    """The dataset a suite refers to."""

    name: str
    manifest_hash: str


@dataclass(frozen=True)
class EvalSuite:
    """A loaded suite file."""

    name: str
    version: str
    dataset: SuiteDataset
    episodes: list[EvalEpisode]
    path: Path
    description: str = ""

    def open(self, root: Path = Path("datasets")):
        """The suite's dataset as a ScenarioManager, generated on first use if built in.

        Raises EvalSuiteError naming this suite file and both hashes when the dataset is not
        the one the suite was drawn for, or when an episode names a missing scenario.
        """
        from roadsense.data.default import ensure_dataset
        from roadsense.data.manager import ScenarioManager

        # The manifest hash pins the dataset; validation suites are drawn on the training one.
        mgr = ScenarioManager.from_dataset(ensure_dataset(self.dataset.name, root), split="any")
        if mgr.manifest_hash != self.dataset.manifest_hash:
            raise EvalSuiteError(
                f"suite {self.name} v{self.version} was drawn for dataset {self.dataset.name} "
                f"with manifest hash {self.dataset.manifest_hash}, but {mgr.root} has "
                f"{mgr.manifest_hash}; refusing to run",
                path=self.path,
                fix=f"`roadsense scenarios regenerate {self.name}` rebuilds the recorded dataset",
            )
        missing = sorted({e.scenario_id for e in self.episodes} - set(mgr.ids))
        if missing:
            raise EvalSuiteError(f"episodes name scenarios not in the dataset: {missing[:5]}",
                                 path=self.path)
        return mgr

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"


def suite_path(name_or_path: str | Path) -> Path:
    """``smoke`` -> ``eval_suites/smoke.json``; a path is taken as it is."""
    p = Path(name_or_path)
    if p.suffix == ".json" or p.is_file():
        return p
    return SUITES_DIR / f"{name_or_path}.json"


def available_suites() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.json"))


def load_suite(name_or_path: str | Path) -> EvalSuite:
    """Load and validate a suite file; EvalSuiteError naming the file and field at fault."""
    path = suite_path(name_or_path)
    if not path.is_file():
        raise EvalSuiteError(f"no eval suite {name_or_path!r}", path=path,
                             fix=f"use one of {available_suites()} or a path to a suite file")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EvalSuiteError(f"not valid JSON ({exc})", path=path) from None
    for key in ("name", "version", "dataset", "episodes"):
        if key not in data:
            raise EvalSuiteError(f"field '{key}' is missing", path=path)
    ds = data["dataset"]
    if not isinstance(ds, dict) or not ds.get("name") or not ds.get("manifest_hash"):
        raise EvalSuiteError("field 'dataset' needs 'name' and 'manifest_hash'", path=path)
    episodes = [_episode(path, i, e) for i, e in enumerate(data["episodes"])]
    if not episodes:
        raise EvalSuiteError("suite has no episodes", path=path)
    return EvalSuite(
        name=str(data["name"]), version=str(data["version"]),
        dataset=SuiteDataset(ds["name"], ds["manifest_hash"]), episodes=episodes, path=path,
        description=data.get("description", ""),
    )


def _episode(path: Path, i: int, e: dict) -> EvalEpisode:
    where = f"episodes[{i}]"
    try:
        sid, seed = str(e["scenario_id"]), int(e["seed"])
    except (KeyError, TypeError, ValueError):
        raise EvalSuiteError(
            f"{where} needs 'scenario_id' and an integer 'seed'", path=path
        ) from None
    hazard = e.get("hazard")
    if hazard is not None:
        if not isinstance(hazard, dict) or set(hazard) != _HAZARD_KEYS:
            raise EvalSuiteError(f"{where}.hazard must have exactly {sorted(_HAZARD_KEYS)}",
                                 path=path)
        if int(hazard["rank"]) < 1 or not 2.5 <= float(hazard["decel_mps2"]) <= 9.0:
            raise EvalSuiteError(f"{where}.hazard: rank >= 1 and decel_mps2 in 2.5..9 required",
                                 path=path)
    radio = e.get("radio", {})
    if not isinstance(radio, dict) or set(radio) - {"loss_rate"}:
        raise EvalSuiteError(f"{where}.radio must be {{}} or {{'loss_rate': float}}", path=path)
    return EvalEpisode(scenario_id=sid, seed=seed, hazard=hazard, radio=radio)
