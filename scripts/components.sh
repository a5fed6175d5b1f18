#!/usr/bin/env bash
# Installs the real components the test suite starts on 127.0.0.1 (idempotent, fast when already installed).
# Called by `make test`. Each component has its own function; a component that cannot be installed here (no root,
# no registry) is skipped with a message: its tests then skip, except under CI=true where they fail.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
STATE=$VENV/.components
mkdir -p "$STATE"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"; else return 1; fi; }

apt_install() {  # apt_install PKG... : installs missing Debian packages
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ ! -f "$STATE/apt-updated" ]; then as_root apt-get update -qq >/dev/null 2>&1 && touch "$STATE/apt-updated"; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1
}

# --- components (each helper section below adds its own) ---

for fn in $(declare -F | awk '{print $3}' | grep '^component_'); do
  "$fn" || echo "components: $fn could not be installed here (its tests will skip; under CI they fail)" >&2
done
exit 0
