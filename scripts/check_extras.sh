#!/usr/bin/env bash
# Checks that every optional extra resolves on its own in a fresh venv (pip --dry-run; ~2 min, needs the registry).
# Not part of `make test` (too slow for the suite); run with `make check-extras`. Known: `drain` (drain3 pins
# cachetools==4.2.1) cannot be installed together with `mlflow` (cachetools>=5); see pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
trap 'rm -rf "$(dirname "$venv")"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
extras=$(python3 -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml","rb"))["project"]["optional-dependencies"]))')
failed=0
for e in $extras; do
  if "$venv/bin/pip" install --dry-run -q --disable-pip-version-check "torch==2.13.0" ".[$e]" >/dev/null 2>&1; then
    echo "ok      $e"
  else
    echo "FAILED  $e"; failed=1
  fi
done
exit $failed
