#!/usr/bin/env bash
# GPU acceptance check for one CUDA machine, with or without network; under 8 minutes on one H200:
#   bash bench/gpu_check.sh [--out DIR] [--plan]      (figures into DIR, else $OUT, else /tmp/gpu-check-out)
# Wheels brought along in .whl/ (optional) are installed first into /tmp/site, where they shadow the
# machine's own packages; without them the machine's own environment is used. The steps, their time
# limits and the JSON they write: bench/gpu_check.py (`--plan` lists them without running anything).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
shopt -s nullglob
wheels=(.whl/*.whl)
if ((${#wheels[@]})); then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${wheels[@]}"
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
exec python3 bench/gpu_check.py "$@"
