#!/usr/bin/env bash
# Container entry point of the RoadSense image.
#   train [ARGS...]  SageMaker starts training containers as `<image> train` (tuning jobs do):
#                    run the same `roadsense train` as everywhere else, reading the dataset
#                    channel and turning SageMaker's hyperparameters.json into `--KEY VALUE`
#                    arguments (`--KEY`/`--no-KEY` for true/false). Keys SageMaker adds for its
#                    own bookkeeping (`sagemaker_*`, and `_*` such as a tuning child's
#                    `_tuning_objective_metric`) are not ours and are left out.
#                    Checkpoints go to SageMaker's checkpoint directory (mirrored to the job's
#                    CheckpointConfig S3 URI), in a folder of the job's own name: a spot job
#                    restarted under the same name resumes its own run, and the children of a
#                    tuning job, which share one checkpoint URI, never resume each other's.
#                    When training ends, the policy the run picked (policy.pt), its run manifest
#                    and its evaluation report are copied to /opt/ml/model, which SageMaker
#                    uploads as the job's model.tar.gz. SIGTERM (a spot interruption, a stop)
#                    is passed on to training, which checkpoints on its way out.
#                    (Plain training jobs name `roadsense train ...` as ContainerEntrypoint.)
#   anything else    run as given (Ray's cluster launcher starts the container with `bash`).
set -euo pipefail

if [ "${1:-}" = "train" ]; then
  shift
  checkpoints="${RS_CHECKPOINT_DIR:-/opt/ml/checkpoints}"
  if [ -n "${TRAINING_JOB_NAME:-}" ]; then
    checkpoints="$checkpoints/$TRAINING_JOB_NAME"
  fi
  dataset="${SM_CHANNEL_DATASET:-/opt/ml/input/data/dataset}"
  hyperparameters="${SM_INPUT_CONFIG_DIR:-/opt/ml/input/config}/hyperparameters.json"
  extra=()
  if [ -s "$hyperparameters" ]; then
    mapfile -t extra < <(python -c '
import json, sys
for key, value in sorted(json.load(open(sys.argv[1])).items()):
    if key.startswith(("sagemaker_", "_")):  # SageMaker bookkeeping, not flags of ours
        continue
    text = str(value)
    if text.lower() in ("true", "false"):  # typer booleans are --KEY / --no-KEY
        print(("--" if text.lower() == "true" else "--no-") + key)
    else:
        print("--" + key); print(text)
' "$hyperparameters")
  fi
  mkdir -p "$checkpoints"
  roadsense train --resume --storage "$checkpoints" --dataset "$dataset" "${extra[@]}" "$@" &
  pid=$!
  trap 'kill -TERM "$pid" 2>/dev/null' TERM INT
  status=0
  wait "$pid" || status=$?
  if [ "$status" -ne 0 ]; then
    wait "$pid" 2>/dev/null || true  # after a trapped signal: until training has checkpointed
    exit "$status"
  fi
  python - "$checkpoints" "${SM_MODEL_DIR:-/opt/ml/model}" <<'PY'
import shutil, sys
from pathlib import Path
from roadsense import run_manifest
from roadsense.rllib.run_storage import latest_run
from roadsense.rllib.validation import selected_checkpoint
found = latest_run(sys.argv[1])
if found is None:
    sys.exit(f"entrypoint: no run with a checkpoint under {sys.argv[1]}: no model to export")
run = found[1]
checkpoint = selected_checkpoint(run, run_manifest.load(run))
model = Path(sys.argv[2])
model.mkdir(parents=True, exist_ok=True)
shutil.copy2(checkpoint / "policy.pt", model / "policy.pt")
shutil.copy2(run / "run_manifest.json", model / "run_manifest.json")
if (run / "eval").is_dir():
    shutil.copytree(run / "eval", model / "eval", dirs_exist_ok=True)
print(f"model: {checkpoint.name} of {run.name} -> {model}")
PY
  exit 0
fi
exec "$@"
