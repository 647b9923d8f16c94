#!/usr/bin/env bash
# Build the sdist and wheel, check them, install the wheel (with the locked
# versions) into a fresh virtual environment outside the checkout, and run the
# installed product there: scripts/check_installed.py says what it checks.
# Needs Redis on 127.0.0.1:6379 and PostgreSQL: the database URL given as the
# only argument, else a new database on 127.0.0.1:5432 (trust) that is dropped after.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
python="${PYTHON:-python3}"
pg_host="${PGHOST:-127.0.0.1}"
tmp=$(mktemp -d)
db="taskiq_exporter_wheel_$$"
pg_url="${1:-}"
cleanup() {
  if [ -z "$pg_url" ]; then
    psql -q -h "$pg_host" -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp" "$root/build" "$root"/*.egg-info
}
trap cleanup EXIT

"$python" -m venv "$tmp/tools"
pip_install() {  # quiet, but for errors (this machine's pip.conf warns about every package)
  "$@" --quiet --disable-pip-version-check 2> >(grep -v "is ignored: it is neither" >&2)
}
pip_install "$tmp/tools/bin/pip" install -r requirements/check.txt
# sdist first, then the wheel built from the unpacked sdist (build's default).
"$tmp/tools/bin/python" -m build --no-isolation --outdir "$tmp/dist" . >"$tmp/build.log" 2>&1 \
  || { cat "$tmp/build.log"; exit 1; }
"$tmp/tools/bin/twine" check --strict "$tmp/dist"/*
wheel=$(ls "$tmp"/dist/*.whl)

"$python" -m venv "$tmp/venv"
pip_install "$tmp/venv/bin/pip" install -c requirements/runtime.txt "${wheel}[redis]"
"$tmp/venv/bin/pip" check

if [ -z "$pg_url" ]; then
  psql -q -h "$pg_host" -d postgres -c "CREATE DATABASE $db" >/dev/null
fi
mkdir "$tmp/work"
cd "$tmp/work"
"$tmp/venv/bin/python" "$root/scripts/check_installed.py" --checkout "$root" \
  --postgres-url "${pg_url:-postgresql+asyncpg://$(id -un)@$pg_host:5432/$db}"
