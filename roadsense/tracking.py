"""`RunTracker`: a training run's metrics as TensorBoard event files, and optionally in MLflow.

`roadsense.rllib.training.train` calls it at four points: every iteration (each field of
`IterationReport`, i.e. the live table and progress.jsonl), every validation, the final
evaluation, and the end of the run. The x-axis of every scalar is the run's env steps, so
runs with different batch sizes line up (CleanRL's `global_step`).

TensorBoard: event files under `<run folder>/tensorboard/` (tensorboardX, which Ray Tune
already needs), flushed after every call, so `tensorboard --logdir runs` shows a run while it
trains and a synced S3 run folder carries them too. Scalar names:

| name                                   | what                                           |
|----------------------------------------|------------------------------------------------|
| `train/<field>`                        | an `IterationReport` field (return_mean, lr, ...)|
| `convoy/collision_rate`, `.../false_brake_rate` | training episodes' rates, as in the table |
| `reward_weights/<term>`                | scheduled reward weights                       |
| `validation/<suite>/<metric>`          | collision_rate, false_brake_rate, score, seconds |
| `final_eval/<policy>/<metric>`         | the final evaluation's summary per policy      |

Characters other than letters, digits and `_-./` become `_` (`trained:iter_000010` ->
`trained_iter_000010`), in both TensorBoard and MLflow.

MLflow (`mlflow_uri`: a tracking server URL, or a local `file:` store, which mlflow 3 opens
only with MLFLOW_ALLOW_FILE_STORE=true): one MLflow run per training
run, named after the run id, in experiment `roadsense`; the settings as params, the same
metrics, and at the end the run manifest, the learning curve and the selected checkpoint's
`policy.pt` as artifacts. A resumed run logs into the MLflow run it started (its id is kept
in the run manifest). mlflow is imported only when a URI is given (`pip install
'roadsense[mlflow]'`).
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TB_DIR = "tensorboard"
"""Folder of the event files inside a run folder."""
MLFLOW_EXPERIMENT = "roadsense"
_PARAM_CHARS = 500
"""MLflow's limit on a param value's length (longer values are cut)."""
_BAD_NAME = re.compile(r"[^A-Za-z0-9_\-./]")
"""Characters that become "_" in metric names (a policy name holds a colon): TensorBoard and
MLflow refuse them, and both get the same name."""


def metric_name(name: str) -> str:
    """`name` as both TensorBoard and MLflow show it."""
    return _BAD_NAME.sub("_", name)


def require_mlflow(uri: str) -> None:
    """Fail early, with the fix, when `--mlflow-uri` is given but mlflow is not installed or
    refuses a local store (checked here; a server URL is first contacted by the run)."""
    from roadsense.errors import ConfigError

    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise ConfigError(f"--mlflow-uri {uri} needs the mlflow package",
                          fix="pip install 'roadsense[mlflow]' (or drop --mlflow-uri)") from exc
    if uri.startswith(("http://", "https://", "databricks")):
        return
    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:  # mlflow raises its own exception types, with long messages
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else repr(exc)
        raise ConfigError(f"--mlflow-uri {uri} is not usable: {first}",
                          fix="use a tracking server URL; for a local file store set "
                              "MLFLOW_ALLOW_FILE_STORE=true") from exc


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, f"{key}/"))
        else:
            out[key] = v
    return out


def _number(v: Any) -> float | None:
    """`v` as a finite float, or None (None, strings, NaN are not plotted)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


class RunTracker:
    """Writes one training run's metrics to TensorBoard (always) and MLflow (when asked).

    Args:
        run_dir: The run's local folder (the S3 mirror for an s3:// storage).
        manifest: The run manifest; the MLflow run id is recorded in it (`tracking`).
        params: The run's settings, logged as MLflow params.
        mlflow_uri: MLflow tracking URI, or None for TensorBoard only.
    """

    def __init__(self, run_dir: Path, manifest: dict[str, Any], params: dict[str, Any],
                 mlflow_uri: str | None = None) -> None:
        from tensorboardX import SummaryWriter

        self.run_dir = Path(run_dir)
        self.step = 0
        self._writer = SummaryWriter(str(self.run_dir / TB_DIR), flush_secs=30)
        self._mlflow: Any = None
        self._mlflow_run: str | None = None
        if mlflow_uri:
            self._start_mlflow(mlflow_uri, manifest, params)

    def _start_mlflow(self, uri: str, manifest: dict[str, Any], params: dict[str, Any]) -> None:
        require_mlflow(uri)
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        record = manifest.setdefault("tracking", {})
        if record.get("mlflow_uri") == uri and record.get("mlflow_run_id"):  # a resumed run
            self._mlflow_run = record["mlflow_run_id"]
            client.update_run(self._mlflow_run, status="RUNNING")
        else:
            exp = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
            exp_id = exp.experiment_id if exp else client.create_experiment(MLFLOW_EXPERIMENT)
            run = client.create_run(exp_id, run_name=manifest["run_id"], tags={
                "roadsense.run_id": manifest["run_id"], "roadsense.kind": manifest["kind"],
                "roadsense.git_commit": str(manifest.get("git_commit"))})
            self._mlflow_run = run.info.run_id
            flat = _flatten(params)
            client.log_batch(self._mlflow_run, params=[
                Param(k, json.dumps(v)[:_PARAM_CHARS]) for k, v in sorted(flat.items())])
            record.update(mlflow_uri=uri, mlflow_run_id=self._mlflow_run)
        self._mlflow = client

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        """Numeric entries of `metrics` (nested dicts give `a/b` names) at `step` (default:
        the last iteration's env steps); others are skipped."""
        step = self.step if step is None else int(step)
        values = {metric_name(k): n for k, v in _flatten(metrics).items()
                  if (n := _number(v)) is not None}
        for name, value in values.items():
            self._writer.add_scalar(name, value, step)
        self._writer.flush()
        if self._mlflow is not None and values:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self._mlflow.log_batch(self._mlflow_run, metrics=[
                Metric(k, v, now, step) for k, v in values.items()])

    def iteration(self, report: dict[str, Any]) -> None:
        """One `IterationReport` (as a dict): every field, at its env steps."""
        self.step = int(report.get("env_steps") or self.step)
        named = {("convoy/" if k in ("collision_rate", "false_brake_rate") else "train/") + k: v
                 for k, v in report.items() if k != "reward_weights"}
        self.log({**named, "reward_weights": report.get("reward_weights") or {}})

    def validation(self, entry: dict[str, Any]) -> None:
        """One validation entry of the manifest (at the env steps of its checkpoint)."""
        keys = ("collision_rate", "false_brake_rate", "score", "seconds")
        self.log({f"validation/{entry['suite']}": {k: entry.get(k) for k in keys}})

    def final_eval(self, summary: dict[str, dict[str, Any]]) -> None:
        """The final evaluation's summary (policy -> metrics)."""
        self.log({"final_eval": summary})

    def finish(self, manifest: dict[str, Any], policy: Path | None = None) -> None:
        """Close the event files; in MLflow, attach the manifest, the learning curve and
        `policy` (the selected checkpoint's policy.pt) and mark the run finished."""
        self._writer.close()
        if self._mlflow is None:
            return
        client, run = self._mlflow, self._mlflow_run
        for path, folder in ((self.run_dir / "run_manifest.json", None),
                             (self.run_dir / "learning_curve.png", None),
                             (policy, "policy")):
            if path is not None and path.is_file():
                client.log_artifact(run, str(path), folder)
        client.set_terminated(run, status="FINISHED" if manifest.get("status") == "finished"
                              else "FAILED")
