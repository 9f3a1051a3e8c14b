#!/usr/bin/env bash
# Container entry point of the RoadSense image.
#   train [ARGS...]  SageMaker starts training containers as `<image> train` (tuning jobs do):
#                    run the same `roadsense train` as everywhere else, resuming from SageMaker's
#                    checkpoint directory (mirrored to the job's CheckpointConfig S3 URI, so a spot
#                    interruption resumes from the last checkpoint), reading the dataset channel,
#                    and turning SageMaker's hyperparameters.json into `--KEY VALUE` arguments.
#                    (Plain training jobs name `roadsense train ...` as ContainerEntrypoint.)
#   anything else    run as given (Ray's cluster launcher starts the container with `bash`).
set -euo pipefail

if [ "${1:-}" = "train" ]; then
  shift
  checkpoints="${RS_CHECKPOINT_DIR:-/opt/ml/checkpoints}"
  dataset="${SM_CHANNEL_DATASET:-/opt/ml/input/data/dataset}"
  hyperparameters="${SM_INPUT_CONFIG_DIR:-/opt/ml/input/config}/hyperparameters.json"
  extra=()
  if [ -s "$hyperparameters" ]; then
    mapfile -t extra < <(python -c '
import json, sys
for key, value in sorted(json.load(open(sys.argv[1])).items()):
    if not key.startswith("sagemaker_"):  # SageMaker adds its own bookkeeping keys
        print("--" + key); print(value)
' "$hyperparameters")
  fi
  mkdir -p "$checkpoints"
  exec roadsense train --resume --storage "$checkpoints" --dataset "$dataset" "${extra[@]}" "$@"
fi
exec "$@"
