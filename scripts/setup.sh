#!/usr/bin/env bash
# Create .venv with exactly the locked versions (requirements/lock.txt: every
# runtime and development dependency, the ones CI and the image run) and the
# project itself, editable.
#
#   scripts/setup.sh                   # .venv from requirements/lock.txt
#   scripts/setup.sh --lowest          # .venv-lowest from requirements/lowest.txt:
#   DEPS=lowest scripts/setup.sh       #   the lowest versions pyproject.toml allows
#
# Idempotent and fast: a venv whose stamp (a hash of its requirements file and of
# pyproject.toml) is current is left alone. Packages the file does not list are
# removed, so the venv holds what the file says and nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
DEPS="${DEPS:-locked}"
for arg in "$@"; do
  case "$arg" in
    --lowest) DEPS=lowest ;;
    --locked) DEPS=locked ;;
    *) echo "usage: $0 [--locked | --lowest]" >&2; exit 2 ;;
  esac
done
case "$DEPS" in
  locked) VENV=.venv REQUIREMENTS=requirements/lock.txt ;;
  lowest) VENV=.venv-lowest REQUIREMENTS=requirements/lowest.txt ;;
  *) echo "DEPS must be 'locked' or 'lowest', not '$DEPS'" >&2; exit 2 ;;
esac

STAMP="$VENV/.requirements.sha256"
want="$(cat "$REQUIREMENTS" pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
rm -f "$STAMP"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
# Every package is pinned in the file, so nothing is resolved here: a dependency
# that pyproject.toml declares and the file lacks fails `pip check` below
# (regenerate the file, as its header says).
"${pip[@]}" install --quiet --no-deps -r "$REQUIREMENTS"
"${pip[@]}" install --quiet --no-deps -e .
# Remove what an earlier requirements file installed and this one does not list.
extra="$("$VENV/bin/python" - "$REQUIREMENTS" <<'EOF'
import re
import sys
from importlib.metadata import distributions

def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()

wanted = {"pip", "setuptools", "taskiq-exporter"}
for line in open(sys.argv[1]):
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==", line)
    if m:
        wanted.add(norm(m.group(1)))
names = {norm(d.metadata["Name"]) for d in distributions() if d.metadata["Name"]}
print(" ".join(sorted(names - wanted)))
EOF
)"
if [ -n "$extra" ]; then
  # shellcheck disable=SC2086  # a list of package names
  "${pip[@]}" uninstall --quiet --yes $extra
fi
"${pip[@]}" check
echo "$want" > "$STAMP"
