#!/usr/bin/env bash
# Set up and run the demo: the seed's ten task types, the embedded SQLite store,
# the service on 127.0.0.1:8000 (pass other `taskiq-exporter demo` flags through).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/taskiq-exporter demo "$@"
