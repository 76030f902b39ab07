#!/usr/bin/env bash
# The GPU check in one command (issue 27, item 6): bench/device_check.py from the repo root, its arguments passed on
# (--help lists them); PYTHON picks the interpreter (default python3). Without CUDA it runs every stage on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" bench/device_check.py "$@"
