#!/usr/bin/env bash
# Set up and run the demo: the seed's ten task types, the embedded SQLite store,
# the service on 127.0.0.1:8000 (pass other `taskiq-exporter demo` flags through).
# Installs the package alone, not the development tools (scripts/setup.sh does those).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if [ -f requirements/lock.txt ]; then
  .venv/bin/python -m pip install --quiet -c requirements/lock.txt -e .
else
  .venv/bin/python -m pip install --quiet -e .
fi
exec .venv/bin/taskiq-exporter demo "$@"
