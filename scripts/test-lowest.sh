#!/usr/bin/env bash
# The whole test suite with the lowest versions pyproject.toml allows
# (requirements/lowest.txt, in .venv-lowest). No lint or type check: those run
# with the locked tools in scripts/test.sh. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/services.sh
DEPS=lowest ./scripts/setup.sh
.venv-lowest/bin/python -m pytest "$@"
