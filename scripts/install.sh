#!/usr/bin/env bash
# The one install step, shared by the Makefile (local and CI) and docker/Dockerfile.
#   scripts/install.sh [--dev] [--venv DIR] [--editable]
# Creates the virtual environment when it is missing and installs the project into it.
# torch is pinned to 2.13.0 in pyproject.toml, so pip takes the CPU wheel (never a CUDA build).
set -euo pipefail

venv=.venv
extras=""
editable=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) extras="[dev]" ;;
    --venv) venv="$2"; shift ;;
    --editable) editable="-e" ;;
    *) echo "install.sh: unknown option $1 (use --dev, --venv DIR, --editable)" >&2; exit 2 ;;
  esac
  shift
done

here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet $editable "$here$extras"
# Fail now, not in the first episode, if SUMO's real binary or libsumo's extension is missing.
"$venv/bin/python" -c "from roadsense.sim.binary import check_installation; check_installation()"
