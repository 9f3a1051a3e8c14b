#!/usr/bin/env bash
# The one install step, shared by the Makefile (local and CI) and docker/Dockerfile.
#   scripts/install.sh [--dev] [--venv DIR] [--editable] [--deps-only] [--torch-index URL]
# Creates the virtual environment when it is missing and installs the project into it.
#   --deps-only        only the dependencies listed in pyproject.toml (docker/Dockerfile's cached
#                      layer: it needs pyproject.toml and this script, not the sources)
#   --torch-index URL  install the pinned torch from this index first, e.g.
#                      https://download.pytorch.org/whl/cpu: PyPI's Linux wheel of torch brings
#                      its CUDA libraries (GBs) unless a pip configuration says otherwise.
set -euo pipefail

venv=.venv
extras=""
editable=""
deps_only=""
torch_index=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) extras="[dev]" ;;
    --venv) venv="$2"; shift ;;
    --editable) editable="-e" ;;
    --deps-only) deps_only=1 ;;
    --torch-index) torch_index="$2"; shift ;;
    *) echo "install.sh: unknown option $1 (use --dev, --venv DIR, --editable, --deps-only," \
         "--torch-index URL)" >&2; exit 2 ;;
  esac
  shift
done

here="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
requirements() {  # pyproject.toml's dependencies (and extras), one per line
  "$venv/bin/python" - "$here/pyproject.toml" "$@" <<'PY'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
names = project["dependencies"] + [d for e in sys.argv[2:] for d in project["optional-dependencies"][e]]
print("\n".join(names))
PY
}
if [ -n "$torch_index" ]; then
  "$venv/bin/python" -m pip install --quiet --index-url "$torch_index" \
    "$(requirements | grep -E '^torch[=<>~ ]')"
fi
if [ -n "$deps_only" ]; then
  mapfile -t deps < <(requirements ${extras:+dev})
  "$venv/bin/python" -m pip install --quiet "${deps[@]}"
  exit 0
fi
"$venv/bin/python" -m pip install --quiet $editable "$here$extras"
# Fail now, not in the first episode, if SUMO's real binary or libsumo's extension is missing.
"$venv/bin/python" -c "from roadsense.sim.binary import check_installation; check_installation()"
