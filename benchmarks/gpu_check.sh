#!/usr/bin/env bash
# Every stage on one GPU in about 6 minutes; one JSON file of results (benchmarks/gpu_check.py says what runs).
#
#   bash benchmarks/gpu_check.sh                  # GPU: writes docs/results/gpu.json ($OUT/gpu.json if OUT is set)
#   DEVICE=cpu bash benchmarks/gpu_check.sh       # dry run on the CPU at toy sizes
#
# PY: the Python to use (default: the first of .venv/bin/python, python3, python that imports torch).
# Exit 0: every job passed; 1: some failed or ran out of time (the JSON has their errors); 2: the environment
# lacks something (printed first).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then  # the first Python that has torch (else python3, whose check says what is missing)
  PY=python3
  for candidate in .venv/bin/python python3 python; do
    if command -v "$candidate" > /dev/null && "$candidate" -c "import torch" 2> /dev/null; then
      PY=$candidate
      break
    fi
  done
fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" benchmarks/gpu_check.py "$@"
