#!/usr/bin/env bash
# Set up everything and run the whole suite: lint, types, tests (PostgreSQL,
# Redis and a real Prometheus included).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/services.sh
./scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
